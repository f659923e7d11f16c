"""Where a codec's STOI goes, band by band: STOI's intermediate intelligibility in each of its 15
third-octave bands (150 Hz-4.3 kHz), for the codec and for references that tell what a band can
give at all, with the input's and the output's level in each band.

    OMP_NUM_THREADS=2 python bench/stoi_bands.py [DIR ...] [--codec PATH] [--split-hz 2200]

DIR defaults to the held-out FSDD and LibriSpeech sets (``python bench/heldout.py``); any folder of
clips works (e.g. one FSDD training speaker's). Only clips on which STOI is defined count (30
frames of speech after its silence removal). STOI is the mean of the per-band figures printed
here, which come from the same steps as ``pystoi.stoi`` (its helpers; checked against it per set).

Rows per set:
- ``codec``: the decoded codes, as shipped.
- ``codec, input STFT above X``: the codec's output below ``--split-hz`` and the input above it
  (how much fixing the upper bands alone is worth).
- ``codec, input magnitude above X, random phase``: the same with the input's STFT magnitude
  (32 ms frames) but a random phase: what even exact magnitudes without the waveform give there.
- ``input, random phase above X``: the input itself treated so.

Also printed per set: the level range of the 3.4-3.9 kHz band (95th minus 10th percentile of 16 ms
frames, mean over clips): a few dB means a stationary floor fills that band under the speech.
"""

from __future__ import annotations

import argparse
import functools
import importlib
from pathlib import Path
from typing import Any

import numpy as np
import scipy.signal as ss
import torch

from uniaudio_cli.audio import load_audio
from uniaudio_cli.codec.api import load_codec
from uniaudio_cli.evaluate.codec_eval import stoi_score

ROOT = Path(__file__).resolve().parents[1]
HELDOUT = ROOT / ".data" / "heldout" / "speech"
N_FFT = 512  # the references' STFT: 32 ms at 16 kHz


@functools.cache
def _stoi_bands() -> tuple[Any, np.ndarray, np.ndarray]:
    """pystoi's ``stoi`` module (its constants), its third-octave band matrix ``(15, NFFT / 2 + 1)``
    and the bands' centre frequencies ``(15,)``: made once, not per clip."""
    from pystoi import utils

    stoi_module = importlib.import_module("pystoi.stoi")  # the module; ``pystoi.stoi`` is its function
    obm, centres = utils.thirdoct(stoi_module.FS, stoi_module.NFFT, stoi_module.NUMBAND, stoi_module.MINFREQ)
    return stoi_module, obm, centres


def band_intelligibility(ref: np.ndarray, deg: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """STOI's intermediate intelligibility per third-octave band ``(15,)``, and the level in dB of
    ``ref`` and ``deg`` per band over the frames STOI keeps ``(15,)`` each; ``None`` where STOI is
    undefined. ``ref``, ``deg``: ``(T,)`` at ``sr``."""
    from pystoi import utils

    stoi_module, obm, _ = _stoi_bands()
    fs, frame, nfft, n = stoi_module.FS, stoi_module.N_FRAME, stoi_module.NFFT, stoi_module.N
    x = utils.resample_oct(np.asarray(ref, dtype=np.float64), fs, sr)
    y = utils.resample_oct(np.asarray(deg, dtype=np.float64), fs, sr)
    x, y = utils.remove_silent_frames(x, y, stoi_module.DYN_RANGE, frame, frame // 2)
    xs = utils.stft(x, frame, nfft, overlap=2).T
    ys = utils.stft(y, frame, nfft, overlap=2).T
    if xs.shape[-1] < n:
        return None
    xb = np.sqrt(obm @ np.abs(xs) ** 2)  # (bands, frames)
    yb = np.sqrt(obm @ np.abs(ys) ** 2)
    xseg = np.stack([xb[:, m - n : m] for m in range(n, xb.shape[1] + 1)])  # (segments, bands, n)
    yseg = np.stack([yb[:, m - n : m] for m in range(n, xb.shape[1] + 1)])
    eps = np.finfo(np.float64).eps
    yseg = yseg * np.linalg.norm(xseg, axis=2, keepdims=True) / (np.linalg.norm(yseg, axis=2, keepdims=True) + eps)
    yseg = np.minimum(yseg, xseg * (1 + 10 ** (-stoi_module.BETA / 20)))
    xseg = xseg - xseg.mean(axis=2, keepdims=True)
    yseg = yseg - yseg.mean(axis=2, keepdims=True)
    xseg /= np.linalg.norm(xseg, axis=2, keepdims=True) + eps
    yseg /= np.linalg.norm(yseg, axis=2, keepdims=True) + eps
    per_band = (xseg * yseg).sum(axis=2).mean(axis=0)
    return per_band, 10 * np.log10((xb**2).mean(axis=1) + 1e-20), 10 * np.log10((yb**2).mean(axis=1) + 1e-20)


def band_centres() -> np.ndarray:
    """Centre frequencies (Hz) of STOI's 15 bands."""
    return np.asarray(_stoi_bands()[2])


def spliced(low: np.ndarray, high: np.ndarray, sr: int, split_hz: float, rng: np.random.Generator | None) -> np.ndarray:
    """``low``'s STFT below ``split_hz`` and ``high``'s above it (with a random phase there when
    ``rng`` is given); both ``(T,)``, the result ``(T,)``."""
    f, _, lo = ss.stft(low, sr, nperseg=N_FFT)
    _, _, hi = ss.stft(high, sr, nperseg=N_FFT)
    if rng is not None:
        hi = np.abs(hi) * np.exp(2j * np.pi * rng.random(hi.shape))
    z = np.where(f[:, None] >= split_hz, hi, lo)
    return ss.istft(z, sr, nperseg=N_FFT)[1][: len(low)]


def floor_range_db(wav: np.ndarray, sr: int, lo_hz: float = 3400.0, hi_hz: float = 3900.0) -> float:
    """95th minus 10th percentile of the ``lo_hz``-``hi_hz`` band's level over 16 ms frames."""
    f, _, z = ss.stft(wav, sr, nperseg=256)
    level = 10 * np.log10((np.abs(z[(f >= lo_hz) & (f < hi_hz)]) ** 2).sum(axis=0) + 1e-20)
    return float(np.percentile(level, 95) - np.percentile(level, 10))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dirs", type=Path, nargs="*", default=[HELDOUT / "fsdd", HELDOUT / "librispeech"])
    ap.add_argument("--codec", default=None, help="codec folder (default: the shipped codec)")
    ap.add_argument("--split-hz", type=float, default=2200.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(2)
    codec = load_codec(args.codec, device="cpu")
    sr = codec.sample_rate
    centres = band_centres()
    split = f"{args.split_hz / 1000:g} kHz"
    names = (
        "codec",
        f"codec, input STFT above {split}",
        f"codec, input magnitude above {split}, random phase",
        f"input, random phase above {split}",
    )
    for folder in args.dirs:
        rng = np.random.default_rng(args.seed)
        files = sorted(folder.rglob("*.flac"))
        if not files:
            raise SystemExit(f"{folder}: no .flac files (python bench/heldout.py makes the held-out sets)")
        results: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {k: [] for k in names}
        ranges, stoi_check = [], []
        for path in files:
            wav = load_audio(path, sr).astype(np.float64)
            out = np.asarray(codec.decode(codec.encode(wav.astype(np.float32)), len(wav)), dtype=np.float64)
            first = band_intelligibility(wav, out, sr)
            if first is None:
                continue
            stoi_check.append((first[0].mean(), stoi_score(wav, out, sr)))
            ranges.append(floor_range_db(wav, sr))
            variants = (
                out,
                spliced(out, wav, sr, args.split_hz, None),
                spliced(out, wav, sr, args.split_hz, rng),
                spliced(wav, wav, sr, args.split_hz, rng),
            )
            for name, deg in zip(names, variants, strict=True):
                got = first if deg is out else band_intelligibility(wav, deg, sr)
                if got is not None:
                    results[name].append(got)
        if not stoi_check:
            print(f"## {folder}: STOI is defined on none of its {len(files)} clips\n")
            continue
        check = np.array(stoi_check)
        print(f"## {folder} ({len(check)} of {len(files)} clips with STOI)\n")
        print(
            f"STOI {check[:, 0].mean():.4f} (pystoi: {check[:, 1].mean():.4f}); "
            f"3.4-3.9 kHz level range {np.mean(ranges):.1f} dB\n"
        )
        mean = {k: np.mean([r[0] for r in v], axis=0) for k, v in results.items()}
        level_in = np.mean([r[1] for r in results["codec"]], axis=0)
        level_out = np.mean([r[2] for r in results["codec"]], axis=0)
        top = level_in.max()
        print("| band (Hz) | input dB | codec dB | " + " | ".join(names) + " |")
        print("|---" * (3 + len(names)) + "|")
        for i, c in enumerate(centres):
            cells = " | ".join(f"{mean[k][i]:.3f}" for k in names)
            print(f"| {c:.0f} | {level_in[i] - top:.1f} | {level_out[i] - top:.1f} | {cells} |")
        print("| **STOI** | | | " + " | ".join(f"**{mean[k].mean():.4f}**" for k in names) + " |\n")


if __name__ == "__main__":
    main()
