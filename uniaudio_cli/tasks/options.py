"""Options of the tasks and their demonstration layouts, importable without torch.

The CLI checks every argument against these before it loads a model, so this module (like
:mod:`uniaudio_cli.tasks.demos`) imports nothing heavy.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from uniaudio_cli.errors import UsageError
from uniaudio_cli.prompts import prompts_dir

Method = Literal["fused", "prototype", "icl"]
METHODS: tuple[str, ...] = ("fused", "prototype", "icl")
Mode = Literal["default", "paper"]
Layers = Literal["semantic", "all"]


# Fitted (log-loss) on development episodes of the four sets with the default codec's codes
# (bench/classify_methods.py grid; docs/classification.md): refit whenever the codes change.
FITTED_TEMPERATURE = {"fused": 0.127, "prototype": 0.217}


def check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    """Refuse an option value outside ``allowed`` (:class:`UsageError` naming both)."""
    if value not in allowed:
        raise UsageError(f"{name}={value!r} is not one of {', '.join(allowed)}", f"use {name}={allowed[0]!r}")


def check_number(
    name: str, value: object, low: float, *, integer: bool = False, above: bool = False, high: float | None = None
) -> None:
    """Refuse an option that is not a finite number at least ``low`` (above it with ``above``)
    and at most ``high``, nor an integer where ``integer`` (:class:`UsageError`)."""
    kind = "an integer" if integer else "a number"
    # numbers.Integral / Real: numpy scalars count too.
    ok = isinstance(value, numbers.Integral) if integer else isinstance(value, numbers.Real) and math.isfinite(value)
    ok = ok and not isinstance(value, bool)
    if ok:
        ok = (value > low if above else value >= low) and (high is None or value <= high)  # type: ignore[operator]
    if not ok:
        bound = f"{'above' if above else 'at least'} {low:g}" + (f" and at most {high:g}" if high is not None else "")
        raise UsageError(f"{name}={value!r} is not {kind} {bound}", f"pass {name} as {kind} {bound}")


@dataclass
class ClassifyOptions:
    """Prompt and decoding choices (see ``uniaudio classify --help``)."""

    # fused: chosen on the development splits of four sets (sound events, spoken digits, emotion,
    # speakers; bench/classify_methods.py, docs/classification.md): the best mean accuracy there.
    method: Method = "fused"
    mode: Mode = "default"
    shots: int = 1
    repeats: int = 1
    layers: Layers = "semantic"
    induction: bool = True
    crop: float | Literal["auto"] | None = "auto"  # seconds; None: whole clips; "auto": default_crop
    template: str = "classify_paper"
    # A query is read by the LLM in one prompt, so its context bounds the length: 600 s is 5,000
    # layer-1 tokens (SmolLM2 reads 8,192). Longer queries are refused before any model loads;
    # the audio itself streams through the codec, so memory does not grow with the length.
    max_seconds: float = 600.0
    reuse_prefix: bool = True
    # prototype / fused: softmax temperature over cosine similarities; None: the one that
    # minimised the log-loss on development episodes of the four sets (held-out log-loss fused
    # 0.849 -> 0.677, prototype 1.229 -> 0.920, ECE prototype 0.163 -> 0.067, against 0.05).
    temperature: float | None = None
    # prototype: hidden layer at this relative depth. Middle layers separate sounds best: 82 % vs
    # 77 % for the last one on 2-way 1-shot ESC-10 fold 3, whole clips, SmolLM2-135M.
    depth: float = 0.6
    # prototype: subtract the base-set centre stored with the codec (see tasks/prototype.py)
    center: bool = True
    # icl default mode: probabilities are softmax(evidence / this). The evidence sums nats over
    # every query token, so its raw softmax is all but certain; 10 minimised the log-loss on
    # 130 ESC-10 fold 1-2 queries (2.19 -> 0.54). Only probabilities change, never the label.
    channel_temperature: float = 10.0

    # prototype / fused: answer only when the top probability reaches this, else abstain.
    abstain: float | None = None

    def __post_init__(self) -> None:
        check_choice("method", self.method, METHODS)
        check_choice("mode", self.mode, ("default", "paper"))
        check_choice("layers", self.layers, ("semantic", "all"))
        check_number("shots", self.shots, 1, integer=True)
        check_number("repeats", self.repeats, 1, integer=True)
        check_number("depth", self.depth, 0.0, high=1.0)
        check_number("channel_temperature", self.channel_temperature, 0.0, above=True)
        check_number("max_seconds", self.max_seconds, 0.0, above=True)
        if self.temperature is not None:
            check_number("temperature", self.temperature, 0.0, above=True)
        if self.crop not in ("auto", None) and not (
            isinstance(self.crop, numbers.Real) and math.isfinite(self.crop) and self.crop >= 0
        ):
            raise UsageError(f"--crop {self.crop} is not a length in seconds", "use 0 (whole clips) or more")
        if self.abstain is not None and not 0.0 < self.abstain < 1.0:
            raise UsageError(f"--abstain {self.abstain} is not a probability in (0, 1)", "use e.g. --abstain 0.8")

    # The fields keep what the caller gave ("auto", None); what the method makes of them is read
    # through the properties below, so that dataclasses.replace(opts, method=...) resolves again.

    @property
    def crop_seconds(self) -> float | None:
        """The demonstration and query crop in seconds (``None``: whole clips); ``"auto"`` is the
        method's default (:func:`default_crop`)."""
        if self.crop == "auto":
            return default_crop(None, self.method, self.mode)
        return float(self.crop) if self.crop else None

    @property
    def softmax_temperature(self) -> float:
        """``temperature``, or the method's fitted one when it is ``None``."""
        return float(self.temperature) if self.temperature is not None else FITTED_TEMPERATURE.get(self.method, 0.05)

    @property
    def token_layers(self) -> Layers:
        """The codec layers the method reads: ``layers``, except fused, which reads all three
        (see tasks/prototype.py)."""
        return "all" if self.method == "fused" else self.layers

    @property
    def crop_anchor(self) -> str:
        """Where ``crop`` cuts: the first second as in the reference release, else the loudest."""
        return "start" if self.mode == "paper" else "loudest"


def default_crop(crop: float | None, method: str, mode: str) -> float | None:
    """The paper's prompt holds every demonstration, so its clips are cut to 1 s as in the
    reference release; channel scoring and prototypes read one clip at a time, whole."""
    if crop is None:
        crop = 1.0 if (method, mode) == ("icl", "paper") else 0.0
    return crop or None


def default_tts_demos() -> Path:
    return prompts_dir() / "tts_digits"


@dataclass
class TTSOptions:
    """Prompt, answer and sampling choices of text-to-speech (see ``uniaudio tts --help`` and
    :mod:`uniaudio_cli.tasks.tts`): ``mode`` default copies a demonstration clip of the answer,
    paper writes new tokens; ``shots`` clips per text; the ``answer_*`` fields and ``calibrate``
    shape the default mode's text step."""

    mode: Mode = "default"
    shots: int = 5
    induction: bool = True
    template: str = "tts_paper"
    answer_template: str = "tts_answer"
    # default mode's text step (see tasks/tts.py TextAnswerer and bench/tts_text.py for the figures)
    answer_examples: str = "tts_answer_examples"
    # Prompts in the ensemble, one per ordering of the examples: 4 got 16 of the 40 dev questions
    # right, single orderings 10-15, 2 got 14 and 8 got 15 (each ordering costs a prompt prefix).
    answer_orderings: int = 4
    calibrate: bool = True  # divide each prompt's answers by its prior on content-free questions
    # An answer gets a warning (refused with refuse_unsure) when its calibrated probability is
    # below min_answer_probability or the LLM ends the answer there with less than min_answer_complete.
    # Chosen on the dev sets (prompts/tts_questions/dev*.json, SmolLM2-135M): 18 of 20 non-questions
    # and multi-digit questions warned, and 4 of the 40 questions (1 of the 16 answered right).
    # Ten digits share at least 0.1 of the probability.
    min_answer_probability: float = 0.15
    min_answer_complete: float = 0.7
    refuse_unsure: bool = False
    temperature: float = 0.0
    top_k: int = 50
    seed: int = 0
    max_seconds: float = 10.0

    def __post_init__(self) -> None:
        check_choice("mode", self.mode, ("default", "paper"))
        check_number("shots", self.shots, 1, integer=True)
        check_number("answer_orderings", self.answer_orderings, 1, integer=True)
        check_number("min_answer_probability", self.min_answer_probability, 0.0)
        check_number("min_answer_complete", self.min_answer_complete, 0.0)
        check_number("temperature", self.temperature, 0.0)
        check_number("top_k", self.top_k, 0, integer=True)
        check_number("seed", self.seed, 0, integer=True, high=2**64 - 1)  # what torch seeds take
        check_number("max_seconds", self.max_seconds, 0.0, above=True)


def default_denoise_demos() -> Path:
    return prompts_dir() / "denoise_pairs"


@dataclass(frozen=True)
class MaskSettings:
    """Default-mode denoising (:mod:`uniaudio_cli.tasks.denoise_mask`): how the mask is looked up
    in the demonstrations and applied. Chosen on development mixtures (``speech_extra`` speech,
    synthetic noise), not on the held-out evaluation."""

    neighbours: int = 16
    temperature: float = 0.05  # softmax over the neighbours' cosine similarities
    floor: float = 0.1  # the smallest gain: no band is cut to silence
    power: float = 0.8  # gain ** power softens the mask; STOI suffers from over-suppression
    llm_weight: float = 0.3  # the LLM-embedded codec tokens beside the level above the noise floor
    window_seconds: float = 8.0  # the noise floor is measured per window of a long input
    overlap_seconds: float = 0.25  # windows overlap by this much and are cross-faded


@dataclass
class DenoiseOptions:
    """Denoising choices (see ``uniaudio denoise --help`` and :mod:`uniaudio_cli.tasks.denoise`):
    ``mode`` default looks up masks in the demonstration pairs, paper writes clean tokens;
    ``mask`` tunes the default mode; the other fields shape paper mode's prompt."""

    mode: Mode = "default"
    # Demonstration pairs used; None: every pair in default mode, 4 in paper mode (its prompt
    # holds them all, and SmolLM2's context fits about 4 of the shipped 1.5 s pairs).
    pairs: int | None = None
    mask: MaskSettings = MaskSettings()
    # Paper mode: the prompt.
    repeats: int = 1
    induction: bool = True
    segment_seconds: float = 3.0
    template: str = "denoise_paper"
    # Guessed tokens are checked this many per LLM pass (1: one pass per token, the plain
    # greedy loop); the written tokens are the same either way.
    draft_block: int = 10
    # None: no limit. Long inputs stream in windows, so memory does not grow with the length.
    max_seconds: float | None = None

    def __post_init__(self) -> None:
        check_choice("mode", self.mode, ("default", "paper"))
        if self.pairs is not None:
            check_number("pairs", self.pairs, 1, integer=True)
        if not isinstance(self.mask, MaskSettings):
            raise UsageError(
                f"mask={self.mask!r} is not a MaskSettings",
                "pass mask=MaskSettings(...) (uniaudio_cli.tasks.options)",
            )
        check_number("repeats", self.repeats, 1, integer=True)
        check_number("segment_seconds", self.segment_seconds, 0.0, above=True)
        check_number("draft_block", self.draft_block, 1, integer=True)
        if self.max_seconds is not None:
            check_number("max_seconds", self.max_seconds, 0.0, above=True)

    def pair_count(self, available: int) -> int:
        if self.pairs is not None:
            return min(self.pairs, available)
        return available if self.mode == "default" else min(4, available)


@dataclass
class DemoPair:
    noisy: Path
    clean: Path


def load_pair_folder(root: str | Path) -> list[DemoPair]:
    """``root/<name>/clean.* + noisy*.*``: one pair per noisy file."""
    root = Path(root)
    if not root.is_dir():
        raise UsageError(
            f"{root}: no such demonstration folder", "pass --demos DIR with DIR/<name>/clean.wav + noisy*.wav"
        )
    pairs = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        clean = sorted(sub.glob("clean.*"))
        noisy = sorted(sub.glob("noisy*.*"))
        if not clean or not noisy:
            raise UsageError(f"{sub}: needs clean.<ext> and noisy*.<ext>", "add the missing file or remove the folder")
        pairs += [DemoPair(n, clean[0]) for n in noisy]
    if not pairs:
        raise UsageError(f"{root}: no (noisy, clean) pairs", "lay pairs out as DIR/<name>/clean.wav + noisy*.wav")
    return pairs


def spread_pairs(pairs: list[DemoPair], n: int) -> list[DemoPair]:
    """``n`` pairs, taking each clean utterance in turn so the demonstrations vary."""
    by_clean: dict[Path, list[DemoPair]] = {}
    for p in pairs:
        by_clean.setdefault(p.clean, []).append(p)
    groups = list(by_clean.values())
    out: list[DemoPair] = []
    i = 0
    while len(out) < min(n, len(pairs)):
        g = groups[i % len(groups)]
        k = i // len(groups)
        if k < len(g):
            out.append(g[k])
        i += 1
    return out


def check_pairs(pairs: list[DemoPair], max_seconds: float | None, same_length: bool) -> None:
    """Read every demonstration pair's files before any model loads, so that a bad one is
    refused now, naming the file: unreadable, empty, silent or too long (:class:`AudioError`),
    and with ``same_length`` (the default mode, which aligns them sample by sample) a noisy
    file whose length is not its clean file's (:class:`UsageError`)."""
    import soundfile as sf

    from uniaudio_cli.tasks.demos import check_demo_clips

    # Each file once: several noisy files share one clean file.
    check_demo_clips(dict.fromkeys(p for pair in pairs for p in (pair.noisy, pair.clean)), max_seconds)
    if not same_length:
        return
    for pair in pairs:
        noisy, clean = sf.info(str(pair.noisy)), sf.info(str(pair.clean))
        if noisy.frames * clean.samplerate != clean.frames * noisy.samplerate:
            raise UsageError(
                f"{pair.noisy}: {noisy.frames / noisy.samplerate:.3f} s but its {pair.clean.name} has "
                f"{clean.frames / clean.samplerate:.3f} s",
                "make each noisy file a noisy copy of its clean file, of the same length",
            )


@dataclass
class GenerateOptions:
    """Prompt and sampling choices (see ``uniaudio generate --help``)."""

    mode: Mode = "default"  # default: only codes the demonstrations use; paper: any code of the layer
    seconds: float | None = None  # output length; None: the demonstrations' commonest length
    # Demonstrations are cropped/padded to this many seconds (their loudest part; None: whole).
    # 2 s is 119 tokens with the default codec (58 tokens/s), so 10 captions x 3 shots take
    # 3,600 of SmolLM2's 8,192; whole 5 s ESC-50 clips would not fit.
    crop: float | None = 2.0
    shots: int = 3  # clips per caption (the first ones of each folder, by name)
    # Sampling: greedy decoding of a small LLM falls into repeating one token, which decodes to
    # a drone; sampling among the likeliest allowed tokens keeps the demonstrations' variety.
    temperature: float = 1.0
    top_k: int = 50  # 0: every allowed token
    seed: int = 0
    induction: bool = True
    # Default mode: the matched caption's demonstrations again, just before the query.
    recall: bool = True
    template: str = "generate_paper"
    max_seconds: float = 600.0  # longer demonstration files are refused

    def __post_init__(self) -> None:
        check_choice("mode", self.mode, ("default", "paper"))
        if self.seconds is not None:
            check_number("seconds", self.seconds, 0.0, above=True)
        if self.crop is not None:
            check_number("crop", self.crop, 0.0)
        self.crop = self.crop or None
        check_number("shots", self.shots, 1, integer=True)
        check_number("temperature", self.temperature, 0.0)
        check_number("top_k", self.top_k, 0, integer=True)
        check_number("seed", self.seed, -(2**63), integer=True, high=2**64 - 1)  # what torch seeds take
        check_number("max_seconds", self.max_seconds, 0.0, above=True)


def caption_of(name: str) -> str:
    """A demonstration folder's name as a caption: ``dog_bark`` -> ``dog bark``."""
    return " ".join(name.replace("_", " ").split())
