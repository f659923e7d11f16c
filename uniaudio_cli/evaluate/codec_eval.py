"""Reconstruction quality, code statistics and speed of an LLM-Codec over a set of clips.

Each clip is encoded and decoded once; the reconstruction is compared with the input by
wide-band PESQ, STOI and a log-mel L1 distance. Codes are pooled over the whole set for
per-layer codebook usage and entropy. Means come with 95 % Student-t intervals over clips.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from uniaudio_cli.evaluate.report import Column, Report, Table, run_metadata

if TYPE_CHECKING:
    from uniaudio_cli.codec.api import Codec

PESQ_RATE = 16000  # wide-band PESQ is defined at 16 kHz only
N_MELS = 80
MEL_N_FFT = 1024
MEL_HOP = 256
MEL_FLOOR = 1e-5
CONFIDENCE = 0.95
WARMUP_SECONDS = 1.0


# --------------------------------------------------------------------------- metric helpers


def _to_rate(wav: np.ndarray, sr: int, target: int) -> np.ndarray:
    if sr == target:
        return wav
    import librosa

    return librosa.resample(wav, orig_sr=sr, target_sr=target, res_type="soxr_hq")


def pesq_wb(ref: np.ndarray, deg: np.ndarray, sample_rate: int = PESQ_RATE) -> float | None:
    """Wide-band PESQ (MOS-LQO, about 1.0-4.6) of ``deg`` against ``ref``, both ``(T,)``.

    Returns ``None`` where PESQ is undefined for the clip (no speech found, too short, an
    all-zero reconstruction); PESQ is a speech measure, so non-speech clips often land here.
    """
    from pesq import PesqError, pesq

    ref16 = _to_rate(np.asarray(ref, dtype=np.float32), sample_rate, PESQ_RATE)
    deg16 = _to_rate(np.asarray(deg, dtype=np.float32), sample_rate, PESQ_RATE)
    try:
        return float(pesq(PESQ_RATE, ref16, deg16, "wb"))
    except (PesqError, ValueError):  # the C code raises ValueError (NaN) on an all-zero signal
        return None


def stoi_score(ref: np.ndarray, deg: np.ndarray, sample_rate: int) -> float | None:
    """STOI (0-1) of ``deg`` against ``ref``, both ``(T,)``; ``None`` when the clip has too few
    non-silent frames (pystoi then warns and returns a meaningless 1e-5)."""
    from pystoi import stoi

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        score = float(stoi(np.asarray(ref, dtype=np.float64), np.asarray(deg, dtype=np.float64), sample_rate))
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        return None
    return score


def log_mel(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    """Natural-log magnitude mel spectrogram ``(N_MELS, frames)`` (HiFi-GAN convention: 1024-point
    FFT, hop 256, floor 1e-5)."""
    import librosa

    mel = librosa.feature.melspectrogram(
        y=np.asarray(wav, dtype=np.float32),
        sr=sample_rate,
        n_fft=MEL_N_FFT,
        hop_length=MEL_HOP,
        n_mels=N_MELS,
        power=1.0,
    )
    return np.log(np.maximum(mel, MEL_FLOOR))


def mel_distance(ref: np.ndarray, deg: np.ndarray, sample_rate: int) -> float:
    """Mean absolute difference of the log-mel spectrograms of two ``(T,)`` clips."""
    return float(np.mean(np.abs(log_mel(ref, sample_rate) - log_mel(deg, sample_rate))))


def code_entropy(counts: np.ndarray) -> float:
    """Shannon entropy in bits of a code histogram ``(K,)``."""
    total = counts.sum()
    if total == 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(-(p * np.log2(p)).sum())


@dataclass
class Summary:
    """Mean of ``n`` values with a two-sided Student-t interval (``None`` bounds when n < 2)."""

    mean: float | None
    low: float | None
    high: float | None
    n: int

    @property
    def interval(self) -> tuple[float, float] | None:
        return None if self.low is None or self.high is None else (self.low, self.high)

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "ci95": list(self.interval) if self.interval else None, "n": self.n}


def _finite(values: list[float]) -> np.ndarray:
    """The values that are numbers (``None``, NaN and infinities dropped), ``(n,)`` float64."""
    return np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)


def mean_interval(values: list[float], confidence: float = CONFIDENCE) -> Summary:
    """Mean and ``confidence`` interval of the mean (Student t, sample standard deviation)."""
    x = _finite(values)
    n = len(x)
    if n < 2:
        return Summary(float(x.mean()) if n else None, None, None, n)
    mean = float(x.mean())
    from scipy.stats import t

    half = float(t.ppf(0.5 + confidence / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return Summary(mean, mean - half, mean + half, n)


def bootstrap_interval(
    values: list[float], confidence: float = CONFIDENCE, resamples: int = 2000, seed: int = 0
) -> Summary:
    """Mean and percentile-bootstrap ``confidence`` interval of the mean.

    For bounded measures over few units (accuracy per episode): the interval is made of
    resampled means, so it never leaves the range of the values, unlike a Student t interval
    (18 episodes at 95 % accuracy give a t interval above 100 %). Seeded, so reports repeat.
    """
    x = _finite(values)
    n = len(x)
    if n < 2:
        return Summary(float(x.mean()) if n else None, None, None, n)
    mean = float(x.mean())
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
    low, high = np.quantile(means, [0.5 - confidence / 2, 0.5 + confidence / 2])
    return Summary(mean, float(low), float(high), n)


# --------------------------------------------------------------------------- results


@dataclass
class ClipResult:
    """Measurements of one clip; ``pesq``/``stoi`` are ``None`` where undefined for it."""

    path: str
    seconds: float
    pesq: float | None
    stoi: float | None
    mel_distance: float
    tokens_per_second: float
    encode_s: float
    decode_s: float

    @property
    def encode_rtf(self) -> float:
        return self.encode_s / self.seconds

    @property
    def decode_rtf(self) -> float:
        return self.decode_s / self.seconds


@dataclass
class LayerStats:
    """Code statistics of one quantizer layer over the whole set (``layer`` counts from 1).

    ``usage`` is ``distinct / codebook_size``; ``entropy_bits`` is at most ``log2(codebook_size)``.
    """

    layer: int
    stride: int
    codebook_size: int
    codes: int
    distinct: int
    usage: float
    entropy_bits: float
    max_entropy_bits: float


# (key, label, table format, higher is better)
METRICS: list[tuple[str, str, str, bool | None]] = [
    ("pesq", "PESQ (wide-band)", ".3f", True),
    ("stoi", "STOI", ".4f", True),
    ("mel_distance", "Mel distance (L1 log-mel)", ".4f", False),
    ("tokens_per_second", "Tokens / second", ".2f", None),
    ("encode_rtf", "Encode RTF", ".4f", False),
    ("decode_rtf", "Decode RTF", ".4f", False),
]


@dataclass
class CodecReport:
    """Everything :func:`evaluate_codec` measured.

    ``failed`` lists ``(path, one-line error)`` of files that could not be read; ``pesq_skipped``
    and ``stoi_skipped`` count evaluated clips whose PESQ / STOI was undefined.
    """

    codec: str
    sample_rate: int
    device: str
    clips: list[ClipResult]
    layers: list[LayerStats]
    failed: list[tuple[str, str]] = field(default_factory=list)
    pesq_skipped: int = 0
    stoi_skipped: int = 0

    @property
    def seconds(self) -> float:
        return float(sum(c.seconds for c in self.clips))

    def summary(self) -> dict[str, Summary]:
        """Metric key -> mean and 95 % interval over clips (keys as in :data:`METRICS`)."""
        return {key: mean_interval([getattr(c, key) for c in self.clips]) for key, *_ in METRICS}

    def total_rtf(self) -> dict[str, float | None]:
        """Processing time over audio time for the whole set (weights long clips more than the
        per-clip mean does)."""
        secs = self.seconds
        if secs == 0:
            return {"encode": None, "decode": None}
        return {
            "encode": sum(c.encode_s for c in self.clips) / secs,
            "decode": sum(c.decode_s for c in self.clips) / secs,
        }

    def metric_rows(self) -> list[dict[str, Any]]:
        """One row per metric: ``metric``, ``better`` (↑/↓), ``mean``, ``ci95``, ``n``."""
        summary = self.summary()
        rows = []
        for key, label, fmt, higher in METRICS:
            s = summary[key]
            rows.append(
                {
                    "key": key,
                    "metric": label,
                    "better": {True: "↑", False: "↓", None: ""}[higher],
                    "mean": s.mean,
                    "ci95": s.interval,
                    "n": s.n,
                    "_fmt": {"mean": fmt, "ci95": fmt},
                }
            )
        return rows

    def layer_rows(self) -> list[dict[str, Any]]:
        """One row per quantizer layer (the fields of :class:`LayerStats`)."""
        return [asdict(layer) for layer in self.layers]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready results: set totals, metric summaries, per-layer statistics, per-clip values."""
        return {
            "codec": self.codec,
            "sample_rate": self.sample_rate,
            "device": self.device,
            "files": len(self.clips) + len(self.failed),
            "evaluated": len(self.clips),
            "seconds": self.seconds,
            "metrics": {k: s.to_dict() for k, s in self.summary().items()},
            "total_rtf": self.total_rtf(),
            "pesq_skipped": self.pesq_skipped,
            "stoi_skipped": self.stoi_skipped,
            "layers": self.layer_rows(),
            "failed": [{"path": p, "error": e} for p, e in self.failed],
            "clips": [{**asdict(c), "encode_rtf": c.encode_rtf, "decode_rtf": c.decode_rtf} for c in self.clips],
        }

    def to_report(self, metadata: dict[str, Any] | None = None) -> Report:
        """The two tables (metrics, layers) with run metadata, for the renderers of
        :mod:`uniaudio_cli.evaluate.report`."""
        meta = metadata if metadata is not None else run_metadata(self.device, codec=self.codec)
        rtf = self.total_rtf()
        notes = [
            f"{len(self.clips)} clips, {self.seconds:.1f} s of audio; 95 % intervals are Student t over clips.",
            "RTF = processing time / audio time (below 1 is faster than real time); whole-set RTF: "
            f"encode {_fmt(rtf['encode'], '.4f')}, decode {_fmt(rtf['decode'], '.4f')}.",
        ]
        if self.pesq_skipped:
            notes.append(f"PESQ undefined (no speech found or too short) on {self.pesq_skipped} clips; excluded.")
        if self.stoi_skipped:
            notes.append(f"STOI undefined (too few non-silent frames) on {self.stoi_skipped} clips; excluded.")
        if self.failed:
            notes.append(f"{len(self.failed)} files could not be read and were skipped.")
        metrics = Table(
            "Reconstruction and speed",
            [
                Column("metric", "Metric"),
                Column("better", "", justify="center"),
                Column("mean", "Mean"),
                Column("ci95", "95 % CI"),
                Column("n", "Clips", "d"),
            ],
            self.metric_rows(),
            notes,
        )
        layers = Table(
            "Codebook usage per layer",
            [
                Column("layer", "Layer", "d"),
                Column("stride", "Stride", "d"),
                Column("codebook_size", "Codebook", ","),
                Column("codes", "Codes", ","),
                Column("distinct", "Distinct", ","),
                Column("usage", "Usage", ".2%"),
                Column("entropy_bits", "Entropy (bits)", ".2f"),
                Column("max_entropy_bits", "Max (bits)", ".2f"),
            ],
            self.layer_rows(),
            ["Usage = distinct codes used over the set / codebook size; entropy of the pooled code histogram."],
        )
        return Report(f"Codec evaluation: {self.codec}", [metrics, layers], meta, self.to_dict())


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


# --------------------------------------------------------------------------- evaluation


def _warm_up(codec: Codec) -> None:
    """One untimed encode/decode so that the first clip's timing excludes one-off costs
    (projecting the codebooks, allocator and kernel set-up)."""
    rng = np.random.default_rng(0)
    wav = (0.1 * rng.standard_normal(int(WARMUP_SECONDS * codec.sample_rate))).astype(np.float32)
    codec.decode(codec.bridge.to_token_ids(codec.encode_codes(wav)), len(wav))


def evaluate_clip(codec: Codec, path: Path) -> tuple[ClipResult, list[list[int]]]:
    """Encode and decode one file; returns its measurements and its codebook indices per layer.

    Raises :class:`~uniaudio_cli.errors.AudioError` for unreadable or silent files.
    """
    from uniaudio_cli.audio import load_audio

    sr = codec.sample_rate
    wav = load_audio(path, sr)
    t0 = time.perf_counter()
    codes = codec.encode_codes(wav)  # .tolist() inside waits for the device
    t1 = time.perf_counter()
    recon = codec.decode(codec.bridge.to_token_ids(codes), len(wav))  # .cpu() inside waits too
    t2 = time.perf_counter()
    n = min(len(wav), len(recon))
    ref, deg = wav[:n], recon[:n]
    seconds = len(wav) / sr
    result = ClipResult(
        path=str(path),
        seconds=seconds,
        pesq=pesq_wb(ref, deg, sr),
        stoi=stoi_score(ref, deg, sr),
        mel_distance=mel_distance(ref, deg, sr),
        tokens_per_second=sum(len(c) for c in codes) / seconds,
        encode_s=t1 - t0,
        decode_s=t2 - t1,
    )
    return result, codes


def spread(files: list[Path], n: int | None) -> list[Path]:
    """``n`` of ``files`` evenly spaced through the list, in order (all of them when ``n`` is
    ``None``, 0 or at least their number).

    A sorted folder lists its clips grouped by name (FSDD: ``0_nicolas_0`` ... ``9_nicolas_49``), so
    its first ``n`` would be one or two of its labels; an even spread keeps every label.
    """
    if not n or n >= len(files):
        return list(files)
    step = len(files) / n
    return [files[int(i * step)] for i in range(n)]


def evaluate_codec(
    codec: Codec,
    files: list[Path],
    max_files: int | None = None,
    progress: bool = True,
) -> CodecReport:
    """Round-trip each of ``files`` (``max_files`` of them, evenly spaced, when given; see
    :func:`spread`) through ``codec``.

    Files that cannot be read are reported on stderr and listed in ``CodecReport.failed``;
    ``progress`` shows a progress bar on an interactive stderr.
    """
    from uniaudio_cli.batch import run_batch

    files = spread(list(files), max_files)
    cfg = codec.model.cfg
    counts = [np.zeros(k, dtype=np.int64) for k in cfg.codebook_sizes]
    clips: list[ClipResult] = []

    def collect(_path: Path, out: tuple[ClipResult, list[list[int]]]) -> None:
        clip, codes = out
        clips.append(clip)
        for layer, c in enumerate(codes):
            counts[layer] += np.bincount(np.asarray(c, dtype=np.int64), minlength=len(counts[layer]))

    if files:
        _warm_up(codec)
    batch = run_batch(files, lambda p: evaluate_clip(codec, p), collect, not progress, "evaluating")
    layers = [
        LayerStats(
            layer=i + 1,
            stride=stride,
            codebook_size=len(cnt),
            codes=int(cnt.sum()),
            distinct=int((cnt > 0).sum()),
            usage=float((cnt > 0).sum() / len(cnt)),
            entropy_bits=code_entropy(cnt),
            max_entropy_bits=math.log2(len(cnt)),
        )
        for i, (stride, cnt) in enumerate(zip(cfg.vq_strides, counts, strict=True))
    ]
    return CodecReport(
        codec=codec.source,
        sample_rate=codec.sample_rate,
        device=str(codec.device),
        clips=clips,
        layers=layers,
        failed=[(str(p), e) for p, e in batch.failed],
        pesq_skipped=sum(c.pesq is None for c in clips),
        stoi_skipped=sum(c.stoi is None for c in clips),
    )
