"""Small audio features in NumPy: librosa's MFCC and DTW cost, without importing librosa.

``import librosa.feature`` pulls in scipy.signal, scipy.stats and numba: 2-4 s on a laptop CPU,
more than everything else a warm ``uniaudio tts "1+1"`` does after loading the models. These
functions reproduce what the tasks use of librosa (``librosa.feature.mfcc`` with its defaults
and ``librosa.sequence.dtw``'s total cost) to float rounding; ``tests/test_features.py``
checks them against librosa.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


def _hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    # Slaney scale: linear below 1 kHz, logarithmic above.
    f = np.asarray(f, dtype=np.float64)
    mel = f / (200.0 / 3)
    log_region = f >= 1000.0
    return np.where(log_region, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0), mel)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), m * (200.0 / 3))


@lru_cache(maxsize=16)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int = 128) -> np.ndarray:
    """Slaney-style, area-normalised mel filters ``(n_mels, n_fft // 2 + 1)`` float64, 0 Hz to
    Nyquist: the matrix of ``librosa.filters.mel`` (which DAC uses). Read-only (it is cached)."""
    fft_freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper)) * (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]
    weights.flags.writeable = False
    return weights


@lru_cache(maxsize=8)
def _dct_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Orthonormal DCT-II, ``(n_out, n_in)``: row ``k`` is basis function ``k``."""
    k = np.arange(n_out)[:, None]
    n = np.arange(n_in)[None, :]
    m = np.cos(np.pi * k * (2 * n + 1) / (2 * n_in)) * np.sqrt(2.0 / n_in)
    m[0] /= np.sqrt(2.0)
    return m


def mfcc(
    wav: np.ndarray, sample_rate: int, n_mfcc: int = 20, n_fft: int = 2048, hop_length: int = 512, n_mels: int = 128
) -> np.ndarray:
    """MFCCs ``(n_mfcc, frames)`` of a mono ``(T,)`` clip, as ``librosa.feature.mfcc`` with its
    defaults: periodic Hann window, frames centred with zero padding, power mel spectrogram
    (Slaney), dB with an 80 dB floor below the maximum, orthonormal DCT-II."""
    y = np.asarray(wav, dtype=np.float64)
    pad = n_fft // 2
    y = np.pad(y, pad) if len(y) else np.zeros(2 * pad)
    frames = 1 + (len(y) - n_fft) // hop_length
    idx = np.arange(n_fft)[None, :] + hop_length * np.arange(frames)[:, None]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    power = np.abs(np.fft.rfft(y[idx] * window, axis=1)) ** 2  # (frames, bins)
    mel = mel_filterbank(sample_rate, n_fft, n_mels) @ power.T  # (n_mels, frames)
    db = 10.0 * np.log10(np.maximum(mel, 1e-10))
    db = np.maximum(db, db.max() - 80.0)
    return _dct_matrix(n_mfcc, n_mels) @ db


def dtw_cost(x: np.ndarray, y: np.ndarray) -> float:
    """Total cost of the best monotonic alignment of feature sequences ``x`` ``(D, N)`` and
    ``y`` ``(D, M)`` under Euclidean frame distances, with steps (1, 1), (0, 1) and (1, 0) of
    weight 1: ``librosa.sequence.dtw(x, y, metric="euclidean")[0][-1, -1]``."""
    a, b = np.asarray(x, dtype=np.float64).T, np.asarray(y, dtype=np.float64).T
    cost = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))  # (N, M)
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(1, n + 1):
        # The diagonal and vertical steps come from the row above, all at once; the horizontal
        # step depends on this row's previous cell, so it runs along the row.
        row = cost[i - 1] + np.minimum(acc[i - 1, :-1], acc[i - 1, 1:])
        acc_i = acc[i]
        left = np.inf
        for j in range(m):
            left = min(row[j], cost[i - 1, j] + left)
            acc_i[j + 1] = left
    return float(acc[n, m])
