"""Codec training: data rules, losses, a few steps on a tiny codec, checkpoints and exact resume."""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from uniaudio_cli.bridge import embedding_fingerprint
from uniaudio_cli.codec.config import CodecConfig, VocabSpec
from uniaudio_cli.errors import CheckpointError, UsageError
from uniaudio_cli.llm import Vocabulary
from uniaudio_cli.train.data import (
    ClipInfo,
    SegmentDataset,
    active_level,
    colored_noise,
    default_exclude,
    target_text,
)
from uniaudio_cli.train.losses import ConsistencyHead, FrameLogMel, consistency_loss, semantic_loss
from uniaudio_cli.train.trainer import (
    STATE_FILE,
    TrainConfig,
    Trainer,
    TrainingInterrupted,
    build_trainer,
    read_train_state,
    train_codec,
)

SR = 16000


class ToyTokenizer:
    """Word -> id in 1..59 (0 is the 'special' token)."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [1 + sum(map(ord, w)) % 59 for w in text.split()]


@pytest.fixture(scope="module")
def toy_vocab() -> Vocabulary:
    g = torch.Generator().manual_seed(0)
    return Vocabulary("toy", ToyTokenizer(), torch.randn(60, 8, generator=g), special_ids=[0])


@pytest.fixture(scope="module")
def tiny_codec_cfg(toy_vocab: Vocabulary) -> CodecConfig:
    spec = VocabSpec(
        llm="toy",
        vocab_size=60,
        embedding_dim=8,
        embedding_sha256=embedding_fingerprint(toy_vocab.embeddings),
        layer1_token_ids=list(range(1, 41)),
        excluded_token_ids=[0],
    )
    return CodecConfig(
        latent_dim=16,
        codebook_sizes=[40, 60, 60],
        codebook_dims=[8, 8, 8],
        small_dim=32,
        small_intermediate=64,
        small_encoder_layers=1,
        small_decoder_layers=1,
        vocab=spec,
    )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Sine tones and noise bursts, 0.4-1 s, in label folders (no metadata.csv)."""
    root = tmp_path_factory.mktemp("toy_data")
    rng = np.random.default_rng(0)
    for label in ("tone", "hiss"):
        (root / label).mkdir()
        for i in range(4):
            n = int(SR * (0.4 + 0.2 * i))
            t = np.arange(n) / SR
            wav = 0.5 * np.sin(2 * np.pi * (200 + 150 * i) * t) if label == "tone" else 0.2 * rng.standard_normal(n)
            sf.write(root / label / f"{label}_{i}.flac", wav.astype(np.float32), SR, subtype="PCM_16")
    return root


@pytest.fixture(autouse=True)
def _restore_threads():
    # The trainer sets torch's global thread count; keep it from leaking into other tests.
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def tiny_train_cfg(**kw) -> TrainConfig:
    base = dict(
        steps=30,
        batch_size=4,
        segment_seconds=0.24,
        lr=3e-3,
        warmup_steps=0,
        lr_schedule="constant",
        # One thread: tiny ops on a loaded 2-core machine are much slower with two.
        gan=False,
        val_segments=2,
        checkpoint_every=1000,
        log_every=1,
        bf16=False,
        num_threads=1,
        seed=0,
        gain_db=(-6.0, 0.0),
    )
    base.update(kw)
    return TrainConfig(**base)


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_target_text_and_held_out_rules() -> None:
    def clip(source: str, rel: str, label: str, **row: str) -> ClipInfo:
        return ClipInfo(source, Path("/d") / source / rel, label, dict(row))

    assert target_text(clip("fsdd", "3/3_george_1.flac", "3", speaker="george")) == "three"
    rav = clip("ravdess", "angry/03-01-05-01-02-01-12.flac", "angry", actor="12")
    assert target_text(rav) == "angry, dogs are sitting by the door"
    assert target_text(clip("esc10", "dog_bark/1-1.flac", "dog_bark")) == "dog bark"
    assert target_text(clip("librispeech", "103/103-1.flac", "103", split="103")) == "speech"
    assert target_text(clip("noise", "pink_noise/p.flac", "pink_noise")) == "pink noise"
    assert target_text(clip("x", "a/b.flac", "a", text="Hello World")) == "hello world"

    assert default_exclude(clip("fsdd", "3/3_nicolas_1.flac", "3", speaker="nicolas"))
    assert default_exclude(clip("fsdd", "3/3_nicolas_1.flac", "3"))  # no metadata: file name
    assert not default_exclude(clip("fsdd", "3/3_george_1.flac", "3", speaker="george"))
    # test-other excerpts carry a numeric split, train-clean-100 rows a named one
    assert default_exclude(clip("librispeech", "1688/x.flac", "1688", split="1688"))
    assert not default_exclude(clip("librispeech", "103/x.flac", "103", split="librispeech_train-clean-100"))
    # The few-shot evaluation sets: ESC-10 fold 3, RAVDESS actors 11-12.
    assert default_exclude(clip("esc10", "rain/3-1.flac", "rain", fold="3"))
    assert not default_exclude(clip("esc10", "rain/1-1.flac", "rain", fold="1"))
    assert default_exclude(clip("ravdess", "sad/x.flac", "sad", actor="12"))
    assert not default_exclude(clip("ravdess", "sad/x.flac", "sad", actor="2"))


def test_dataset_segments(data_dir: Path) -> None:
    ds = SegmentDataset([data_dir], segment_samples=8000, seed=0)
    assert len(ds) == 8 and ds.texts == ["hiss", "tone"]
    wav, text = ds[0]
    assert wav.shape == (1, 8000) and wav.dtype == torch.float32 and text in ds.texts
    x, tid = ds.sample_batch(np.random.default_rng(0), 5)
    assert x.shape == (5, 1, 8000) and tid.shape == (5,)
    assert float(x.abs().max()) <= 0.99 + 1e-6
    val, _ = ds.split_validation(2)
    assert val.shape == (2, 1, 8000)
    assert (ds.train_end == 0).sum() == 2  # short clips leave training entirely


def test_colored_noise_slopes_and_active_level() -> None:
    n = colored_noise(np.random.default_rng(0), 3, 32000, np.array([0.0, 1.0, 2.0]), SR)
    assert n.shape == (3, 32000) and n.dtype == np.float32
    np.testing.assert_allclose(np.sqrt((n**2).mean(axis=1)), 1.0, rtol=1e-4)
    power = np.abs(np.fft.rfft(n, axis=1)) ** 2
    f = np.fft.rfftfreq(32000, 1 / SR)
    low, high = power[:, (f > 200) & (f < 400)].mean(axis=1), power[:, (f > 3200) & (f < 6400)].mean(axis=1)
    ratio = low / high  # a 16x step in frequency: 1 (white), 16 (pink), 256 (brown)
    assert 0.7 < ratio[0] < 1.4 and 10 < ratio[1] < 25 and 150 < ratio[2] < 400
    x = np.zeros((2, 32000), np.float32)
    x[0, 1000:9000] = 0.1  # a quarter-second of sound in two seconds of zeros
    level = active_level(x, 320)
    assert level.shape == (2, 1) and level[0, 0] == pytest.approx(0.1, rel=0.05) and level[1, 0] == 0.0


def test_noise_floor_is_added_at_its_level_and_off_by_default(data_dir: Path) -> None:
    plain = SegmentDataset([data_dir], segment_samples=8000, seed=0)
    off = SegmentDataset([data_dir], segment_samples=8000, seed=0, noise_floor=0.0)
    on = SegmentDataset([data_dir], segment_samples=8000, seed=0, noise_floor=1.0, noise_snr_db=(20.0, 20.0))
    # Off draws nothing from the generator: a run without it sees the batches it always saw.
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    for _ in range(3):
        assert torch.equal(plain.sample_batch(a, 6)[0], off.sample_batch(b, 6)[0])
    assert a.random() == b.random()
    x, _ = plain.sample_batch(np.random.default_rng(5), 6)
    y, _ = on.sample_batch(np.random.default_rng(5), 6)
    assert not torch.equal(x, y)
    # Every row gets a floor: the zero padding around the short clips is no longer silent.
    assert bool((y.abs().squeeze(1).amax(dim=1) > 0).all())
    for seed in range(3):
        seg = np.zeros((1, 8000), np.float32)
        seg[0, 2000:6000] = 0.25 * np.sin(np.arange(4000) * 0.3)
        noisy = on._add_noise_floor(seg, np.random.default_rng(seed))
        added = noisy[0, :2000]  # where the clip is silent: the floor alone
        ratio_db = 20 * np.log10(active_level(seg, 320)[0, 0] / np.sqrt((added**2).mean()))
        assert ratio_db == pytest.approx(20.0, abs=1.5)
    with pytest.raises(UsageError):
        SegmentDataset([data_dir], segment_samples=8000, noise_floor=1.5)
    with pytest.raises(UsageError):
        SegmentDataset([data_dir], segment_samples=8000, noise_floor=0.5, noise_snr_db=(30.0, 10.0))


def test_warm_start_grows_the_encoder_close_to_its_function(tiny_codec_cfg: CodecConfig, toy_vocab: Vocabulary) -> None:
    from uniaudio_cli.codec.model import LLMCodec
    from uniaudio_cli.train.trainer import warm_start

    torch.manual_seed(0)
    small = LLMCodec(dataclasses.replace(tiny_codec_cfg, small_encoder_layers=2))
    grown = LLMCodec(dataclasses.replace(tiny_codec_cfg, small_encoder_layers=4))
    new = warm_start(grown, small.state_dict(), "small")
    # Only the two appended blocks start fresh; everything else is the trained model's.
    assert new and all(k.startswith(("encoder.blocks.1.", "encoder.blocks.2.")) for k in new)
    wav = 0.1 * torch.randn(1, 1, 4800)
    with torch.no_grad():
        a, b = small.encoder(wav), grown.encoder(wav)
    # Fresh ConvNeXt blocks are layer-scaled to 1e-2, so the grown encoder starts near the old one.
    assert (a - b).norm() < 0.1 * a.norm()


def test_speed_perturbation_moves_pitch_by_its_factor_and_is_off_by_default(data_dir: Path, tmp_path: Path) -> None:
    from uniaudio_cli.train.data import SPEED_FACTORS

    plain = SegmentDataset([data_dir], segment_samples=8000, seed=0)
    off = SegmentDataset([data_dir], segment_samples=8000, seed=0, speed_perturb=0.0)
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    for _ in range(3):
        assert torch.equal(plain.sample_batch(a, 6)[0], off.sample_batch(b, 6)[0])
    assert a.random() == b.random()
    on = SegmentDataset([data_dir], segment_samples=8000, seed=0, speed_perturb=1.0)
    x, _ = on.sample_batch(np.random.default_rng(5), 6)
    assert x.shape == (6, 1, 8000) and bool(torch.isfinite(x).all())
    # A 500 Hz tone longer than the segment comes out at 500 * down / up Hz, at its level.
    (tmp_path / "tone").mkdir()
    t = np.arange(SR * 2) / SR
    sf.write(tmp_path / "tone" / "a.flac", (0.5 * np.sin(2 * np.pi * 500 * t)).astype(np.float32), SR, subtype="PCM_16")
    one = SegmentDataset([tmp_path], segment_samples=8000, seed=0, speed_perturb=1.0)
    for up, down in SPEED_FACTORS:
        out = np.empty(8000, np.int16)
        one._segment_at_speed(0, np.random.default_rng(0), out, up, down)
        spec = np.abs(np.fft.rfft(out.astype(np.float64) * np.hanning(8000)))
        peak_hz = np.argmax(spec) * SR / 8000
        assert peak_hz == pytest.approx(500 * down / up, abs=3)
        assert np.abs(out).max() / 32768 == pytest.approx(0.5, abs=0.02)
    with pytest.raises(UsageError):
        SegmentDataset([data_dir], segment_samples=8000, speed_perturb=1.5)


def _augmented_and_plain(folder: Path, option: str, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The same batch with ``option`` at 1 and without it, after checking that ``option`` at 0
    draws nothing (the batches of a run without it stay as they were)."""
    plain = SegmentDataset([folder], segment_samples=8000, seed=0, gain_db=(0.0, 0.0))
    off = SegmentDataset([folder], segment_samples=8000, seed=0, gain_db=(0.0, 0.0), **{option: 0.0})
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    assert torch.equal(plain.sample_batch(a, 4)[0], off.sample_batch(b, 4)[0])
    assert a.random() == b.random()
    on = SegmentDataset([folder], segment_samples=8000, seed=0, gain_db=(0.0, 0.0), **{option: 1.0})
    x, _ = on.sample_batch(np.random.default_rng(5), batch)
    y, _ = plain.sample_batch(np.random.default_rng(5), batch)
    assert x.shape == (batch, 1, 8000) and x.dtype == torch.float32
    return x, y


def test_band_limit_empties_the_band_above_4_khz_and_is_off_by_default(tmp_path: Path) -> None:
    # Two tones, one below and one above the 4 kHz edge of an 8 kHz recording.
    (tmp_path / "tones").mkdir()
    t = np.arange(SR * 2) / SR
    two = 0.3 * np.sin(2 * np.pi * 1000 * t) + 0.3 * np.sin(2 * np.pi * 6000 * t)
    sf.write(tmp_path / "tones" / "a.flac", two.astype(np.float32), SR, subtype="PCM_16")

    def band_power(x: torch.Tensor, hz: float) -> np.ndarray:
        spec = np.abs(np.fft.rfft(x[:, 0].numpy().astype(np.float64) * np.hanning(x.shape[-1]), axis=1)) ** 2
        k = round(hz * x.shape[-1] / SR)
        return spec[:, k - 3 : k + 4].sum(axis=1)

    x, y = _augmented_and_plain(tmp_path, "band_limit", 4)
    # The 6 kHz tone is gone (over 60 dB down); the 1 kHz tone keeps its level.
    assert (band_power(x, 6000) < 1e-6 * band_power(y, 6000)).all()
    np.testing.assert_allclose(band_power(x, 1000), band_power(y, 1000), rtol=0.02)
    with pytest.raises(UsageError):
        SegmentDataset([tmp_path], segment_samples=8000, band_limit=-0.1)


def test_channel_eq_is_smooth_bounded_and_off_by_default(tmp_path: Path) -> None:
    from uniaudio_cli.train.data import EQ_LIMIT_DB

    (tmp_path / "noise").mkdir()
    white = np.random.default_rng(0).standard_normal(SR * 2) * 0.1
    sf.write(tmp_path / "noise" / "a.flac", white.astype(np.float32), SR, subtype="PCM_16")
    x, y = _augmented_and_plain(tmp_path, "channel_eq", 16)
    # The channel's gain, per third of an octave: within the limit, smooth, and not the identity.
    X = np.abs(np.fft.rfft(x[:, 0].numpy().astype(np.float64), axis=1)) ** 2
    Y = np.abs(np.fft.rfft(y[:, 0].numpy().astype(np.float64), axis=1)) ** 2
    edges = 125.0 * 2.0 ** (np.arange(16) / 3.0)
    bins = (edges * 8000 / SR).astype(int)
    db = np.stack([10 * np.log10(X[:, i:j].sum(1) / Y[:, i:j].sum(1)) for i, j in itertools.pairwise(bins)], axis=1)
    assert np.abs(db).max() <= EQ_LIMIT_DB + 0.5
    assert np.abs(np.diff(db, axis=1)).max() < 3.0
    assert np.abs(db).max(axis=1).min() > 0.5
    with pytest.raises(UsageError):
        SegmentDataset([tmp_path], segment_samples=8000, channel_eq=2.0)


def test_reverb_adds_a_decaying_tail_at_the_dry_level_and_is_off_by_default(tmp_path: Path) -> None:
    from uniaudio_cli.train.data import REVERB_DRR_DB, REVERB_PREDELAY_S, REVERB_RT60_S

    # Clicks 0.25 s apart: in a room each one rings on after it; dry, the gaps stay silent.
    (tmp_path / "clicks").mkdir()
    clicks = np.zeros(SR * 2, dtype=np.float32)
    clicks[:: SR // 4] = 0.5
    sf.write(tmp_path / "clicks" / "a.flac", clicks, SR, subtype="PCM_16")
    x, y = _augmented_and_plain(tmp_path, "reverb", 8)
    x, y = x[:, 0].numpy().astype(np.float64), y[:, 0].numpy().astype(np.float64)
    np.testing.assert_allclose((x**2).mean(axis=1), (y**2).mean(axis=1), rtol=0.05)
    assert (np.abs(y) < 1e-3).mean() > 0.99 and (np.abs(x) < 1e-3).mean(axis=1).max() < 0.9

    data = SegmentDataset([tmp_path], segment_samples=8000, reverb=1.0)
    h = data.room_response(np.random.default_rng(0), 64)
    assert h.shape == (64, int(REVERB_RT60_S[1] * SR)) and (h[:, 0] == 1.0).all()
    assert (h[:, 1 : int(REVERB_PREDELAY_S * SR)] == 0.0).all()
    drr = -10 * np.log10((h[:, 1:] ** 2).sum(axis=1))
    assert (drr >= REVERB_DRR_DB[0] - 1e-6).all() and (drr <= REVERB_DRR_DB[1] + 1e-6).all()
    early, late = (h[:, 1 : SR // 20] ** 2).sum(axis=1), (h[:, SR // 20 : SR // 10] ** 2).sum(axis=1)
    assert (late < early).all()
    with pytest.raises(UsageError):
        SegmentDataset([tmp_path], segment_samples=8000, reverb=1.5)


def test_semantic_and_consistency_gradients(tiny_codec_cfg: CodecConfig, toy_vocab: Vocabulary) -> None:
    from uniaudio_cli.codec.model import LLMCodec

    torch.manual_seed(0)
    model = LLMCodec(tiny_codec_cfg)
    emb = toy_vocab.embeddings
    model.set_codebooks([emb[1:41], emb, emb])
    wav = 0.1 * torch.randn(2, 1, 3840)
    out = model(wav)
    cb_proj = model.quantizer.quantizers[0].cb_proj
    sem = semantic_loss(out.quant.pooled[0], emb[:2], cb_proj)
    head = ConsistencyHead(tiny_codec_cfg.latent_dim)
    target = FrameLogMel(SR, tiny_codec_cfg.hop_length)(wav)
    assert target.shape == (2, 80, 3840 // tiny_codec_cfg.hop_length)
    cons = consistency_loss(out.quant.layers[0] + out.quant.layers[1], target, head)
    assert torch.isfinite(sem) and torch.isfinite(cons)
    enc_w = model.encoder.out.weight
    for loss in (sem, cons):
        model.zero_grad()
        loss.backward(retain_graph=True)
        assert enc_w.grad is not None and enc_w.grad.abs().sum() > 0
    model.zero_grad()
    sem.backward(retain_graph=True)
    assert cb_proj.weight.grad is not None and cb_proj.weight.grad.abs().sum() > 0
    assert head.proj.weight.grad is not None


def test_training_lowers_loss_and_checkpoints(
    tmp_path: Path, data_dir: Path, tiny_codec_cfg: CodecConfig, toy_vocab: Vocabulary
) -> None:
    out = tmp_path / "run"
    codec = train_codec([data_dir], out, tiny_train_cfg(), tiny_codec_cfg, progress=False, vocab=toy_vocab)
    assert codec == out / "codec"
    assert (codec / "config.json").is_file() and (codec / "model.safetensors").is_file()
    assert (out / "codec-best" / "model.safetensors").is_file()
    rows = [r for r in metrics(out) if "mel" in r]
    assert len(rows) == 30
    for r in rows:
        assert all(np.isfinite(v) for k, v in r.items() if isinstance(v, float)), r
    first = np.mean([r["mel"] for r in rows[:5]])
    last = np.mean([r["mel"] for r in rows[-5:]])
    assert last < 0.8 * first, (first, last)
    state = json.loads((out / "train_state.json").read_text())
    assert state["step"] == 30
    with pytest.raises(UsageError):
        train_codec([data_dir], out, tiny_train_cfg(), tiny_codec_cfg, progress=False, vocab=toy_vocab)


@pytest.mark.parametrize("map_hidden", [0, 8])
def test_resume_is_exact(
    tmp_path: Path, data_dir: Path, tiny_codec_cfg: CodecConfig, toy_vocab: Vocabulary, map_hidden: int
) -> None:
    tiny_codec_cfg = dataclasses.replace(tiny_codec_cfg, codebook_map_hidden=map_hidden)
    kw = dict(steps=6, gan=True, gan_start_step=2, checkpoint_every=3, disc_channels=4)
    straight = tmp_path / "straight"
    train_codec([data_dir], straight, tiny_train_cfg(**kw), tiny_codec_cfg, progress=False, vocab=toy_vocab)

    split = tmp_path / "split"
    first = tiny_train_cfg(**{**kw, "steps": 3})
    train_codec([data_dir], split, first, tiny_codec_cfg, progress=False, vocab=toy_vocab)
    saved_state, saved = read_train_state(split)
    assert "search.1.weight" in saved  # the quantizer's frozen search projection resumes too
    assert ("search.1.mlp.0.weight" in saved) == bool(map_hidden)  # and so does the map's MLP
    trainer = build_trainer([data_dir], split, tiny_train_cfg(**kw), None, True, None, False, toy_vocab)
    assert trainer.step == 3 == saved_state["step"]
    restored = trainer.opt_g.state_dict()["state"]
    assert len(restored) == len(trainer.opt_g.param_groups[0]["params"])
    for idx, st in restored.items():
        assert torch.equal(st["exp_avg"], saved[f"opt_g.state.{idx}.exp_avg"])
    assert trainer.opt_d is not None and trainer.opt_d.state_dict()["state"]
    trainer.train()

    _, a = read_train_state(straight)
    state_b, b = read_train_state(split)
    assert state_b["step"] == 6
    assert a.keys() == b.keys()
    for k in a:
        if not k.startswith("rng."):
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


def test_discriminators_train_at_their_own_learning_rate(
    tmp_path: Path, data_dir: Path, tiny_codec_cfg: CodecConfig, toy_vocab: Vocabulary
) -> None:
    """``disc_lr_scale`` multiplies the discriminators' learning rate only, and is saved with the run."""
    for scale in (1.0, 10.0):
        cfg = tiny_train_cfg(steps=1, gan=True, gan_start_step=0, disc_channels=4, disc_lr_scale=scale)
        out = tmp_path / f"scale{scale:g}"
        trainer = build_trainer([data_dir], out, cfg, tiny_codec_cfg, False, None, False, toy_vocab)
        trainer.train()
        assert trainer.opt_d is not None
        assert trainer.opt_d.param_groups[0]["lr"] == pytest.approx(cfg.lr * scale)
        assert trainer.opt_g.param_groups[0]["lr"] == pytest.approx(cfg.lr)
        state = json.loads((out / "train_state.json").read_text())
        assert state["train_config"]["disc_lr_scale"] == scale


def test_a_resumed_run_takes_a_new_loss_weight_only_when_asked(
    tmp_path: Path, data_dir: Path, tiny_codec_cfg: CodecConfig, toy_vocab: Vocabulary, caplog: pytest.LogCaptureFixture
) -> None:
    """``changes`` on resume: a loss weight or the learning rate asked for is taken (and logged);
    one equal to the run's changes nothing; any other setting that differs is refused by name
    before training; without ``changes`` the checkpoint's settings win, as before."""
    run = tmp_path / "run"
    kw = dict(steps=4, checkpoint_every=2)
    train_codec([data_dir], run, tiny_train_cfg(**kw, stop_at=2), tiny_codec_cfg, progress=False, vocab=toy_vocab)
    batch = read_train_state(run)[0]["train_config"]["batch_size"]

    def resumed(changes: dict | None, **cfg: object) -> Trainer:
        return build_trainer([data_dir], run, tiny_train_cfg(**kw, **cfg), None, True, None, False, toy_vocab, changes)

    assert resumed(None, w_stoi=3.0).cfg.w_stoi == 0.0
    with caplog.at_level(logging.WARNING):
        trainer = resumed({"w_stoi": 3.0, "lr": 5e-4, "batch_size": batch, "steps": 4})
    assert (trainer.cfg.w_stoi, trainer.cfg.lr, trainer.cfg.batch_size) == (3.0, 5e-4, batch)
    assert "w_stoi 3.0" in caplog.text and "batch_size" not in caplog.text
    trainer.train()
    rows = [r for r in metrics(run) if "mel" in r]
    assert [("stoi" in r) for r in rows] == [False, False, True, True]
    assert read_train_state(run)[0]["train_config"]["w_stoi"] == 3.0
    with pytest.raises(UsageError, match=r"batch_size .* differs"):
        build_trainer(
            [data_dir], run, tiny_train_cfg(steps=6), None, True, None, False, toy_vocab, {"batch_size": batch + 1}
        )


def test_a_resumed_run_refuses_other_data(
    tmp_path: Path, data_dir: Path, tiny_codec_cfg: CodecConfig, toy_vocab: Vocabulary, caplog: pytest.LogCaptureFixture
) -> None:
    """The state records its data; a resume on other clips is refused naming both, the same clips
    in a moved folder pass, and a state from before the record passes with a warning."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    run = tmp_path / "run"
    cfg = tiny_train_cfg(steps=4, checkpoint_every=2, stop_at=2)
    train_codec([data_dir], run, cfg, tiny_codec_cfg, progress=False, vocab=toy_vocab)
    recorded = read_train_state(run)[0]["data"]
    assert recorded["dirs"] == [str(data_dir.resolve())] and recorded["clips"] == 8

    def resume(folder: Path) -> Trainer:
        return build_trainer([folder], run, tiny_train_cfg(steps=4), None, True, None, False, toy_vocab)

    moved = tmp_path / "moved"
    shutil.copytree(data_dir, moved)
    resume(moved).lock.release()
    more = tmp_path / "more"
    shutil.copytree(data_dir, more)
    sf.write(more / "tone" / "extra.flac", np.zeros(SR, np.float32), SR)
    with pytest.raises(UsageError, match=r"trained on 8 clips .* gives 9 clips") as e:
        resume(more)
    assert str(more.resolve()) in str(e.value) and "--init-from" in e.value.fix

    with safe_open(str(run / STATE_FILE), "pt") as f:
        meta = dict(f.metadata())
    tensors = load_file(str(run / STATE_FILE))
    state = json.loads(meta["train_state"])
    del state["data"]
    save_file(tensors, str(run / STATE_FILE), metadata=meta | {"train_state": json.dumps(state)})
    with caplog.at_level(logging.WARNING):
        trainer = resume(more)
    assert "did not record its data" in caplog.text
    trainer.train()
    assert read_train_state(run)[0]["data"]["clips"] == 9


def test_sigint_checkpoints_and_stops(
    tmp_path: Path, data_dir: Path, tiny_codec_cfg: CodecConfig, toy_vocab: Vocabulary, monkeypatch
) -> None:
    step = Trainer.train_step

    def interrupted_step(self: Trainer) -> dict:
        m = step(self)
        if self.step == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return m

    monkeypatch.setattr(Trainer, "train_step", interrupted_step)
    out = tmp_path / "run"
    # What the process had before (SIG_IGN when pytest runs as a background job of a script).
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted):
        train_codec([data_dir], out, tiny_train_cfg(steps=50), tiny_codec_cfg, progress=False, vocab=toy_vocab)
    assert json.loads((out / "train_state.json").read_text())["step"] == 2
    assert (out / STATE_FILE).is_file() and not list(out.glob(".*tmp*"))
    assert signal.getsignal(signal.SIGINT) is before


def test_stale_temporaries_are_recovered_and_runs_locked(tmp_path: Path) -> None:
    from uniaudio_cli.train.trainer import _clean_stale, _RunLock

    out = tmp_path / "run"
    # A kill inside save_codec, after moving the old folder aside: it must come back.
    (out / ".codec.old-123").mkdir(parents=True)
    (out / ".codec.old-123" / "config.json").write_text("{}")
    (out / ".codec.x1y2").mkdir()
    (out / ".train_state.safetensors.tmp-9").write_text("partial")
    _clean_stale(out)
    assert (out / "codec" / "config.json").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["codec"]

    lock = _RunLock(out)
    with pytest.raises(UsageError):
        _RunLock(out)
    lock.release()
    _RunLock(out).release()


def test_saved_train_config(tmp_path: Path, data_dir: Path, tiny_codec_cfg: CodecConfig, toy_vocab: Vocabulary) -> None:
    from uniaudio_cli.train.trainer import saved_train_config

    assert saved_train_config(tmp_path) is None
    train_codec([data_dir], tmp_path, tiny_train_cfg(steps=1), tiny_codec_cfg, progress=False, vocab=toy_vocab)
    cfg = saved_train_config(tmp_path)
    assert cfg is not None and cfg.steps == 1 and cfg.betas == (0.8, 0.99)


def test_decoder_only_keeps_every_code(
    tmp_path: Path, data_dir: Path, tiny_codec_cfg: CodecConfig, toy_vocab: Vocabulary
) -> None:
    from uniaudio_cli.codec.checkpoint import load_codec_weights

    base = train_codec(
        [data_dir], tmp_path / "base", tiny_train_cfg(steps=3), tiny_codec_cfg, progress=False, vocab=toy_vocab
    )
    with pytest.raises(UsageError, match="--init-from"):
        train_codec(
            [data_dir],
            tmp_path / "x",
            tiny_train_cfg(decoder_only=True),
            tiny_codec_cfg,
            progress=False,
            vocab=toy_vocab,
        )
    grown = dataclasses.replace(tiny_codec_cfg, small_encoder_layers=tiny_codec_cfg.small_encoder_layers + 1)
    with pytest.raises(UsageError, match="grown encoder"):
        train_codec(
            [data_dir], tmp_path / "y", tiny_train_cfg(decoder_only=True, init_from=str(base)), grown, vocab=toy_vocab
        )
    cfg = tiny_train_cfg(steps=4, decoder_only=True, init_from=str(base), gan=True, gan_start_step=2, disc_channels=4)
    tuned = train_codec([data_dir], tmp_path / "tuned", cfg, None, progress=False, vocab=toy_vocab)

    _, before = load_codec_weights(base)
    _, after = load_codec_weights(tuned)
    assert before.keys() == after.keys()
    frozen = [k for k in before if not k.startswith("decoder.")]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("decoder."))
    rows = [r for r in metrics(tmp_path / "tuned") if "mel" in r]
    assert all(r["semantic"] == 0 and r["commit"] == 0 for r in rows)
    assert any("adv" in r for r in rows)


def test_latent_pack_trains_the_decoder_without_data_or_llm(
    tmp_path: Path, data_dir: Path, tiny_codec_cfg: CodecConfig, toy_vocab: Vocabulary, monkeypatch
) -> None:
    from uniaudio_cli.codec.api import load_codec
    from uniaudio_cli.codec.checkpoint import load_codec_weights
    from uniaudio_cli.train.latents import (
        LatentDataset,
        export_decoder,
        merge_decoder,
        pack_latents,
        read_pack_meta,
    )

    base = train_codec(
        [data_dir], tmp_path / "base", tiny_train_cfg(steps=2), tiny_codec_cfg, progress=False, vocab=toy_vocab
    )
    model = load_codec(base, vocabulary=toy_vocab, device="cpu").model
    pack = pack_latents(model, [data_dir], tmp_path / "pack", shard_mib=0.02, val_segments=2, val_seconds=0.24)
    meta = read_pack_meta(pack)
    assert meta["shards"] >= 2 and meta["val_segments"] == 2
    with pytest.raises(UsageError, match="not empty"):
        pack_latents(model, [data_dir], pack)

    # Every packed clip is its audio bit for bit, and latents within int8 rounding of a fresh encode.
    ds = LatentDataset(pack, 8)
    assert len(ds.clip_start) == 6 and ds.audio.shape[0] == ds.latents.shape[0] * ds.hop
    bounds = [*ds.clip_start.tolist(), ds.latents.shape[0]]
    with torch.no_grad():
        for a, b in itertools.pairwise(bounds):
            wav = ds.audio[a * ds.hop : b * ds.hop].float()[None, None] / 32768.0
            z = model.quantizer(model.encoder(wav)).z_q[0].T
            err = (ds.latents[a:b].float() - z).abs().mean() / z.abs().mean()
            assert err < 0.02, err
    wav, lat = ds.sample_batch(np.random.default_rng(0), 3)
    assert wav.shape == (3, 1, 8 * ds.hop) and lat.shape == (3, 16, 8)

    def no_llm(*a, **k):
        raise AssertionError("training from latents must not load the LLM")

    monkeypatch.setattr("uniaudio_cli.llm.load_vocabulary", no_llm)
    cfg = tiny_train_cfg(
        steps=4,
        decoder_only=True,
        latents=str(pack),
        init_from=str(base),
        gan=True,
        gan_start_step=2,
        disc_channels=2,
        disc_periods=(2, 3),
    )
    tuned = train_codec([], tmp_path / "tuned", cfg, None, progress=False)
    _, before = load_codec_weights(base)
    _, after = load_codec_weights(tuned)
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("decoder."))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("decoder."))
    rows = metrics(tmp_path / "tuned")
    assert any("val_mel" in r for r in rows) and any("adv" in r for r in rows)
    state = json.loads((tmp_path / "tuned" / "train_state.json").read_text())
    assert state["train_config"]["disc_periods"] == [2, 3]
    with pytest.raises(UsageError, match="--decoder-only"):
        train_codec([], tmp_path / "x", tiny_train_cfg(latents=str(pack), init_from=str(base)), None, progress=False)
    # A resumed run keeps its settings: the pack and --decoder-only need not be given again.
    again = tiny_train_cfg(steps=5, latents=str(pack))
    longer = train_codec(
        [], tmp_path / "tuned", again, None, resume=True, progress=False, changes={"latents": str(pack)}
    )
    resumed = json.loads((tmp_path / "tuned" / "train_state.json").read_text())
    assert longer == tuned and resumed["step"] == 5
    assert resumed["train_config"]["decoder_only"] and resumed["train_config"]["latents"] == str(pack)
    _, after = load_codec_weights(tuned)
    # Audio augmentations have no audio to work on in a latent pack.
    for change in ("noise_floor", "speed_perturb", "band_limit", "channel_eq", "reverb"):
        flag = "--" + change.replace("_", "-")
        bad = tiny_train_cfg(decoder_only=True, latents=str(pack), init_from=str(base), **{change: 0.5})
        with pytest.raises(UsageError, match=flag):
            train_codec([], tmp_path / "x", bad, None, progress=False)

    # The decoder alone comes back and goes into the full checkpoint again.
    exported = export_decoder(tuned, tmp_path / "decoder.safetensors")
    merged = merge_decoder(base, exported, tmp_path / "merged")
    _, back = load_codec_weights(merged)
    for k, v in back.items():
        want = after[k].half().float() if k.startswith("decoder.") else before[k]
        assert torch.equal(v.float(), want.float()), k

    with pytest.raises(UsageError, match="exists"):
        export_decoder(tuned, exported)
    with pytest.raises(UsageError, match="not empty"):
        merge_decoder(base, exported, merged)
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        merge_decoder(base, pack / "pack.json", tmp_path / "bad")

    # A decoder grown with the harmonic head trains from the pack and merges back with its config.
    harmonic_cfg = dataclasses.replace(load_codec_weights(base)[0], small_harmonic=True)
    grown = train_codec(
        [],
        tmp_path / "grown",
        tiny_train_cfg(steps=2, decoder_only=True, latents=str(pack), init_from=str(base)),
        harmonic_cfg,
        progress=False,
    )
    merged = merge_decoder(base, export_decoder(grown, tmp_path / "grown.safetensors"), tmp_path / "merged-harmonic")
    merged_cfg, merged_sd = load_codec_weights(merged)
    assert merged_cfg.small_harmonic and "decoder.head.mix.weight" in merged_sd
    assert load_codec(merged, vocabulary=toy_vocab, device="cpu").model.decoder.head.mix is not None

    # A decoder trained from a post-filtered codec (training resets the filter) merges back into
    # it, and the result keeps the filter.
    from uniaudio_cli.codec.export import export_codec

    shipped = export_codec(base, tmp_path / "shipped", contrast=1.2, contrast_smooth=9)
    merged_pf = load_codec_weights(merge_decoder(shipped, exported, tmp_path / "merged-pf"))[0]
    assert (merged_pf.small_contrast, merged_pf.small_contrast_smooth) == (1.2, 9)

    # A pack written by another codec is refused before training.
    meta["codes_sha256"] = "0" * 64
    (pack / "pack.json").write_text(json.dumps(meta))
    with pytest.raises(UsageError, match="codes_sha256"):
        train_codec([], tmp_path / "y", cfg, None, progress=False)


def test_phase_loss_sees_what_spectrogram_losses_do_not() -> None:
    from uniaudio_cli.train.losses import PhaseLoss, SpectralLoss

    t = torch.arange(16000) / SR
    voiced = sum(torch.sin(2 * torch.pi * k * 150 * t) / k for k in range(1, 8)).view(1, 1, -1)
    # The same magnitudes with every harmonic's phase moved: far from the target in phase, close in
    # the spectrogram losses (next to noise).
    moved = sum(torch.sin(2 * torch.pi * k * 150 * t + 0.9 * k) / k for k in range(1, 8)).view(1, 1, -1)
    loss, spectral = PhaseLoss(), SpectralLoss()
    same, shifted, noise = loss(voiced, voiced), loss(moved, voiced), loss(torch.randn_like(voiced), voiced)
    assert same < 0.05 < shifted < noise
    assert spectral(moved, voiced).mel < 0.3 * spectral(torch.randn_like(voiced), voiced).mel
    assert shifted > 0.3 * noise
    pred = (voiced + 0.5 * torch.randn_like(voiced)).requires_grad_(True)
    loss(pred, voiced).backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_harmonic_head_learns_the_pitch_of_gliding_tones(
    tmp_path: Path, tiny_codec_cfg: CodecConfig, toy_vocab: Vocabulary
) -> None:
    """--harmonic: the pitch loss (against YIN on the target) is logged and falls within 40 steps,
    and the checkpoint keeps the head."""
    from tests.test_pitch import harmonic_tone
    from uniaudio_cli.codec.checkpoint import load_codec_weights

    data = tmp_path / "data" / "tone"
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        lo = rng.uniform(110, 200)
        sf.write(data / f"t{i}.flac", harmonic_tone(np.array([lo, 1.5 * lo, lo]), 1.0), SR, subtype="PCM_16")
    codec_cfg = dataclasses.replace(tiny_codec_cfg, small_harmonic=True)
    out = train_codec(
        [data.parent],
        tmp_path / "run",
        tiny_train_cfg(steps=40, gain_db=(0.0, 0.0)),
        codec_cfg,
        progress=False,
        vocab=toy_vocab,
    )
    pitch = [r["pitch"] for r in metrics(tmp_path / "run") if "pitch" in r]
    assert len(pitch) == 40
    # From ln(128 bins) + ln(2) down by more than a nat (the floor is the target blur's entropy, 1.4).
    assert np.mean(pitch[-5:]) < np.mean(pitch[:5]) - 1.0, (pitch[:5], pitch[-5:])
    cfg, weights = load_codec_weights(out)
    assert cfg.small_harmonic and weights["decoder.head.pitch_proj.2.weight"].abs().sum() > 0


def test_stop_at_keeps_the_schedule(
    tmp_path: Path, data_dir: Path, tiny_codec_cfg: CodecConfig, toy_vocab: Vocabulary
) -> None:
    """--stop-at ends the run with a checkpoint at that step, on the learning rates of the
    whole --steps schedule, and a resumed run goes on to the end."""
    from uniaudio_cli.train.trainer import lr_at

    cfg = tiny_train_cfg(steps=10, stop_at=4, lr_schedule="cosine", warmup_steps=0)
    train_codec([data_dir], tmp_path / "run", cfg, tiny_codec_cfg, progress=False, vocab=toy_vocab)
    state = json.loads((tmp_path / "run" / "train_state.json").read_text())
    assert state["step"] == 4
    rows = [r for r in metrics(tmp_path / "run") if "lr" in r]
    assert [r["lr"] for r in rows] == pytest.approx(
        [lr_at(tiny_train_cfg(steps=10, lr_schedule="cosine"), s) for s in range(4)]
    )
    # The same segment again (a re-run script after a kill) takes no step past --stop-at.
    train_codec([data_dir], tmp_path / "run", cfg, tiny_codec_cfg, resume=True, progress=False, vocab=toy_vocab)
    assert json.loads((tmp_path / "run" / "train_state.json").read_text())["step"] == 4
    train_codec(
        [data_dir],
        tmp_path / "run",
        tiny_train_cfg(steps=10),
        tiny_codec_cfg,
        resume=True,
        progress=False,
        vocab=toy_vocab,
    )
    assert json.loads((tmp_path / "run" / "train_state.json").read_text())["step"] == 10


def test_low_band_loss_sees_only_the_low_band(
    tmp_path: Path, data_dir: Path, tiny_codec_cfg: CodecConfig, toy_vocab: Vocabulary
) -> None:
    """``low_mag`` measures what the output adds below ``low_band_hz`` and ignores the rest; the
    trainer adds it (and logs it) only when ``w_low_band`` is set."""
    from uniaudio_cli.train.losses import SpectralLoss

    t = torch.arange(16000) / SR
    voiced = sum(torch.sin(2 * torch.pi * k * 150 * t) / k for k in range(1, 30)).view(1, 1, -1)
    noise = 0.05 * torch.randn_like(voiced)
    spectrum = torch.fft.rfft(noise)
    freqs = torch.fft.rfftfreq(noise.shape[-1], 1 / SR)
    low_noise = torch.fft.irfft(spectrum * (freqs < 900), n=noise.shape[-1])
    high_noise = torch.fft.irfft(spectrum * (freqs > 2000), n=noise.shape[-1])
    loss = SpectralLoss(SR, low_band_hz=1000.0)
    low, high = loss(voiced + low_noise, voiced), loss(voiced + high_noise, voiced)
    assert loss(voiced, voiced).low_mag < 1e-4
    assert high.low_mag < 0.1 * low.low_mag
    assert high.stft_mag > 0.5 * low.stft_mag  # the all-bin loss sees both
    assert SpectralLoss(SR)(voiced + low_noise, voiced).low_mag == 0

    plain, weighted = tmp_path / "plain", tmp_path / "weighted"
    for out, w in ((plain, 0.0), (weighted, 2.0)):
        cfg = tiny_train_cfg(steps=2, w_low_band=w)
        train_codec([data_dir], out, cfg, tiny_codec_cfg, progress=False, vocab=toy_vocab)
    assert all("low_mag" not in r for r in metrics(plain))
    rows = [r for r in metrics(weighted) if "mel" in r]
    assert rows and all(r["low_mag"] > 0 for r in rows)
    assert rows[0]["loss"] > next(r for r in metrics(plain) if "mel" in r)["loss"]


def test_training_runs_without_the_post_filter(
    tmp_path: Path, data_dir: Path, tiny_codec_cfg: CodecConfig, toy_vocab: Vocabulary
) -> None:
    from uniaudio_cli.codec.checkpoint import load_codec_weights
    from uniaudio_cli.codec.export import export_codec

    base = train_codec(
        [data_dir], tmp_path / "base", tiny_train_cfg(steps=2), tiny_codec_cfg, progress=False, vocab=toy_vocab
    )
    shipped = export_codec(base, tmp_path / "shipped", contrast=1.2, contrast_smooth=9)
    tuned = train_codec(
        [data_dir],
        tmp_path / "tuned",
        tiny_train_cfg(steps=2, init_from=str(shipped)),
        None,
        progress=False,
        vocab=toy_vocab,
    )
    assert load_codec_weights(shipped)[0].small_contrast == 1.2
    tuned_cfg = load_codec_weights(tuned)[0]
    assert (tuned_cfg.small_contrast, tuned_cfg.small_contrast_smooth) == (1.0, 0)


def test_intelligibility_loss_follows_stoi(
    tmp_path: Path, data_dir: Path, tiny_codec_cfg: CodecConfig, toy_vocab: Vocabulary
) -> None:
    """One minus the differentiable STOI is zero for the target itself, ignores the prediction's
    level and the target's silence, rises as noise drowns the speech-like envelopes as pystoi's
    STOI falls, and the trainer adds it (and logs it) only when ``w_stoi`` is set."""
    from pystoi import stoi

    from uniaudio_cli.train.losses import IntelligibilityLoss

    gen = torch.Generator().manual_seed(0)
    t = torch.arange(2 * SR) / SR
    # Harmonics under a 4 Hz syllable envelope whose formant moves: band envelopes that vary.
    envelope = 0.5 * (1 + torch.sin(2 * torch.pi * 4 * t)) ** 2
    voiced = sum(
        torch.sin(2 * torch.pi * k * 140 * t) * (1 + torch.sin(2 * torch.pi * 1.5 * t + k)) / k for k in range(1, 25)
    )
    target = (0.1 * envelope * voiced).view(1, 1, -1)
    loss = IntelligibilityLoss(SR)
    assert loss(target, target) < 1e-4
    noisy = [
        target + target.std() * 10 ** (-snr / 20) * torch.randn(target.shape, generator=gen) for snr in (20, 5, -5)
    ]
    ours = [float(loss(y, target)) for y in noisy]
    reference = [1 - stoi(target[0, 0].numpy(), y[0, 0].numpy(), SR) for y in noisy]
    assert ours == sorted(ours) and ours[0] < 0.5 * ours[-1]
    assert np.allclose(ours, reference, atol=0.08), (ours, reference)
    assert float(loss(3.0 * noisy[1], target)) == pytest.approx(ours[1], abs=1e-4)
    silence = torch.zeros(1, 1, SR)
    padded = loss(
        torch.cat([noisy[1], 1e-3 * torch.randn(silence.shape, generator=gen)], -1), torch.cat([target, silence], -1)
    )
    assert float(padded) == pytest.approx(ours[1], abs=0.02)
    pred = noisy[2].clone().requires_grad_(True)
    loss(pred, target).backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0

    plain, weighted = tmp_path / "plain", tmp_path / "weighted"
    for out, w in ((plain, 0.0), (weighted, 2.0)):
        train_codec([data_dir], out, tiny_train_cfg(steps=2, w_stoi=w), tiny_codec_cfg, progress=False, vocab=toy_vocab)
    assert all("stoi" not in r for r in metrics(plain))
    rows = [r for r in metrics(weighted) if "mel" in r]
    assert rows and all(0 < r["stoi"] <= 2 for r in rows)


def test_excess_loss_counts_only_added_energy(tmp_path: Path, data_dir: Path, tiny_codec_cfg, toy_vocab) -> None:
    """``SpectralLoss.excess`` is zero for the target and for a quieter copy (energy taken away),
    positive for a louder copy or added noise, grows with what is added, and the trainer adds it
    (and logs it) only when ``w_excess`` is set."""
    from uniaudio_cli.train.losses import SpectralLoss

    gen = torch.Generator().manual_seed(0)
    t = torch.arange(SR) / SR
    target = (0.1 * sum(torch.sin(2 * torch.pi * k * 150 * t) / k for k in range(1, 20))).view(1, 1, -1)
    spectral = SpectralLoss(SR)
    assert float(spectral(target, target).excess) == 0.0
    assert float(spectral(0.5 * target, target).excess) == 0.0  # less energy: the L1's business alone
    louder = float(spectral(2.0 * target, target).excess)
    # log 2 in every bin above the floor both sides are clamped to (bins below it count 0).
    assert 0.5 * np.log(2.0) < louder <= np.log(2.0) + 1e-4
    noise = [
        float(spectral(target + a * torch.randn(target.shape, generator=gen), target).excess) for a in (0.001, 0.01)
    ]
    assert 0 < noise[0] < noise[1]

    plain, weighted = tmp_path / "plain", tmp_path / "weighted"
    for out, w in ((plain, 0.0), (weighted, 3.0)):
        train_codec(
            [data_dir], out, tiny_train_cfg(steps=2, w_excess=w), tiny_codec_cfg, progress=False, vocab=toy_vocab
        )
    assert all("excess" not in r for r in metrics(plain))
    rows = [r for r in metrics(weighted) if "mel" in r]
    assert rows and all(r["excess"] >= 0 for r in rows)


def test_perceptual_quality_loss_behaves_like_pesq(tmp_path: Path, data_dir: Path, tiny_codec_cfg, toy_vocab) -> None:
    """``PerceptualQualityLoss`` is near zero for the target, ignores overall gain (PESQ levels both
    signals), grows with added noise, weighs added energy over missing energy, maps to P.862.2's
    MOS range, has finite gradients on digital silence, and the trainer adds and logs it only when
    ``w_pesq`` is set."""
    from uniaudio_cli.train.losses import PerceptualQualityLoss

    gen = torch.Generator().manual_seed(0)
    t = torch.arange(SR) / SR
    # A voiced "word" in the middle of silence, with a 4 Hz syllable envelope.
    envelope = torch.clamp(torch.sin(2 * torch.pi * 2 * t), min=0.0)
    target = (0.1 * envelope * sum(torch.sin(2 * torch.pi * k * 150 * t) / k for k in range(1, 30))).view(1, 1, -1)
    q = PerceptualQualityLoss(SR)
    same = float(q.degradation(target, target))
    assert same < 0.01
    assert abs(float(q.degradation(3.0 * target, target)) - same) < 0.01
    noisy = [float(q.degradation(target + a * torch.randn(target.shape, generator=gen), target)) for a in (1e-3, 1e-2)]
    assert same < noisy[0] < noisy[1]
    # The same change in either direction: the output adding a tone in the pauses costs more than
    # the output missing it (a tone that followed the word's envelope would be a fixed equaliser,
    # which PESQ forgives).
    tone = 0.01 * torch.sin(2 * torch.pi * 2500 * t).view(1, 1, -1) * (envelope == 0)
    added = float(q.degradation(target + tone, target))
    missing = float(q.degradation(target, target + tone))
    assert added > missing > same
    mos = PerceptualQualityLoss.mos(torch.tensor([0.0, 4.0]))
    assert 4.4 < float(mos[0]) < 4.7 and 1.0 < float(mos[1]) < 1.5

    pred = torch.zeros(2, 1, SR // 2, requires_grad=True)
    q(pred, torch.zeros(2, 1, SR // 2)).backward()
    assert pred.grad is not None and bool(torch.isfinite(pred.grad).all())

    plain, weighted = tmp_path / "plain", tmp_path / "weighted"
    for out, w in ((plain, 0.0), (weighted, 1.0)):
        train_codec([data_dir], out, tiny_train_cfg(steps=2, w_pesq=w), tiny_codec_cfg, progress=False, vocab=toy_vocab)
    assert all("pesq_loss" not in r for r in metrics(plain))
    rows = [r for r in metrics(weighted) if "mel" in r]
    assert rows and all(r["pesq_loss"] >= 0 for r in rows)
