"""bench/stoi_bands.py: its per-band figures average to pystoi's STOI, and its references splice
the spectrum where they say."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("pystoi")


def _module():
    spec = importlib.util.spec_from_file_location("stoi_bands", ROOT / "bench" / "stoi_bands.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _speechlike(seconds: float, seed: int, sr: int = 16000) -> np.ndarray:
    """Noise shaped by a 4 Hz syllable envelope: enough non-silent frames for STOI."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    return (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) ** 2 * rng.standard_normal(len(t)) * 0.1


def test_bands_average_to_pystoi_and_undefined_on_short_clips() -> None:
    from pystoi import stoi

    mod = _module()
    ref = _speechlike(1.5, 0)
    deg = ref + _speechlike(1.5, 1) * 0.5
    bands, level_ref, level_deg = mod.band_intelligibility(ref, deg, 16000)
    assert bands.shape == level_ref.shape == level_deg.shape == (15,)
    assert bands.mean() == pytest.approx(stoi(ref, deg, 16000), abs=1e-9)
    same, _, _ = mod.band_intelligibility(ref, ref, 16000)
    assert np.allclose(same, 1.0)
    assert mod.band_intelligibility(ref[:3000], ref[:3000], 16000) is None


def test_spliced_keeps_each_side_of_the_split() -> None:
    mod = _module()
    sr = 16000
    t = np.arange(sr) / sr
    low_tone, high_tone = np.sin(2 * np.pi * 500 * t), np.sin(2 * np.pi * 3000 * t)
    both = mod.spliced(low_tone, high_tone, sr, 2200.0, None)
    neither = mod.spliced(high_tone, low_tone, sr, 2200.0, None)
    assert np.allclose(both[2000:-2000], (low_tone + high_tone)[2000:-2000], atol=1e-6)
    assert np.abs(neither[2000:-2000]).max() < 1e-6
    freqs = np.fft.rfftfreq(len(t) - 4000, 1 / sr)
    # A random phase above the split keeps the magnitude there and leaves the band below alone.
    mixed = low_tone + high_tone
    shuffled = mod.spliced(mixed, mixed, sr, 2200.0, np.random.default_rng(0))
    below = np.fft.rfft(shuffled[2000:-2000])[np.argmin(np.abs(freqs - 500))]
    assert abs(below) == pytest.approx(abs(np.fft.rfft(mixed[2000:-2000])[np.argmin(np.abs(freqs - 500))]), rel=0.02)
    assert not np.allclose(shuffled, mixed, atol=1e-3)


def test_floor_range_is_small_for_a_stationary_floor() -> None:
    mod = _module()
    rng = np.random.default_rng(0)
    floor = rng.standard_normal(16000) * 0.01
    bursts = _speechlike(1.0, 2)
    assert mod.floor_range_db(floor, 16000) < 8.0
    assert mod.floor_range_db(bursts, 16000) > 15.0
