"""Training data: labelled audio folders cached in memory, cut into random fixed-length segments.

A data folder is either in the layout of the shared development data (``metadata.csv`` with
``path,label,seconds,...`` and one sub-folder per label) or any folder of audio files, whose
label is then each file's parent folder name. A folder without ``metadata.csv`` whose
sub-folders have one (e.g. the shared data root) is expanded into those sub-folders, so that
their metadata, and with it the held-out rules, still apply.

Every clip also gets a *semantic target text* (see :func:`target_text`) that the trainer
embeds with the frozen LLM for the layer-1 semantic loss.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from uniaudio_cli.errors import AudioError, UsageError

log = logging.getLogger(__name__)

METADATA_FILE = "metadata.csv"
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".au", ".opus", ".w64", ".caf"}
TEXT_COLUMNS = ("text", "transcript", "transcription", "sentence", "caption")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
RAVDESS_EMOTIONS = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgust",
    "08": "surprised",
}
RAVDESS_STATEMENTS = {"01": "kids are talking by the door", "02": "dogs are sitting by the door"}
_RAVDESS_NAME = re.compile(r"^\d{2}(?:-\d{2}){6}$")
# FSDD file names are {digit}_{speaker}_{index}.
_FSDD_NAME = re.compile(r"^(\d)_([a-z]+)_(\d+)$")

#: Speed perturbation's factors as ``(up, down)`` resampling ratios: a segment of ``T * down / up``
#: samples is resampled to ``T``, so it plays 0.9 / 0.95 / 1.05 / 1.1 times as fast, with its pitch
#: and formants moved by as much (the three-way 0.9 / 1.0 / 1.1 of ASR recipes, two steps finer).
#: Rational ratios let a polyphase filter do it without the aliasing of linear interpolation.
SPEED_FACTORS: tuple[tuple[int, int], ...] = ((10, 9), (20, 19), (20, 21), (10, 11))

#: Sample rate a band-limited training segment passes through: the rate FSDD and telephone
#: speech were recorded at, so such a segment has nothing above 4 kHz, as theirs have not.
NARROW_RATE = 8000

#: A random channel (:meth:`SegmentDataset._channel_eq`): a spectral tilt of up to this many dB per
#: octave around 1 kHz, and one bell up to ``EQ_BELL_DB`` dB at 200 Hz-5 kHz, an octave wide;
#: the whole curve limited to ``EQ_LIMIT_DB``. Microphones and rooms differ about this much.
EQ_TILT_DB_PER_OCTAVE = 3.0
EQ_BELL_DB = 6.0
EQ_LIMIT_DB = 12.0

#: A random room (:meth:`SegmentDataset._reverb`): a synthetic impulse response, the direct sound
#: then exponentially decaying noise from ``REVERB_PREDELAY_S`` on, with a reverberation time
#: (RT60) drawn from ``REVERB_RT60_S`` and a direct-to-reverberant energy ratio from
#: ``REVERB_DRR_DB``: small rooms to a large office, the speaker near the microphone to a few
#: metres away, as read speech is recorded in.
REVERB_RT60_S = (0.15, 0.6)
REVERB_DRR_DB = (0.0, 12.0)
REVERB_PREDELAY_S = 0.003


#: FSDD speakers kept out of training for evaluation.
HELD_OUT_FSDD_SPEAKERS = frozenset({"nicolas"})


@dataclass
class ClipInfo:
    """One audio file found in a data folder.

    Attributes:
        source: name of the data folder it came from (e.g. ``fsdd``).
        path: absolute path of the file.
        label: class label (the ``label`` column, else the parent folder name).
        row: the file's ``metadata.csv`` row (empty without metadata).
    """

    source: str
    path: Path
    label: str
    row: dict[str, str] = field(default_factory=dict)


HELD_OUT_ESC_FOLDS = frozenset({"3"})
HELD_OUT_RAVDESS_ACTORS = frozenset({"11", "12"})


def default_exclude(info: ClipInfo) -> bool:
    """The default held-out rule.

    * FSDD speaker ``nicolas`` (``speaker`` column or the ``{digit}_{speaker}_{n}`` file name).
    * LibriSpeech test-other excerpts. In the shared ``librispeech/metadata.csv`` the
      train-clean-100 rows have ``split = librispeech_train-clean-100`` while the test-other
      excerpts carry their numeric speaker id in ``split``; a numeric ``split`` is held out.
    * ESC-10 fold 3 and RAVDESS actors 11-12: the few-shot classification figures are measured
      on them, and the semantic loss sees class labels, so they must stay out of training.
    """
    if info.row.get("fold", "").strip() in HELD_OUT_ESC_FOLDS:
        return True
    if info.row.get("actor", "").strip() in HELD_OUT_RAVDESS_ACTORS:
        return True
    speaker = info.row.get("speaker")
    if speaker is None:
        m = _FSDD_NAME.match(info.path.stem)
        speaker = m.group(2) if m else None
    if speaker in HELD_OUT_FSDD_SPEAKERS:
        return True
    split = info.row.get("split", "").strip()
    return split.isdigit()


def target_text(info: ClipInfo) -> str:
    """The text whose LLM embedding layer 1 of the codec is pulled towards, lower case.

    In order: a transcript column of ``metadata.csv`` (``text``, ``transcript``, ...); a
    RAVDESS file name (modality-vocal-emotion-intensity-statement-repetition-actor) gives
    ``"<emotion>, <sentence>"``; a one-digit label (FSDD) its number word; a numeric label
    (a LibriSpeech speaker id) or a LibriSpeech folder the generic ``"speech"``; any other label
    itself with ``_`` read as a space (``dog_bark`` -> ``"dog bark"``).
    """
    for col in TEXT_COLUMNS:
        text = (info.row.get(col) or "").strip()
        if text:
            return text.lower()
    stem = info.path.stem
    if _RAVDESS_NAME.match(stem):
        fields = stem.split("-")
        emotion = info.label if info.label and not info.label.isdigit() else RAVDESS_EMOTIONS.get(fields[2], "")
        sentence = RAVDESS_STATEMENTS.get(fields[4], "")
        return ", ".join(p for p in (emotion.replace("_", " ").lower(), sentence) if p) or "speech"
    label = info.label.strip()
    if len(label) == 1 and label.isdigit():
        return NUMBER_WORDS[int(label)]
    if label.isdigit() or "librispeech" in info.source.lower():
        return "speech"
    return label.replace("_", " ").replace("-", " ").lower() or "sound"


def _metadata_clips(folder: Path) -> list[ClipInfo]:
    with open(folder / METADATA_FILE, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "path" not in reader.fieldnames:
            raise UsageError(
                f"{folder / METADATA_FILE}: no 'path' column",
                "metadata.csv needs a header with at least path,label",
            )
        clips = []
        for row in reader:
            rel = row["path"]
            label = row.get("label") or Path(rel).parent.name
            clips.append(ClipInfo(folder.name, folder / rel, label, dict(row)))
    return clips


def _scan_clips(folder: Path, skip: Sequence[Path] = ()) -> list[ClipInfo]:
    out = []
    for p in sorted(folder.rglob("*")):
        if p.suffix.lower() not in AUDIO_SUFFIXES or not p.is_file():
            continue
        if any(p.is_relative_to(s) for s in skip):
            continue
        out.append(ClipInfo(folder.name, p, p.parent.name))
    return out


def discover_clips(data_dirs: Iterable[str | Path]) -> list[ClipInfo]:
    """All audio files of ``data_dirs`` (see the module docstring for the accepted layouts)."""
    clips: list[ClipInfo] = []
    for d in data_dirs:
        folder = Path(d).expanduser()
        if not folder.is_dir():
            raise UsageError(f"{folder}: not a folder", "pass folders of audio files to --data")
        if (folder / METADATA_FILE).is_file():
            clips += _metadata_clips(folder)
            continue
        subsets = sorted(p for p in folder.iterdir() if p.is_dir() and (p / METADATA_FILE).is_file())
        for sub in subsets:
            clips += _metadata_clips(sub)
        clips += _scan_clips(folder, subsets)
    return clips


def _read_int16(path: Path, sample_rate: int) -> np.ndarray:
    """``(T,)`` int16 mono at ``sample_rate``; reads PCM directly when no conversion is needed."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
        if info.samplerate == sample_rate and info.channels == 1 and info.subtype.startswith("PCM"):
            return sf.read(str(path), dtype="int16")[0]
    except Exception:
        pass
    from uniaudio_cli.audio import load_audio

    wav = load_audio(path, sample_rate, allow_silence=True)
    return (np.clip(wav, -1.0, 1.0) * 32767.0).astype(np.int16)


def _with_rows(x: np.ndarray, rows: np.ndarray, new: np.ndarray) -> np.ndarray:
    """A copy of ``x`` ``(B, T)`` with ``new`` ``(rows.sum(), T)`` in the chosen rows, each scaled
    down where its peak passes 0.99 (a filter can raise a segment's peaks past full scale)."""
    peak = np.abs(new).max(axis=1, keepdims=True)
    new = np.where(peak > 0.99, new * 0.99 / np.maximum(peak, 1e-8), new)
    x = x.copy()
    x[rows] = new.astype(np.float32)
    return x


def check_probability(option: str, p: float) -> float:
    """Refuse a training augmentation's probability outside 0..1, naming its option."""
    if not 0.0 <= p <= 1.0:
        raise UsageError(f"{option} {p:g}: not a probability", "pass a value between 0 and 1")
    return float(p)


def check_noise_floor(probability: float, snr_db: tuple[float, float]) -> tuple[float, float]:
    """Refuse a noise-floor probability outside 0..1, or an SNR range that is not ``LO <= HI``
    within -10..80 dB; returns the range as floats. One rule for ``train-codec`` (checked before
    any work) and :class:`SegmentDataset`."""
    check_probability("--noise-floor", probability)
    lo, hi = float(snr_db[0]), float(snr_db[1])
    if lo > hi or lo < -10.0 or hi > 80.0:
        raise UsageError(f"--noise-snr {lo:g} {hi:g}: not a range in dB", "pass LO HI with LO <= HI, e.g. 10 40")
    return lo, hi


def colored_noise(rng: np.random.Generator, rows: int, n: int, alpha: np.ndarray, sample_rate: int) -> np.ndarray:
    """Stationary Gaussian noise ``(rows, n)`` float32, unit RMS per row, whose power spectrum
    falls as ``f ** -alpha[row]`` (0: white, 1: pink, 2: brown) above 50 Hz and is flat below,
    so a steep slope is not all rumble."""
    spec = np.fft.rfft(rng.standard_normal((rows, n)), axis=1)
    f = np.maximum(np.fft.rfftfreq(n, 1.0 / sample_rate), 50.0)
    spec *= f[None, :] ** (-np.asarray(alpha, dtype=np.float64)[:, None] / 2.0)
    out = np.fft.irfft(spec, n, axis=1)
    out /= np.sqrt(np.mean(out**2, axis=1, keepdims=True)).clip(1e-12)
    return out.astype(np.float32)


def active_level(x: np.ndarray, frame: int) -> np.ndarray:
    """RMS of the loudest fifth of each row's ``frame``-sample frames: ``(B, T)`` -> ``(B, 1)``.

    The level of the sound itself, whatever silence (or zero padding) surrounds it."""
    b, t = x.shape
    n = max(t // frame, 1)
    energy = np.sort(np.mean(x[:, : n * frame].reshape(b, n, -1) ** 2, axis=2), axis=1)
    top = energy[:, -max(n // 5, 1) :]
    return np.sqrt(top.mean(axis=1, keepdims=True))


class SegmentDataset(torch.utils.data.Dataset):
    """Labelled clips cached as int16, served as random fixed-length segments.

    ``dataset[i]`` is a random segment of clip ``i``: ``(wav (1, T) float32, text)``. The trainer
    uses :meth:`sample_batch` instead, which draws clips in proportion to their duration and is
    driven by an explicit generator so that a resumed run sees the same batches.

    Args:
        data_dirs: data folders (see :func:`discover_clips`).
        segment_samples: segment length T; shorter clips are zero-padded at a random offset.
        sample_rate: audio is converted to this rate.
        exclude: clips for which this returns True are dropped (default: :func:`default_exclude`;
            pass ``lambda c: False`` to keep everything).
        gain_db: random gain range in dB applied per segment (peaks are kept below 0 dBFS).
        seed: seed of the generator used by ``__getitem__``.
        noise_floor: probability that a segment gets a stationary noise floor (white to brown,
            :func:`colored_noise`) added over its whole length, input and target alike, at
            ``noise_snr_db`` (uniform) below its :func:`active_level`. Real recordings have
            such a floor, and the codec has to reproduce it; 0 (default) draws nothing, so a
            run without it sees exactly the batches it saw before this option existed.
        noise_snr_db: the range of that floor's level below the sound's, in dB.
        speed_perturb: probability that a segment is played faster or slower by one of
            :data:`SPEED_FACTORS` (input and target alike): new voices from the same speakers,
            as speed perturbation gives ASR training. 0 (default) draws nothing, so a run without
            it sees exactly the batches it saw before this option existed.
        band_limit: probability that a segment is band-limited as an 8 kHz recording is
            (down to :data:`NARROW_RATE` and back, input and target alike): the many training
            voices heard through the channel that only a few recorded speakers have. 0 (default)
            draws nothing, as ``speed_perturb``.
        channel_eq: probability that a segment is heard through a random channel (a smooth
            zero-phase equaliser, :data:`EQ_TILT_DB_PER_OCTAVE` and :data:`EQ_BELL_DB`), input
            and target alike: the same voices as other microphones record them. 0 (default)
            draws nothing.
        reverb: probability that a segment is heard in a random room (a synthetic impulse
            response, :data:`REVERB_RT60_S` and :data:`REVERB_DRR_DB`), input and target alike:
            recordings made away from the microphone. 0 (default) draws nothing.
    """

    def __init__(
        self,
        data_dirs: Iterable[str | Path],
        segment_samples: int,
        sample_rate: int = 16000,
        exclude: Callable[[ClipInfo], bool] | None = default_exclude,
        gain_db: tuple[float, float] = (-12.0, 3.0),
        seed: int = 0,
        noise_floor: float = 0.0,
        noise_snr_db: tuple[float, float] = (10.0, 40.0),
        speed_perturb: float = 0.0,
        band_limit: float = 0.0,
        channel_eq: float = 0.0,
        reverb: float = 0.0,
    ) -> None:
        self.noise_snr_db = check_noise_floor(noise_floor, noise_snr_db)
        self.speed_perturb = check_probability("--speed-perturb", speed_perturb)
        self.band_limit = check_probability("--band-limit", band_limit)
        self.channel_eq = check_probability("--channel-eq", channel_eq)
        self.reverb = check_probability("--reverb", reverb)
        self.noise_floor = float(noise_floor)
        self.segment_samples = int(segment_samples)
        self.sample_rate = sample_rate
        self.gain_db = gain_db
        self.rng = np.random.default_rng(seed)
        data_dirs = list(data_dirs)
        #: the training folders, resolved; a resumed run checks it against :meth:`fingerprint`.
        self.dirs = [str(Path(d).resolve()) for d in data_dirs]
        found = discover_clips(data_dirs)
        kept = [c for c in found if exclude is None or not exclude(c)]
        if len(found) != len(kept):
            log.info("held out %d of %d clips", len(found) - len(kept), len(found))
        self.infos: list[ClipInfo] = []
        self.audio: list[np.ndarray] = []
        for info in kept:
            try:
                wav = _read_int16(info.path, sample_rate)
            except AudioError as e:
                log.warning("skipping %s", e.one_line())
                continue
            if wav.size == 0:
                continue
            self.infos.append(info)
            self.audio.append(wav)
        if not self.audio:
            raise UsageError("no readable audio in the training folders", "check the --data folders")
        texts = [target_text(i) for i in self.infos]
        #: distinct target texts; ``text_ids[i]`` indexes this list for clip ``i``.
        self.texts: list[str] = sorted(set(texts))
        index = {t: k for k, t in enumerate(self.texts)}
        self.text_ids = np.array([index[t] for t in texts], dtype=np.int64)
        # Sampling range of each clip; a validation split may reserve the end of a long clip.
        self.train_end = np.array([a.size for a in self.audio], dtype=np.int64)
        self._update_weights()
        log.info(
            "training data: %d clips, %.2f h, %d distinct target texts",
            len(self.audio),
            self.hours,
            len(self.texts),
        )

    def fingerprint(self) -> dict[str, Any]:
        """What a training state records of its data: the folders, and the clip count and total
        samples that decide which batches a seeded run draws."""
        return {
            "dirs": self.dirs,
            "clips": len(self.audio),
            "samples": int(sum(a.size for a in self.audio)),
            "sample_rate": self.sample_rate,
        }

    @property
    def hours(self) -> float:
        return float(sum(a.size for a in self.audio)) / self.sample_rate / 3600.0

    def __len__(self) -> int:
        return len(self.audio)

    def _update_weights(self) -> None:
        # Drawing clips in proportion to duration samples the audio uniformly in time, so 2000
        # half-second digits do not outweigh an hour of speech; a floor of one segment keeps
        # very short clips from vanishing.
        w = np.maximum(self.train_end, self.segment_samples // 4).astype(np.float64)
        w[self.train_end == 0] = 0.0
        self._cdf = np.cumsum(w / w.sum())
        self._cdf[-1] = 1.0

    def split_validation(self, n: int, seed: int = 1234) -> tuple[torch.Tensor, torch.Tensor]:
        """Reserve ``n`` fixed segments for validation and return them.

        Clips are picked round-robin over the data folders. From a clip at least four segments
        long only its last segment is reserved (training samples from the rest); a shorter clip
        is withdrawn from training entirely.

        Returns:
            ``(wav (n, 1, T) float32, text_ids (n,))``.
        """
        rng = np.random.default_rng(seed)
        by_source: dict[str, list[int]] = {}
        for i, info in enumerate(self.infos):
            by_source.setdefault(info.source, []).append(i)
        queues = [list(rng.permutation(v)) for _, v in sorted(by_source.items())]
        picked: list[int] = []
        while len(picked) < n and any(queues):
            for q in queues:
                if q and len(picked) < n:
                    picked.append(int(q.pop()))
        if len(picked) >= len(self.audio):
            raise UsageError(
                "too little data for a validation split",
                "add clips to the --data folders (TrainConfig.val_segments sets the split's size)",
            )
        T = self.segment_samples
        wav = np.zeros((len(picked), 1, T), dtype=np.float32)
        for k, i in enumerate(picked):
            a = self.audio[i]
            if a.size >= 4 * T:
                wav[k, 0] = a[a.size - T :] / 32768.0
                self.train_end[i] = a.size - T
            else:
                seg = a[:T]
                wav[k, 0, : seg.size] = seg / 32768.0
                self.train_end[i] = 0
        self._update_weights()
        return torch.from_numpy(wav), torch.from_numpy(self.text_ids[picked].copy())

    def _segment(self, i: int, rng: np.random.Generator, out: np.ndarray) -> None:
        a = self.audio[i]
        end = int(self.train_end[i])
        T = out.size
        out[:] = 0
        if end >= T:
            start = int(rng.integers(0, end - T + 1))
            out[:] = a[start : start + T]
        else:
            pos = int(rng.integers(0, T - end + 1))
            out[pos : pos + end] = a[:end]

    def _segment_at_speed(self, i: int, rng: np.random.Generator, out: np.ndarray, up: int, down: int) -> None:
        """:meth:`_segment` played ``down / up`` times as fast: ``T * down / up`` samples of clip
        ``i`` resampled to ``out``'s ``T``."""
        from scipy.signal import resample_poly

        T = out.size
        src = np.empty(-(-T * down // up), dtype=np.int16)
        self._segment(i, rng, src)
        # ceil(T * down / up) samples resample to at least T.
        y = resample_poly(src.astype(np.float32), up, down)[:T]
        out[:] = np.clip(np.rint(y), -32768, 32767).astype(np.int16)

    def _to_float(self, seg: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``(B, T)`` int16 -> float32 with a random per-row gain, peaks kept under 0.99 (and,
        with ``noise_floor``, a noise floor added first)."""
        x = seg.astype(np.float32) * (1.0 / 32768.0)
        if self.noise_floor > 0.0:
            x = self._add_noise_floor(x, rng)
        gain = 10.0 ** (rng.uniform(self.gain_db[0], self.gain_db[1], size=(x.shape[0], 1)) / 20.0)
        peak = np.abs(x).max(axis=1, keepdims=True) * gain
        gain = np.where(peak > 0.99, gain * 0.99 / np.maximum(peak, 1e-8), gain)
        return (x * gain).astype(np.float32)

    def _add_noise_floor(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        rows = np.flatnonzero(rng.random(x.shape[0]) < self.noise_floor)
        if rows.size == 0:
            return x
        snr = rng.uniform(self.noise_snr_db[0], self.noise_snr_db[1], size=(rows.size, 1))
        alpha = rng.uniform(0.0, 2.0, size=rows.size)
        noise = colored_noise(rng, rows.size, x.shape[1], alpha, self.sample_rate)
        level = active_level(x[rows], self.sample_rate // 50) * 10.0 ** (-snr / 20.0)
        x = x.copy()
        x[rows] += (noise * level).astype(np.float32)
        return x

    def sample_batch(self, rng: np.random.Generator, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A random batch: ``(wav (B, 1, T) float32, text_ids (B,) int64)``."""
        idx = np.searchsorted(self._cdf, rng.random(batch_size), side="right")
        idx = np.minimum(idx, len(self.audio) - 1)
        seg = np.empty((batch_size, self.segment_samples), dtype=np.int16)
        if self.speed_perturb > 0.0:
            faster = rng.random(batch_size) < self.speed_perturb
            which = rng.integers(0, len(SPEED_FACTORS), size=batch_size)
        for row, i in enumerate(idx):
            if self.speed_perturb > 0.0 and faster[row]:
                self._segment_at_speed(int(i), rng, seg[row], *SPEED_FACTORS[int(which[row])])
            else:
                self._segment(int(i), rng, seg[row])
        wav = self._to_float(seg, rng)
        if self.band_limit > 0.0:
            wav = self._band_limit(wav, rng.random(batch_size) < self.band_limit)
        if self.channel_eq > 0.0:
            wav = self._channel_eq(wav, rng, rng.random(batch_size) < self.channel_eq)
        if self.reverb > 0.0:
            wav = self._reverb(wav, rng, rng.random(batch_size) < self.reverb)
        return torch.from_numpy(wav).unsqueeze(1), torch.from_numpy(self.text_ids[idx])

    def _band_limit(self, x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """``(B, T)`` with the chosen rows passed through :data:`NARROW_RATE` and back."""
        if not rows.any():
            return x
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(self.sample_rate, NARROW_RATE)
        up, down = NARROW_RATE // g, self.sample_rate // g
        T = x.shape[1]
        narrow = resample_poly(x[rows], up, down, axis=1)
        x = x.copy()
        x[rows] = resample_poly(narrow, down, up, axis=1)[:, :T].astype(np.float32)
        return x

    def _channel_eq(self, x: np.ndarray, rng: np.random.Generator, rows: np.ndarray) -> np.ndarray:
        """``(B, T)`` with the chosen rows through random smooth equalisers (peaks kept under 0.99)."""
        n = int(rows.sum())
        if n == 0:
            return x
        T = x.shape[1]
        freqs = np.fft.rfftfreq(T, 1.0 / self.sample_rate)
        octaves = np.log2(np.maximum(freqs, 20.0) / 1000.0)[None, :]
        tilt = rng.uniform(-EQ_TILT_DB_PER_OCTAVE, EQ_TILT_DB_PER_OCTAVE, size=(n, 1))
        centre = rng.uniform(np.log2(0.2), np.log2(5.0), size=(n, 1))  # octaves from 1 kHz
        bell = rng.uniform(-EQ_BELL_DB, EQ_BELL_DB, size=(n, 1))
        # A Gaussian bell in log-frequency, an octave wide at half its height.
        db = tilt * octaves + bell * np.exp(-0.5 * ((octaves - centre) / 0.425) ** 2)
        gain = 10.0 ** (np.clip(db, -EQ_LIMIT_DB, EQ_LIMIT_DB) / 20.0)
        return _with_rows(x, rows, np.fft.irfft(np.fft.rfft(x[rows], axis=1) * gain, n=T, axis=1))

    def room_response(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` random impulse responses ``(n, L)``, ``L`` the samples of the longest RT60: a unit
        direct sound at sample 0, then Gaussian noise decaying 60 dB over each drawn RT60, scaled
        to each drawn direct-to-reverberant ratio."""
        sr = self.sample_rate
        length = int(REVERB_RT60_S[1] * sr)
        t = np.arange(length) / sr
        rt60 = rng.uniform(*REVERB_RT60_S, size=(n, 1))
        drr_db = rng.uniform(*REVERB_DRR_DB, size=(n, 1))
        tail = rng.standard_normal((n, length)) * 10.0 ** (-3.0 * t / rt60)
        tail[:, : int(REVERB_PREDELAY_S * sr)] = 0.0
        tail *= np.sqrt(10.0 ** (-drr_db / 10.0) / np.maximum((tail**2).sum(axis=1, keepdims=True), 1e-12))
        tail[:, 0] = 1.0
        return tail

    def _reverb(self, x: np.ndarray, rng: np.random.Generator, rows: np.ndarray) -> np.ndarray:
        """``(B, T)`` with the chosen rows in random rooms (:meth:`room_response`), each at its
        dry level (RMS) with peaks under 0.99."""
        n = int(rows.sum())
        if n == 0:
            return x
        from scipy.signal import fftconvolve

        dry = x[rows].astype(np.float64)
        wet = fftconvolve(dry, self.room_response(rng, n), axes=1)[:, : x.shape[1]]
        rms = np.sqrt((dry**2).mean(axis=1, keepdims=True) / np.maximum((wet**2).mean(axis=1, keepdims=True), 1e-12))
        return _with_rows(x, rows, wet * rms)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        seg = np.empty((1, self.segment_samples), dtype=np.int16)
        self._segment(i, self.rng, seg[0])
        wav = self._to_float(seg, self.rng)
        return torch.from_numpy(wav), self.texts[int(self.text_ids[i])]
