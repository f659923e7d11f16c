"""Options of the tasks and their demonstration layouts, importable without torch.

The CLI checks every argument against these before it loads a model, so this module (like
:mod:`uniaudio_cli.tasks.demos`) imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from uniaudio_cli.errors import UsageError
from uniaudio_cli.prompts import prompts_dir

Method = Literal["icl", "prototype"]
Mode = Literal["default", "paper"]
Layers = Literal["semantic", "all"]


@dataclass
class ClassifyOptions:
    """Prompt and decoding choices (see ``uniaudio classify --help``)."""

    method: Method = "icl"
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
    temperature: float = 0.05  # prototype: softmax temperature over cosine similarities
    # prototype: hidden layer at this relative depth. Middle layers separate sounds best: 82 % vs
    # 77 % for the last one on 2-way 1-shot ESC-10 fold 3, whole clips, SmolLM2-135M.
    depth: float = 0.6
    # prototype: subtract the base-set centre stored with the codec (see tasks/prototype.py)
    center: bool = True
    # icl default mode: probabilities are softmax(evidence / this). The evidence sums nats over
    # every query token, so its raw softmax is all but certain; 10 minimised the log-loss on
    # 130 ESC-10 fold 1-2 queries (2.19 -> 0.54). Only probabilities change, never the label.
    channel_temperature: float = 10.0

    def __post_init__(self) -> None:
        if self.crop == "auto":
            self.crop = default_crop(None, self.method, self.mode)

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
    mode: Mode = "default"
    shots: int = 5
    induction: bool = True
    template: str = "tts_paper"
    answer_template: str = "tts_answer"
    temperature: float = 0.0
    top_k: int = 50
    seed: int = 0
    max_seconds: float = 10.0


def default_denoise_demos() -> Path:
    return prompts_dir() / "denoise_pairs"


@dataclass
class DenoiseOptions:
    mode: Mode = "default"
    pairs: int = 4
    repeats: int = 1
    induction: bool = True
    segment_seconds: float = 3.0
    copy_bias: float = 2.0
    template: str = "denoise_paper"
    # None: no limit. Long inputs stream through the codec in windows and the LLM in segments,
    # so memory does not grow with the length (time does: about real time on a laptop CPU).
    max_seconds: float | None = None


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
