"""The paper's simple-TTS test: 20 spoken-digit questions, judged by an offline recogniser.

Each system speaks the answer to each question; ``pocketsphinx`` (its shipped US English
acoustic model, decoding restricted by a JSGF grammar to exactly one of the words "zero" ..
"nine") says which digit it hears, and ACC is the share of right digits. Quality is DNSMOS
(``speechmos``'s ONNX models, run offline with onnxruntime): OVRL and the P.808 MOS.

Systems: uniaudio in ``default`` mode (plus the accuracy of its text answer, ``Speech.answer``)
and in ``paper`` mode; the codec's resynthesis of a demonstration recording of the right answer
(what the default mode can at best produce); espeak-ng speaking the right answer (a reference
that also measures the recogniser itself; skipped when espeak-ng is missing). Under a distributed
launcher the questions are split over the processes (:mod:`uniaudio_cli.evaluate.parallel`).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from uniaudio_cli.errors import UsageError
from uniaudio_cli.evaluate.codec_eval import mean_interval
from uniaudio_cli.evaluate.report import Column, Report, Table, run_metadata
from uniaudio_cli.evaluate.store import wilson_interval

if TYPE_CHECKING:
    from uniaudio_cli.codec.api import Codec
    from uniaudio_cli.evaluate.parallel import Workers
    from uniaudio_cli.llm import LoadedLLM

# The paper's 20 questions with their digit answers.
QUESTIONS: tuple[tuple[str, str], ...] = (
    ("1+1", "2"),
    ("1+2", "3"),
    ("2+2", "4"),
    ("5-1", "4"),
    ("5-2", "3"),
    ("1-1", "0"),
    ("0*2", "0"),
    ("2*2", "4"),
    ("1/1", "1"),
    ("2/1", "2"),
    ("4/2", "2"),
    ("the square root of 4", "2"),
    ("the square root of 1", "1"),
    ("the last digit of 110", "0"),
    ("the first digit of 110", "1"),
    ("the sum of 1+1+1", "3"),
    ("the next digit of 4", "5"),
    ("sequence 0,1,2,3 what is next?", "4"),
    ("sequence 4,3,2,1 what is next?", "0"),
    ("how many days in a week", "7"),
)
QUESTION_SETS = ("paper", "arithmetic", "reasoning", "multistep")


def load_questions(name_or_path: str | Path) -> tuple[tuple[str, str], ...]:
    """A question set: ``paper`` (the paper's 20, :data:`QUESTIONS`), a set shipped in
    ``prompts/tts_questions/`` (``arithmetic``, ``reasoning``, ``multistep``, ...) or a JSON file
    ``{"questions": [{"question": ..., "answer": ...}, ...]}``. Questions without an answer
    (unanswerable sets) are left out: accuracy needs one. A set with an answer the judge cannot
    hear (anything but one digit "0" .. "9") is refused, since it could only count as wrong."""
    if str(name_or_path) == "paper":
        return QUESTIONS
    p = _question_file(name_or_path)
    fix = f'pass one of {", ".join(QUESTION_SETS)} or a JSON file {{"questions": [{{"question": ..., "answer": ...}}]}}'
    try:
        items = json.loads(p.read_text())["questions"]
        questions = tuple((str(q["question"]), str(q["answer"])) for q in items if q.get("answer") is not None)
    except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise UsageError(f"{p}: not a question set ({e})", fix) from e
    if not questions:
        raise UsageError(f"{p}: no question with an answer", fix)
    unjudgeable = [(q, a) for q, a in questions if a not in _DIGITS]
    if unjudgeable:
        q, a = unjudgeable[0]
        raise UsageError(
            f"{p}: {len(unjudgeable)} answer(s) are not one digit (first: {q!r} -> {a!r}); "
            "the offline judge hears one digit word",
            "give every question a one-digit answer, 0 to 9",
        )
    return questions


def question_set_name(name_or_path: str | Path) -> str:
    """The name :func:`load_questions` knows a set by: ``paper``, a shipped set's name, or a
    JSON file's stem."""
    if str(name_or_path) == "paper":
        return "paper"
    return _question_file(name_or_path).stem


def _question_file(name_or_path: str | Path) -> Path:
    from uniaudio_cli.prompts import prompts_dir

    p = Path(name_or_path)
    return p if p.suffix == ".json" else prompts_dir() / "tts_questions" / f"{name_or_path}.json"


_DIGITS = tuple(str(d) for d in range(10))
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SAMPLE_RATE = 16000
RECOGNISER_PAD_S = 0.3  # silence added at both ends: the recogniser needs some before and after a word


# --------------------------------------------------------------------------- judges


class DigitRecogniser:
    """pocketsphinx decoding one digit word ("zero" .. "nine") from 16 kHz audio."""

    def __init__(self, pad_seconds: float = RECOGNISER_PAD_S) -> None:
        from pocketsphinx import Decoder

        grammar = "#JSGF V1.0;\ngrammar digits;\npublic <digit> = " + " | ".join(DIGIT_WORDS) + " ;\n"
        self.decoder = Decoder(samprate=SAMPLE_RATE, loglevel="FATAL")
        self.decoder.add_jsgf_string("digits", grammar)
        self.decoder.activate_search("digits")
        self.pad = int(pad_seconds * SAMPLE_RATE)

    def __call__(self, wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> str | None:
        """The digit heard (``"0"`` .. ``"9"``), or ``None`` when nothing is recognised."""
        wav = _to_16k(wav, sample_rate)
        wav = np.pad(wav, (self.pad, self.pad))
        pcm = (np.clip(wav, -1.0, 1.0) * 32767).astype(np.int16).tobytes()
        self.decoder.start_utt()
        self.decoder.process_raw(pcm, full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        words = hyp.hypstr.split() if hyp is not None else []
        return str(DIGIT_WORDS.index(words[0])) if words and words[0] in DIGIT_WORDS else None


class DnsMos:
    """DNSMOS (Microsoft's non-intrusive MOS predictor) from the ONNX models ``speechmos`` ships.

    Returns ``{"ovrl", "sig", "bak", "p808"}``. Sessions run on one thread.
    """

    def __init__(self) -> None:
        import onnxruntime as ort
        import speechmos
        from speechmos.dnsmos import DNSMOS

        models = Path(speechmos.__file__).parent / "dnsmos_models"
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.model = DNSMOS.__new__(DNSMOS)
        self.model.primary_model_path = str(models / "sig_bak_ovr.onnx")
        self.model.onnx_sess = ort.InferenceSession(
            str(models / "sig_bak_ovr.onnx"), opts, providers=["CPUExecutionProvider"]
        )
        self.model.p808_onnx_sess = ort.InferenceSession(
            str(models / "model_v8.onnx"), opts, providers=["CPUExecutionProvider"]
        )

    def __call__(self, wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> dict[str, float]:
        wav = np.clip(_to_16k(wav, sample_rate), -1.0, 1.0).astype(np.float32)
        out = self.model(wav, SAMPLE_RATE, False)
        return {k: float(out[f"{k}_mos"]) for k in ("ovrl", "sig", "bak", "p808")}


def load_recogniser() -> tuple[DigitRecogniser | None, str | None]:
    """The recogniser, or ``None`` and why it is unavailable."""
    try:
        return DigitRecogniser(), None
    except ImportError:
        return None, "pocketsphinx is not installed (pip install pocketsphinx)"
    except Exception as e:  # a broken model installation
        return None, f"pocketsphinx failed to start ({str(e).splitlines()[0] if str(e) else type(e).__name__})"


def load_dnsmos() -> tuple[DnsMos | None, str | None]:
    """DNSMOS, or ``None`` and why it is unavailable."""
    try:
        return DnsMos(), None
    except ImportError as e:
        return None, f"DNSMOS unavailable: {e} (pip install speechmos onnxruntime requests)"
    except Exception as e:
        return None, f"DNSMOS unavailable: {str(e).splitlines()[0] if str(e) else type(e).__name__}"


def _to_16k(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    wav = np.asarray(wav, dtype=np.float32).reshape(-1)
    if sample_rate == SAMPLE_RATE:
        return wav
    import librosa

    return librosa.resample(wav, orig_sr=sample_rate, target_sr=SAMPLE_RATE, res_type="soxr_hq")


def _slug(text: str) -> str:
    return (re.sub(r"[^A-Za-z0-9+\-]+", "_", text.strip()).strip("_") or "q")[:60]


# --------------------------------------------------------------------------- evaluation


@dataclass
class SystemResult:
    """One system's answers to the questions."""

    name: str
    items: list[dict[str, Any]] = field(default_factory=list)

    def accuracy(self) -> float | None:
        judged = [i for i in self.items if i.get("judged")]
        return sum(i["correct"] for i in judged) / len(judged) if judged else None

    def wilson(self) -> tuple[float, float] | None:
        judged = [i for i in self.items if i.get("judged")]
        return wilson_interval(sum(i["correct"] for i in judged), len(judged)) if judged else None

    def text_accuracy(self) -> float | None:
        answered = [i for i in self.items if i.get("answer") is not None]
        return sum(i["answer"] == i["truth"] for i in answered) / len(answered) if answered else None

    def dnsmos(self, key: str) -> Any:
        return mean_interval([i["dnsmos"][key] for i in self.items if i.get("dnsmos")])

    def seconds(self) -> float | None:
        vals = [i["seconds"] for i in self.items if i.get("seconds") is not None]
        return float(np.mean(vals)) if vals else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "accuracy": self.accuracy(),
            "accuracy_wilson95": self.wilson(),
            "text_accuracy": self.text_accuracy(),
            "dnsmos": {k: self.dnsmos(k).to_dict() for k in ("ovrl", "sig", "bak", "p808")},
            "seconds_per_question": self.seconds(),
            "items": self.items,
        }


@dataclass
class TTSEvalResult:
    systems: list[SystemResult]
    recogniser_note: str | None
    dnsmos_note: str | None
    skipped: list[str]
    device: str = "cpu"
    demos: str = ""
    questions: tuple[tuple[str, str], ...] = QUESTIONS
    question_set: str = "paper"

    def to_dict(self) -> dict[str, Any]:
        return {
            "question_set": self.question_set,
            "questions": [{"question": q, "answer": a} for q, a in self.questions],
            "demos": self.demos,
            "recogniser": "pocketsphinx en-us, JSGF grammar of one digit word"
            if self.recogniser_note is None
            else self.recogniser_note,
            "dnsmos": "speechmos DNSMOS (sig_bak_ovr.onnx + model_v8.onnx)"
            if self.dnsmos_note is None
            else self.dnsmos_note,
            "skipped": self.skipped,
            "systems": [s.to_dict() for s in self.systems],
        }

    def to_report(
        self,
        title: str | None = None,
        metadata: dict[str, Any] | None = None,
        paper: dict[str, float] | None = None,
    ) -> Report:
        """Summary table (``paper`` adds a row such as ``{"acc": 70, "dnsmos": 2.92}``) and the
        per-question answers."""
        if title is None:
            title = (
                "Simple TTS: the paper's 20 questions"
                if self.question_set == "paper"
                else f"Simple TTS: question set {self.question_set} ({len(self.questions)} questions)"
            )
        meta = metadata if metadata is not None else run_metadata(self.device, demos=self.demos)
        rows = []
        for s in self.systems:
            ovrl, p808 = s.dnsmos("ovrl"), s.dnsmos("p808")
            rows.append(
                {
                    "system": s.name,
                    "acc": s.accuracy(),
                    "wilson": s.wilson(),
                    "text": s.text_accuracy(),
                    "ovrl": ovrl.mean,
                    "ovrl_ci": ovrl.interval,
                    "p808": p808.mean,
                    "seconds": s.seconds(),
                }
            )
        if paper:
            rows.append(
                {"system": "paper (LLaMA 2 7B, FSDD)", "acc": paper.get("acc", 0) / 100, "ovrl": paper.get("dnsmos")}
            )
        notes = [
            f"{len(self.questions)} questions. ACC: the digit pocketsphinx hears (grammar: exactly one of zero..nine) "
            "equals the right answer; Wilson 95 % interval. Text ACC: default mode's text answer (before speaking).",
            "DNSMOS: OVRL (95 % CI over questions) and P.808 MOS; "
            "the paper does not say which DNSMOS score it reports.",
            "codec only = the codec's resynthesis of a demonstration recording of the right answer; "
            "espeak-ng = espeak-ng saying the right answer (also a check of the recogniser).",
        ]
        if self.recogniser_note:
            notes.append(f"ACC not measured: {self.recogniser_note}.")
        if self.dnsmos_note:
            notes.append(f"DNSMOS not measured: {self.dnsmos_note}.")
        notes += [f"skipped: {s}" for s in self.skipped]
        summary = Table(
            "Accuracy and quality",
            [
                Column("system", "System"),
                Column("acc", "ACC", ".0%"),
                Column("wilson", "95 % Wilson", ".0%"),
                Column("text", "Text ACC", ".0%"),
                Column("ovrl", "DNSMOS OVRL", ".2f"),
                Column("ovrl_ci", "95 % CI", ".2f"),
                Column("p808", "DNSMOS P.808", ".2f"),
                Column("seconds", "s / question", ".2f"),
            ],
            rows,
            notes,
        )
        cols = [Column("question", "Question"), Column("truth", "Answer", justify="center")]
        per_q: list[dict[str, Any]] = [{"question": q, "truth": a} for q, a in self.questions]
        for k, s in enumerate(self.systems):
            cols.append(Column(f"s{k}", s.name, justify="center"))
            for row, item in zip(per_q, s.items, strict=False):
                heard = item.get("recognised")
                mark = "" if not item.get("judged") else (" ✓" if item["correct"] else " ✗")
                text = f"{'?' if heard is None else heard}{mark}"
                if item.get("answer") is not None:
                    text += f" (text {item['answer']})"
                row[f"s{k}"] = text
        detail = Table("What each system said (digit heard; ✓ right, ✗ wrong)", cols, per_q)
        return Report(title, [summary, detail], meta, self.to_dict())


def _judge(
    name: str,
    question: str,
    truth: str,
    wav: np.ndarray,
    sr: int,
    recogniser: DigitRecogniser | None,
    dnsmos: DnsMos | None,
    seconds: float | None,
    answer: str | None = None,
    out_dir: Path | None = None,
    index: int = 0,
    force: bool = False,
) -> dict[str, Any]:
    heard = recogniser(wav, sr) if recogniser is not None else None
    item: dict[str, Any] = {
        "question": question,
        "truth": truth,
        "recognised": heard,
        "judged": recogniser is not None,
        "correct": heard == truth,
        "answer": answer,
        "seconds": seconds,
        "dnsmos": dnsmos(wav, sr) if dnsmos is not None else None,
        "audio_seconds": len(wav) / sr,
    }
    if out_dir is not None:
        from uniaudio_cli.audio import write_audio

        dest = out_dir / _slug(name) / f"{index + 1:02d}_{_slug(question)}.wav"
        write_audio(dest, wav, sr, force=force)
        item["wav"] = str(dest)
    return item


def evaluate_tts(
    llm: LoadedLLM,
    codec: Codec,
    demos: str | Path | None = None,
    modes: tuple[str, ...] = ("default", "paper"),
    shots: int = 5,
    seed: int = 0,
    out_dir: str | Path | None = None,
    force: bool = False,
    progress: bool = True,
    references: bool = True,
    workers: Workers | None = None,
    questions: str | Path = "paper",
) -> TTSEvalResult:
    """Speak the answers to ``questions`` (a set :func:`load_questions` reads; default the
    paper's 20) with uniaudio in each of ``modes`` and with the reference systems
    (``references``); judge them. ``out_dir`` receives ``<system>/<NN>_<question>.wav``.

    ``workers`` (default: the processes a launcher started, else one) splits the questions over
    processes (:mod:`uniaudio_cli.evaluate.parallel`); every process returns the whole result."""
    from uniaudio_cli.batch import progress_bar
    from uniaudio_cli.evaluate.parallel import current_workers, gather_indexed
    from uniaudio_cli.synth import espeak_available, synthesize
    from uniaudio_cli.tasks.demos import load_demo_folder
    from uniaudio_cli.tasks.tts import Synthesizer, TTSOptions, default_tts_demos

    question_list = load_questions(questions)
    set_name = question_set_name(questions)
    workers = workers if workers is not None else current_workers(str(llm.device))
    progress = progress and workers.is_main
    folder = load_demo_folder(demos or default_tts_demos())
    recogniser, rec_note = load_recogniser()
    mos, mos_note = load_dnsmos()
    out = Path(out_dir) if out_dir is not None else None
    sr = codec.sample_rate
    # (system name, [(question index, item)]) of this process's questions; merged at the end.
    systems: list[tuple[str, list[tuple[int, dict[str, Any]]]]] = []
    skipped: list[tuple[int, str]] = []
    mine = [i for i in range(len(question_list)) if workers.mine(i)]
    n_ref = 2 if references else 0
    bar = progress_bar(progress)
    with bar:
        task = bar.add_task("speaking", total=len(mine) * (len(modes) + n_ref))
        for mode in modes:
            bar.update(task, description=f"uniaudio {mode} mode")
            synth = Synthesizer.from_files(llm, codec, folder.clips, TTSOptions(mode=mode, shots=shots, seed=seed))  # type: ignore[arg-type]
            name, items = f"uniaudio {mode}", []
            for i in mine:
                q, truth = question_list[i]
                t0 = time.perf_counter()
                speech = synth.speak(q)
                secs = time.perf_counter() - t0
                item = _judge(
                    name,
                    q,
                    truth,
                    speech.audio,
                    speech.sample_rate,
                    recogniser,
                    mos,
                    secs,
                    speech.answer,
                    out,
                    i,
                    force,
                )
                item["follows"] = speech.follows
                items.append((i, item))
                bar.advance(task)
            systems.append((name, items))
        espeak_note = None
        if references:
            bar.update(task, description="codec only")
            name, items = "codec only", []
            from uniaudio_cli.audio import load_audio

            for i in mine:
                q, truth = question_list[i]
                clips = folder.clips.get(truth)
                if not clips:
                    skipped.append((i, f"codec only, {q!r}: no demonstration of {truth!r} in {folder.root}"))
                    bar.advance(task)
                    continue
                wav = load_audio(clips[0], sr)
                t0 = time.perf_counter()
                recon = codec.decode(codec.encode(wav), len(wav))
                secs = time.perf_counter() - t0
                items.append((i, _judge(name, q, truth, recon, sr, recogniser, mos, secs, None, out, i, force)))
                bar.advance(task)
            systems.append((name, items))
            if espeak_available():
                bar.update(task, description="espeak-ng")
                name, items = "espeak-ng", []
                for i in mine:
                    q, truth = question_list[i]
                    t0 = time.perf_counter()
                    wav = synthesize(truth, sample_rate=sr)
                    secs = time.perf_counter() - t0
                    items.append((i, _judge(name, q, truth, wav, sr, recogniser, mos, secs, None, out, i, force)))
                    bar.advance(task)
                systems.append((name, items))
            else:
                espeak_note = "espeak-ng row: espeak-ng is not installed"
    results = [SystemResult(name, gather_indexed(workers, items)) for name, items in systems]
    notes = gather_indexed(workers, skipped) + ([espeak_note] if espeak_note else [])
    return TTSEvalResult(results, rec_note, mos_note, notes, str(llm.device), str(folder.root), question_list, set_name)
