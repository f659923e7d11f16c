"""The NumPy MFCC and DTW of uniaudio_cli.features against librosa's, which they replace where
librosa's import time would dominate (the tts clip choice)."""

from __future__ import annotations

import warnings

import librosa
import numpy as np
import pytest

from uniaudio_cli.features import dtw_cost, mel_filterbank, mfcc

SR = 16000


def _clip(seed: int, seconds: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = rng.uniform(100, 300)
    x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 8)) * np.hanning(len(t))
    return (0.3 * x + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.mark.parametrize(("n_fft", "n_mels"), [(512, 128), (2048, 128), (400, 40)])
def test_mel_filterbank_matches_librosa(n_fft: int, n_mels: int) -> None:
    ours = mel_filterbank(SR, n_fft, n_mels)
    ref = librosa.filters.mel(sr=SR, n_fft=n_fft, n_mels=n_mels)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize(("seconds", "n_fft", "hop"), [(0.5, 512, 160), (1.3, 2048, 512), (0.02, 512, 160)])
def test_mfcc_matches_librosa(seconds: float, n_fft: int, hop: int) -> None:
    x = _clip(int(seconds * 100), seconds)
    ours = mfcc(x, SR, n_mfcc=20, n_fft=n_fft, hop_length=hop)
    with warnings.catch_warnings():  # librosa warns of a clip shorter than n_fft, the case compared
        warnings.simplefilter("ignore", UserWarning)
        ref = librosa.feature.mfcc(y=x, sr=SR, n_mfcc=20, n_fft=n_fft, hop_length=hop)
    assert ours.shape == ref.shape
    # librosa works in float32: agreement to its rounding, relative to the coefficients' scale.
    assert np.abs(ours - ref).max() < 1e-3 * np.abs(ref).max()


def test_mfcc_matches_librosa_across_digital_silence() -> None:
    """Exact zeros after a sound: the 80 dB floor below the loudest frame decides those frames."""
    x = np.concatenate([_clip(30, 0.3), np.zeros(int(0.3 * SR), dtype=np.float32)])
    ours = mfcc(x, SR, n_mfcc=20, n_fft=512, hop_length=160)
    ref = librosa.feature.mfcc(y=x, sr=SR, n_mfcc=20, n_fft=512, hop_length=160)
    assert np.abs(ours - ref).max() < 1e-3 * np.abs(ref).max()


def test_dtw_cost_matches_librosa() -> None:
    rng = np.random.default_rng(0)
    for n, m in [(1, 1), (1, 7), (9, 4), (37, 52)]:
        x, y = rng.standard_normal((19, n)), rng.standard_normal((19, m))
        ref = librosa.sequence.dtw(x, y, metric="euclidean")[0][-1, -1]
        assert dtw_cost(x, y) == pytest.approx(ref, rel=1e-9)
    z = rng.standard_normal((19, 12))
    assert dtw_cost(z, z) == 0.0
    # A sequence against a time-stretched copy of itself costs nothing: the path repeats frames.
    assert dtw_cost(z, np.repeat(z, 2, axis=1)) == pytest.approx(0.0, abs=1e-12)
