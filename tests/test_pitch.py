"""The harmonic decoder head: its oscillator, the YIN pitch targets and its training."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import tiny_config, tiny_vocabulary
from uniaudio_cli.codec.config import CodecConfig
from uniaudio_cli.codec.model import LLMCodec
from uniaudio_cli.codec.small import PITCH_BINS, HarmonicISTFTHead, harmonic_excitation, pitch_bin, pitch_hz
from uniaudio_cli.train.pitch import pitch_loss, yin_pitch

SR = 16000


def harmonic_tone(f0: np.ndarray, seconds: float, harmonics: int = 10) -> np.ndarray:
    """A tone whose pitch glides through ``f0`` (Hz, evenly spaced in time), harmonics falling 6 dB/oct."""
    n = int(seconds * SR)
    f = np.interp(np.arange(n), np.linspace(0, n - 1, len(f0)), f0)
    phase = 2 * np.pi * np.cumsum(f) / SR
    return sum(np.sin(k * phase) / k for k in range(1, harmonics + 1)).astype(np.float32) * 0.3


# -- oscillator ------------------------------------------------------------------------------


def test_oscillator_has_the_harmonics_of_its_pitch_and_none_above_nyquist() -> None:
    f0 = torch.full((1, 100), 440.0)
    wave, _ = harmonic_excitation(f0, torch.ones(1, 100), 160, SR)
    spec = torch.fft.rfft(wave[0, 4000:12000]).abs()
    freqs = torch.fft.rfftfreq(8000, 1 / SR)
    peaks = freqs[spec > 0.1 * spec.max()]
    assert torch.allclose(peaks / 440, (peaks / 440).round(), atol=1e-3)
    assert peaks.max() < 0.95 * SR / 2 and peaks.max() >= 440 * 17
    silent, _ = harmonic_excitation(f0, torch.zeros(1, 100), 160, SR)
    assert silent.abs().max() == 0


def test_oscillator_anchor_continues_a_phase_across_windows() -> None:
    g = torch.Generator().manual_seed(0)
    f0 = 100 + 200 * torch.rand(2, 60, generator=g)
    voiced = torch.ones(2, 60)
    whole, phase = harmonic_excitation(f0, voiced, 160, SR)
    assert phase.shape == (2, 61) and phase.min() >= 0 and phase.max() < 1
    part, part_phase = harmonic_excitation(f0[:, 20:], voiced[:, 20:], 160, SR, phase[:, 30], anchor=10)
    assert torch.allclose(part[:, 1600:], whole[:, 4800:], atol=1e-3)
    assert torch.allclose(part_phase[:, 10:], phase[:, 30:], atol=1e-5)
    restarted, _ = harmonic_excitation(f0[:, 20:], voiced[:, 20:], 160, SR)
    assert not torch.allclose(restarted[:, 1600:], whole[:, 4800:], atol=0.1)


# -- YIN ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("f0", [85.0, 150.0, 230.0, 380.0])
def test_yin_finds_the_pitch_of_a_tone(f0: float) -> None:
    wav = torch.from_numpy(harmonic_tone(np.array([f0]), 0.5))[None]
    est, voiced = yin_pitch(wav)
    assert est.shape == voiced.shape == (1, 50)
    inner = slice(5, 45)  # frames whose window lies inside the clip
    assert voiced[0, inner].all()
    cents = 1200 * torch.log2(est[0, inner] / f0).abs()
    assert cents.max() < 10, cents.max()


def test_yin_follows_a_glide_and_calls_noise_and_silence_unvoiced() -> None:
    glide = harmonic_tone(np.array([120.0, 240.0]), 1.0)
    est, voiced = yin_pitch(torch.from_numpy(glide)[None])
    truth = np.interp(np.arange(100) * 160, [0, SR - 1], [120.0, 240.0])
    cents = 1200 * np.abs(np.log2(est[0, 5:95].numpy() / truth[5:95]))
    assert voiced[0, 5:95].all() and np.median(cents) < 10
    noise = torch.from_numpy(np.random.default_rng(0).standard_normal(SR).astype(np.float32))[None] * 0.1
    assert yin_pitch(noise)[1].float().mean() < 0.05
    quiet_after_tone = torch.cat([torch.from_numpy(harmonic_tone(np.array([200.0]), 0.5)), torch.zeros(SR // 2)])
    voiced = yin_pitch(quiet_after_tone[None])[1][0]
    assert voiced[5:45].all() and not voiced[56:].any()


def gaussian_logits(f0: float, frames: int, width: float = 1.0) -> torch.Tensor:
    bins = torch.arange(PITCH_BINS, dtype=torch.float32)
    return (-0.5 * ((bins - pitch_bin(torch.tensor(f0))) / width) ** 2).expand(1, frames, PITCH_BINS).clone()


@pytest.mark.parametrize("f0", [61.0, 173.0, 412.5])
def test_pitch_bins_decode_between_their_centres(f0: float) -> None:
    assert torch.allclose(pitch_hz(gaussian_logits(f0, 3)), torch.tensor(f0), rtol=2e-3)


def test_pitch_loss_is_lowest_for_the_right_pitch() -> None:
    wav = torch.from_numpy(harmonic_tone(np.array([200.0]), 0.48))[None, None]
    sure = torch.full((1, 48), 8.0)
    right = pitch_loss(gaussian_logits(200.0, 48), sure, wav, SR, 160)
    near = pitch_loss(gaussian_logits(200.0 * 2 ** (100 / 1200), 48), sure, wav, SR, 160)
    octave = pitch_loss(gaussian_logits(400.0, 48), sure, wav, SR, 160)
    assert right < 1.6 < near < octave  # 1.42 nats: the entropy of the one-bin blur itself
    unsure = pitch_loss(gaussian_logits(200.0, 48), torch.zeros(1, 48), wav, SR, 160)
    assert unsure > right + 0.5


# -- the head in a codec -------------------------------------------------------------------------


def test_config_round_trip_and_old_configs_load(tmp_path: Path) -> None:
    cfg = CodecConfig(small_harmonic=True)
    cfg.save(tmp_path / "config.json")
    assert CodecConfig.load(tmp_path / "config.json").small_harmonic
    old = cfg.to_dict()
    del old["small_harmonic"]
    assert CodecConfig.from_dict(old).small_harmonic is False


def test_harmonic_head_grown_from_a_plain_codec_starts_close_to_it() -> None:
    vocab = tiny_vocabulary()
    plain_cfg = tiny_config(vocab)
    torch.manual_seed(0)
    plain = LLMCodec(plain_cfg).eval()
    grown = LLMCodec(dataclasses.replace(plain_cfg, small_harmonic=True)).eval()
    missing = grown.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert sorted(missing) == [
        "decoder.head.mix.bias",
        "decoder.head.mix.weight",
        "decoder.head.pitch_proj.0.bias",
        "decoder.head.pitch_proj.0.weight",
        "decoder.head.pitch_proj.2.bias",
        "decoder.head.pitch_proj.2.weight",
    ]
    assert isinstance(grown.decoder.head, HarmonicISTFTHead)
    z = torch.randn(1, plain_cfg.latent_dim, 20)
    with torch.no_grad():
        a, b = plain.decoder(z), grown.decoder(z)
    assert a.shape == b.shape
    assert (a - b).norm() < 0.05 * a.norm()


def test_export_can_drop_the_oscillator(tmp_path: Path) -> None:
    """A codec trained with the harmonic head exports with the plain head: strict config and
    weights, the same output where the head had learned to mix none of the oscillator."""
    from uniaudio_cli.codec.checkpoint import load_codec_weights, save_codec
    from uniaudio_cli.codec.export import export_codec

    vocab = tiny_vocabulary()
    torch.manual_seed(0)
    model = LLMCodec(dataclasses.replace(tiny_config(vocab), small_harmonic=True)).eval()
    with torch.no_grad():
        model.decoder.head.mix.bias.fill_(-30.0)
    save_codec(model, tmp_path / "harmonic")
    export_codec(tmp_path / "harmonic", tmp_path / "plain", drop_oscillator=True)
    cfg, sd = load_codec_weights(tmp_path / "plain")
    assert not cfg.small_harmonic and not any(".pitch_proj." in k or ".mix." in k for k in sd)
    plain = LLMCodec(cfg).eval()
    plain.load_state_dict(sd, strict=False)
    z = torch.randn(1, cfg.latent_dim, 12)
    with torch.no_grad():
        assert torch.allclose(plain.decoder(z), model.decoder(z), atol=1e-5)
    export_codec(tmp_path / "harmonic", tmp_path / "kept")
    assert load_codec_weights(tmp_path / "kept")[0].small_harmonic
