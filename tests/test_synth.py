"""espeak-ng synthesis, the synthetic training-speech folder, and the shipped prompt audio."""

from __future__ import annotations

import csv
import random
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from uniaudio_cli.errors import UniaudioError, UsageError
from uniaudio_cli.synth import (
    ENGLISH_VOICES,
    _fix_stream_header,
    espeak_available,
    synthesize,
    synthesize_fixed,
    trim_silence,
)
from uniaudio_cli.train.synth_data import make_synth_speech, number_words, random_sentence

PROMPTS = Path(__file__).resolve().parent.parent / "prompts"
needs_espeak = pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")


@needs_espeak
def test_synthesize_returns_float32_16k_speech() -> None:
    wav = synthesize("one plus one is two")
    assert wav.dtype == np.float32 and wav.ndim == 1
    # About a second of speech at 16 kHz, clearly audible.
    assert 0.5 * 16000 < len(wav) < 3 * 16000
    assert np.abs(wav).max() > 0.1
    # Silence at the ends is trimmed to ~50 ms: the first and last 40 ms are quiet, the middle is not.
    edge = int(0.04 * 16000)
    assert np.abs(wav[:edge]).max() < 0.05 and np.abs(wav[-edge:]).max() < 0.05


@needs_espeak
def test_synthesize_is_deterministic_and_voices_differ() -> None:
    a = synthesize("seven", voice="en-us+m3", speed=150, pitch=40)
    b = synthesize("seven", voice="en-us+m3", speed=150, pitch=40)
    c = synthesize("seven", voice="en-gb+f2", speed=150, pitch=40)
    np.testing.assert_array_equal(a, b)
    assert len(a) != len(c) or not np.array_equal(a, c)


@needs_espeak
def test_synthesize_other_rate_and_leading_dash() -> None:
    wav = synthesize("-five", sample_rate=8000)
    assert wav.dtype == np.float32 and 0.2 * 8000 < len(wav) < 1.5 * 8000


@needs_espeak
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"text": "  "}, "empty text"),
        ({"text": "hi", "voice": "xx-nonexistent"}, "unknown espeak-ng voice"),
        ({"text": "hi", "voice": "en-us+nonexistent"}, "unknown espeak-ng voice variant"),
        ({"text": "hi", "speed": 10}, "speed"),
        ({"text": "hi", "pitch": 200}, "pitch"),
    ],
)
def test_synthesize_rejects_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        synthesize(**kwargs)  # type: ignore[arg-type]


@needs_espeak
def test_every_listed_voice_speaks() -> None:
    for voice in ENGLISH_VOICES:
        assert np.abs(synthesize("hello", voice=voice)).max() > 0.05, voice


@needs_espeak
def test_synthesize_fixed_has_exact_length() -> None:
    wav, speed = synthesize_fixed("nine", 0.6, speed=120)
    assert len(wav) == round(0.6 * 16000) and speed >= 120
    assert wav[0] == 0 and wav[-1] == 0
    with pytest.raises(UsageError, match="does not fit"):
        synthesize_fixed("one two three four five six seven eight nine ten", 0.3)


def test_missing_espeak_gives_install_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no espeak-ng anywhere
    assert not espeak_available()
    with pytest.raises(UniaudioError, match="espeak-ng not found") as info:
        synthesize("hello")
    assert info.value.fix is not None and "apt-get install espeak-ng" in info.value.fix


def test_trim_silence_keeps_margins() -> None:
    sr = 16000
    tone = 0.5 * np.sin(2 * np.pi * 300 * np.arange(sr // 2) / sr).astype(np.float32)
    wav = np.concatenate([np.zeros(sr, np.float32), tone, np.zeros(sr // 100, np.float32)])
    out = trim_silence(wav, sr, keep_s=0.05)
    # 0.5 s of tone plus 50 ms each side (the short tail is zero-padded up to 50 ms); frames blur edges a little.
    assert abs(len(out) - (sr // 2 + 2 * 800)) <= 512
    assert out.dtype == np.float32


def test_stream_header_sizes_are_fixed() -> None:
    pcm = np.zeros(100, dtype="<i2").tobytes()
    fmt = struct.pack("<4sIHHIIHH", b"fmt ", 16, 1, 1, 22050, 44100, 2, 16)
    broken = b"RIFF" + struct.pack("<I", 0x7FFFFFFF) + b"WAVE" + fmt + b"data" + struct.pack("<I", 0x7FFFFFFF) + pcm
    fixed = _fix_stream_header(broken)
    assert struct.unpack_from("<I", fixed, 4)[0] == len(fixed) - 8
    assert struct.unpack_from("<I", fixed, 40)[0] == len(pcm)


def test_number_words_and_sentences() -> None:
    assert number_words(7) == "seven"
    assert number_words(42) == "forty two"
    assert number_words(305) == "three hundred and five"
    assert number_words(2019) == "two thousand and nineteen"
    first = [random_sentence(random.Random(3)) for _ in range(2)]
    assert first[0] == first[1]  # seeded
    rng = random.Random(0)
    assert len({random_sentence(rng) for _ in range(200)}) > 100  # varied


@needs_espeak
def test_make_synth_speech_layout(tmp_path: Path) -> None:
    meta = make_synth_speech(tmp_path / "synth", n_clips=3, seed=1)
    with meta.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3
    assert {"path", "label", "seconds", "text", "voice"} <= set(rows[0])
    for row in rows:
        path = tmp_path / "synth" / row["path"]
        assert path.parent.name == row["label"] == row["voice"] and row["voice"] in ENGLISH_VOICES
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.format, info.subtype) == (16000, 1, "FLAC", "PCM_16")
        assert info.frames / 16000 == pytest.approx(float(row["seconds"]), abs=1e-3)
        assert row["text"].strip()
    again = make_synth_speech(tmp_path / "again", n_clips=3, seed=1)
    assert again.read_text() == meta.read_text()


@pytest.mark.parametrize(("folder", "n_files", "seconds"), [("tts_digits", 50, 0.6), ("denoise_pairs", 24, 1.5)])
def test_shipped_prompt_audio_matches_metadata(folder: str, n_files: int, seconds: float) -> None:
    root = PROMPTS / folder
    with (root / "metadata.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == n_files == len(list(root.rglob("*.flac")))
    for row in rows:
        info = sf.info(str(root / row["path"]))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert info.frames == round(seconds * 16000) and float(row["seconds"]) == seconds


def test_time_varying_demonstration_noise_kinds() -> None:
    # prompts/make_denoise_pairs.py --varying: each kind is unit-RMS and varies as its name says.
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_denoise_pairs", PROMPTS / "make_denoise_pairs.py")
    assert spec is not None and spec.loader is not None
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    n, sr = 24000, 16000
    out = {k: maker.make_noise(k, n, np.random.default_rng(3)) for k in ("pink", *maker.VARYING_NOISES)}
    for kind, x in out.items():
        assert x.shape == (n,) and x.dtype == np.float32 and np.isfinite(x).all(), kind
        assert np.sqrt(np.mean(x.astype(np.float64) ** 2)) == pytest.approx(1.0, rel=1e-3), kind

    def window_db_spread(x: np.ndarray) -> float:
        rms = np.sqrt((x[: n // 800 * 800].reshape(-1, 800) ** 2).mean(1))  # 50 ms windows
        return float(np.ptp(20 * np.log10(rms)))

    assert window_db_spread(out["swell"]) > 2 * window_db_spread(out["pink"])  # it swells
    kurtosis = {k: float(np.mean(x**4) / np.mean(x**2) ** 2) for k, x in out.items()}
    assert kurtosis["crackle"] > 10 > kurtosis["pink"]  # clicks: heavy-tailed, unlike steady noise
    spec_hum = np.abs(np.fft.rfft(out["hum"]))
    f = np.fft.rfftfreq(n, 1 / sr)
    assert f[np.argmax(spec_hum)] < 250  # the strongest line is the buzz's fundamental
    power = spec_hum**2  # the harmonics end at 4 kHz; above, only the faint white floor
    assert power[f > 5000].sum() < 0.05 * power[f < 4000].sum()
