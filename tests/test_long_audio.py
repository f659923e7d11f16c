"""Long audio in constant memory: chunked encoding/decoding equals one whole pass (the seams are
exact), files are read and written block by block, and denoising streams.

Windows here are 1-2 s so that a clip of a few seconds crosses many seams; the shipped defaults
are 10 s (encode) and 30 s (decode). The tolerance is exact equality of codes and of decoded
samples for the small backbone: with a context of at least the receptive field, every kept code
and sample is computed from the same inputs by the same per-frame arithmetic as in the whole
pass. (The published backbone's tanh output differs in the last float bits; its test allows 1e-4.)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.conftest import tiny_config, tiny_vocabulary, write_tone
from tests.test_tasks import tiny_models, write_pairs
from uniaudio_cli.audio import load_audio, open_audio, probe_audio, write_audio, write_audio_blocks
from uniaudio_cli.bridge import codebook_tables
from uniaudio_cli.codec.chunked import (
    StreamingDecoder,
    StreamingEncoder,
    decoder_context_frames,
    encoder_context_frames,
    unit_frames,
)
from uniaudio_cli.codec.config import CodecConfig
from uniaudio_cli.codec.model import LLMCodec
from uniaudio_cli.codec.published import set_noise
from uniaudio_cli.codec.published_ckpt import make_synthetic_published_state_dict
from uniaudio_cli.errors import AudioError, OutputExistsError
from uniaudio_cli.tasks.denoise import DenoiseOptions, Denoiser, load_pair_folder
from uniaudio_cli.tasks.options import MaskSettings

SR = 16000
CPU = torch.device("cpu")


def small_codec(**overrides: object) -> LLMCodec:
    vocab = tiny_vocabulary()
    cfg = dataclasses.replace(tiny_config(vocab), **overrides)
    torch.manual_seed(0)
    model = LLMCodec(cfg).eval()
    assert cfg.vocab is not None
    model.set_codebooks(*codebook_tables(cfg.vocab, vocab))
    return model


PUBLISHED = CodecConfig(
    backbone="published",
    encoder_dim=4,
    latent_dim=64,
    decoder_dim=64,
    codebook_sizes=[50, 80, 80],
    codebook_dims=[16, 16, 16],
)


def published_codec(**overrides: object) -> LLMCodec:
    cfg = dataclasses.replace(PUBLISHED, **overrides)
    model = LLMCodec(cfg)
    model.load_state_dict(make_synthetic_published_state_dict(cfg, seed=0), strict=True)
    set_noise(model, enabled=False)  # deterministic, so chunked and whole decodes can be compared
    return model.eval()


# Layer counts of the shipped codec (4 encoder, 6 decoder blocks) and of a codec trained with more
# fine blocks and a longer STFT, besides the 1-block test codec.
SMALL_VARIANTS = [
    {},
    {"small_encoder_layers": 4, "small_decoder_layers": 6, "small_fine_layers": 1},
    {"small_encoder_layers": 4, "small_decoder_layers": 6, "small_fine_layers": 4},
    {"small_encoder_layers": 3, "small_decoder_layers": 2, "small_fine_layers": 2, "small_n_fft": 1024},
]
PUBLISHED_VARIANTS = [{}, {"attn_window_size": 0}, {"encoder_rates": [2, 4, 5, 6], "decoder_rates": [6, 5, 4, 2]}]


def speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise bursts and tones with silences: every kind of frame a seam may fall on."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    env = (np.sin(2 * np.pi * 0.7 * t) > -0.3).astype(np.float32)
    wav = 0.2 * np.sin(2 * np.pi * (200 + 300 * np.sin(0.5 * t)) * t) + 0.1 * rng.standard_normal(n)
    return (env * wav).astype(np.float32)


def whole_codes(model: LLMCodec, wav: np.ndarray) -> list[list[int]]:
    return [c[0].tolist() for c in model.encode(torch.from_numpy(wav).view(1, 1, -1))]


def chunked_codes(model: LLMCodec, wav: np.ndarray, window: float, block: int | None = None, **kw) -> list[list[int]]:
    enc = StreamingEncoder(model, CPU, window_seconds=window, **kw)
    out: list[list[int]] = [[] for _ in model.cfg.vq_strides]
    for i in range(0, len(wav), block or len(wav)):
        for layer, new in zip(out, enc.push(wav[i : i + (block or len(wav))]), strict=True):
            layer += new
    for layer, new in zip(out, enc.finish(), strict=True):
        layer += new
    assert enc.num_samples == len(wav)
    return out


def whole_decode(model: LLMCodec, codes: list[list[int]], length: int | None) -> np.ndarray:
    return model.decode([torch.tensor(c)[None] for c in codes], length)[0, 0].numpy()


def chunked_decode(
    model: LLMCodec, codes: list[list[int]], length: int | None, window: float, piece: int | None = None, **kw
) -> np.ndarray:
    dec = StreamingDecoder(model, CPU, length, window_seconds=window, **kw)
    out: list[np.ndarray] = []
    n = len(codes[-1])
    step = piece or n  # in codes of the finest layer; a multiple of the coarsest layer's ratio to it
    ratio = [s // model.cfg.vq_strides[-1] for s in model.cfg.vq_strides]
    for i in range(0, n, step):
        out += list(dec.push([c[i // r : (i + step) // r] for c, r in zip(codes, ratio, strict=True)]))
    out += list(dec.finish())
    return np.concatenate(out)


def snr_db(ref: np.ndarray, test: np.ndarray) -> float:
    err = float(np.sum((ref.astype(np.float64) - test) ** 2))
    return float("inf") if err == 0 else 10 * np.log10(float(np.sum(ref.astype(np.float64) ** 2)) / err)


# -- receptive fields ------------------------------------------------------------------------


def _encoder_reach(model: LLMCodec, frames: int = 120, j: int = 60) -> int:
    """Frames of audio each side that latent frame ``j`` depends on, measured with autograd."""
    hop = model.cfg.hop_length
    torch.manual_seed(1)
    x = torch.randn(1, 1, frames * hop, requires_grad=True)
    model.encoder(x)[..., j].sum().backward()
    nz = (x.grad[0, 0] != 0).nonzero()[:, 0]
    left = j * hop - int(nz.min())
    right = int(nz.max()) + 1 - (j + 1) * hop
    return -(-max(left, right) // hop)


def _decoder_reach(model: LLMCodec, frames: int = 120, j: int = 60) -> int:
    """Latent frames each side that the samples of frame ``j`` depend on, measured with autograd."""
    hop = model.cfg.hop_length
    torch.manual_seed(1)
    z = torch.randn(1, model.cfg.latent_dim, frames, requires_grad=True)
    model.decoder(z)[..., j * hop : (j + 1) * hop].sum().backward()
    nz = (z.grad[0].abs().sum(0) != 0).nonzero()[:, 0]
    return max(j - int(nz.min()), int(nz.max()) - j)


@pytest.mark.parametrize("overrides", SMALL_VARIANTS)
def test_small_context_bounds_the_receptive_field(overrides) -> None:
    model = small_codec(**overrides)
    for j in (60, 61, 62, 63):  # every phase within a pooling unit
        assert _encoder_reach(model, j=j) <= encoder_context_frames(model.cfg)
        assert _decoder_reach(model, j=j) <= decoder_context_frames(model.cfg)


@pytest.mark.parametrize("overrides", PUBLISHED_VARIANTS)
def test_published_context_bounds_the_receptive_field(overrides) -> None:
    model = published_codec(**overrides)
    for j in range(40, 48):  # every position within an attention window
        assert _encoder_reach(model, 96, j) <= encoder_context_frames(model.cfg)
        assert _decoder_reach(model, 96, j) <= decoder_context_frames(model.cfg)


def test_shipped_codec_context_is_small() -> None:
    """The shipped configuration's context: 13 and 21 frames (0.4 and 0.65 s) each side."""
    cfg = CodecConfig()
    assert (encoder_context_frames(cfg), decoder_context_frames(cfg), unit_frames(cfg)) == (13, 21, 4)


# -- chunked == whole ------------------------------------------------------------------------


@pytest.mark.parametrize("overrides", SMALL_VARIANTS[:3])
def test_chunked_encode_equals_whole(overrides) -> None:
    model = small_codec(**overrides)
    wav = speechlike(12.3)
    whole = whole_codes(model, wav)
    # 1 s windows: 12 seams; blocks of odd sizes arrive across window edges.
    assert chunked_codes(model, wav, window=1.0) == whole
    assert chunked_codes(model, wav, window=1.0, block=7919) == whole
    assert chunked_codes(model, wav, window=2.5, block=SR) == whole


def test_short_clip_is_one_whole_pass() -> None:
    model = small_codec()
    for n in (1, 479, 1920, 1921, int(1.7 * SR)):
        wav = speechlike(n / SR + 1e-9)[:n] if n > 1 else np.full(1, 0.1, np.float32)
        assert chunked_codes(model, wav, window=1.0) == whole_codes(model, wav)


@pytest.mark.parametrize("overrides", [*SMALL_VARIANTS[:3], {"small_contrast": 1.1}])
def test_chunked_decode_equals_whole(overrides) -> None:
    model = small_codec(**overrides)
    wav = speechlike(12.3)
    codes = whole_codes(model, wav)
    ref = whole_decode(model, codes, len(wav))
    for window, piece in ((1.0, None), (1.0, 13 * 4), (2.0, 100 * 4)):
        got = chunked_decode(model, codes, len(wav), window, piece)
        assert got.shape == ref.shape
        assert np.array_equal(got, ref), f"max diff {np.abs(got - ref).max():.3g}, SNR {snr_db(ref, got):.1f} dB"


def harmonic_codec() -> LLMCodec:
    """A small codec with the harmonic head, its pitch and mix weights drawn at random so the
    pitch moves and the oscillator carries much of the output."""
    model = small_codec(small_harmonic=True)
    head = model.decoder.head
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        last = head.pitch_proj[-1]
        last.weight.copy_(0.5 * torch.randn(last.weight.shape, generator=g))
        last.bias[-1] = 2.0  # mostly voiced
        head.mix.weight.copy_(torch.randn(head.mix.weight.shape, generator=g))
        head.mix.bias.fill_(1.0)
    return model


def test_chunked_decode_carries_the_oscillator_phase() -> None:
    """The harmonic head's phase accumulates over the whole clip; windows are anchored to the
    phase the previous window computed, so seams match the whole decode up to float rounding."""
    model = harmonic_codec()
    wav = speechlike(12.3)
    codes = whole_codes(model, wav)
    ref = whole_decode(model, codes, len(wav))
    for window, piece in ((1.0, None), (2.0, 13 * 4)):
        got = chunked_decode(model, codes, len(wav), window, piece)
        assert got.shape == ref.shape
        assert snr_db(ref, got) > 60, f"SNR {snr_db(ref, got):.1f} dB"


def test_chunked_decode_without_the_phase_carry_breaks() -> None:
    """The check above can fail: windows that each restart the oscillator differ audibly."""
    model = harmonic_codec()
    wav = speechlike(6.0)
    codes = whole_codes(model, wav)
    ref = whole_decode(model, codes, len(wav))
    dec = StreamingDecoder(model, CPU, len(wav), window_seconds=1.0)
    real = model.decode_with_phase
    model.decode_with_phase = lambda seg, phase0, anchor: real(seg)  # type: ignore[method-assign]
    got = np.concatenate([*dec.push(codes), *dec.finish()])
    assert snr_db(ref, got) < 20


def test_decode_of_codes_not_filling_a_unit() -> None:
    """LLM-written codes need not fill whole units (8 frames with the published attention
    windows): the tail is padded by repeating the last codes, as LLMCodec.decode does."""
    model = published_codec()
    codes = whole_codes(model, speechlike(5.0))
    cut = [c[: len(c) - 4 // s] for c, s in zip(codes, model.cfg.vq_strides, strict=True)]  # 4 frames short
    assert len(cut[-1]) % unit_frames(model.cfg)
    ref = whole_decode(model, cut, None)
    got = chunked_decode(model, cut, None, 1.0)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_context_below_the_receptive_field_shows_at_the_seams() -> None:
    """Control: without context the seams differ, so the equality above is not vacuous."""
    model = small_codec(small_encoder_layers=4, small_decoder_layers=6)
    wav = speechlike(8.0)
    codes = whole_codes(model, wav)
    ref = whole_decode(model, codes, len(wav))
    got = chunked_decode(model, codes, len(wav), 1.0, context_frames=0)
    assert not np.array_equal(got, ref)
    seam = 36 * model.cfg.hop_length  # the first window ends there: 1 s = 33.3 frames, rounded up to a unit
    diff = np.abs(got - ref)
    assert diff[seam - 200 : seam + 200].max() > 10 * max(diff[seam // 4 : seam // 2].max(), 1e-9)


@pytest.mark.parametrize("overrides", PUBLISHED_VARIANTS[:2])
def test_published_chunked_equals_whole(overrides) -> None:
    model = published_codec(**overrides)
    wav = speechlike(9.3)
    codes = whole_codes(model, wav)
    assert chunked_codes(model, wav, window=1.0, block=5000) == codes
    ref = whole_decode(model, codes, len(wav))
    got = chunked_decode(model, codes, len(wav), 1.0)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=1e-4)
    assert snr_db(ref, got) > 80


def test_streaming_misuse_is_refused() -> None:
    model = small_codec()
    enc = StreamingEncoder(model, CPU)
    with pytest.raises(ValueError, match="no samples"):
        enc.finish()
    enc = StreamingEncoder(model, CPU)
    enc.push(np.ones(100, np.float32) * 0.1)
    enc.finish()
    with pytest.raises(RuntimeError, match="after finish"):
        enc.push(np.ones(10, np.float32))
    dec = StreamingDecoder(model, CPU)
    with pytest.raises(ValueError, match="differ in frames"):
        dec.push([[1], [1, 2, 3], [1]])


# -- the Codec object, files in and out ------------------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory):
    llm, codec = tiny_models(tmp_path_factory.mktemp("tiny_models"))
    codec.encode_window_seconds = 1.0
    codec.decode_window_seconds = 1.5
    return llm, codec


def test_codec_file_round_trip_streams_and_equals_whole(models, tmp_path: Path) -> None:
    _, codec = models
    wav = speechlike(7.7)
    # 44.1 kHz stereo: the reader downmixes and resamples block by block.
    src = tmp_path / "long.flac"
    t = np.arange(int(7.7 * 44100)) / 44100
    stereo = np.stack([0.2 * np.sin(2 * np.pi * 220 * t), 0.1 * np.sin(2 * np.pi * 330 * t)], axis=1)
    sf.write(src, stereo, 44100)
    for path in (src, write_audio(tmp_path / "long16k.wav", wav, SR)):
        ref_wav = load_audio(path, SR)
        clip = codec.encode_file(path)
        assert clip.num_samples == len(ref_wav)
        whole = [c[0].tolist() for c in codec.model.encode(torch.from_numpy(ref_wav).view(1, 1, -1))]
        assert clip.codes == codec.bridge.to_token_ids(whole)
        blocks = list(codec.decode_clip_blocks(clip))
        assert len(blocks) > 3  # decoded window by window
        ref = codec.model.decode([torch.tensor(c)[None] for c in whole], len(ref_wav))[0, 0].numpy()
        assert np.array_equal(np.concatenate(blocks), ref)
        assert np.array_equal(codec.decode_clip(clip), ref)


def test_reader_blocks_equal_load_audio(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for rate, channels in ((16000, 1), (44100, 2), (22050, 1), (8000, 2)):
        path = tmp_path / f"x{rate}_{channels}.wav"
        data = (0.3 * rng.standard_normal((int(3.3 * rate) + 11, channels))).astype(np.float32)
        sf.write(path, data, rate, subtype="FLOAT")
        reader = open_audio(path, SR)
        blocks = list(reader.blocks(block_seconds=0.37))
        assert len(blocks) > 5
        got = np.concatenate(blocks)
        ref = load_audio(path, SR)
        assert got.dtype == np.float32 and len(got) == reader.num_samples == len(ref)
        np.testing.assert_array_equal(got, ref)
        if rate != SR:  # the same as resampling the whole file at once with librosa (soxr HQ)
            import librosa

            mono = data.mean(axis=1) if channels > 1 else data[:, 0]
            whole = librosa.resample(mono, orig_sr=rate, target_sr=SR, res_type="soxr_hq")
            np.testing.assert_array_equal(got, whole)


def test_reader_errors_name_the_file(tmp_path: Path) -> None:
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(3 * SR, np.float32), SR)
    reader = open_audio(silent, SR)
    with pytest.raises(AudioError, match="is silent") as e:
        list(reader.blocks(block_seconds=1.0))
    assert str(silent) in str(e.value)
    assert len(list(open_audio(silent, SR, allow_silence=True).blocks())) >= 1
    with pytest.raises(AudioError, match="limit is 2 s"):
        open_audio(write_tone(tmp_path / "long.wav", seconds=3.0), SR, max_seconds=2)
    bad = tmp_path / "nan.wav"
    data = np.full(2 * SR, 0.1, np.float32)
    data[SR + 5] = np.nan
    sf.write(bad, data, SR, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        list(open_audio(bad, SR).blocks(block_seconds=0.5))
    with pytest.raises(AudioError, match="is silent"):
        probe_audio(silent, read=True)


def test_block_writer_is_atomic_and_equals_whole_write(tmp_path: Path) -> None:
    wav = speechlike(3.0)
    whole = write_audio(tmp_path / "whole.wav", wav, SR)
    blocks = write_audio_blocks(tmp_path / "blocks.wav", (wav[i : i + 4001] for i in range(0, len(wav), 4001)), SR)
    assert np.array_equal(sf.read(whole, dtype="int16")[0], sf.read(blocks, dtype="int16")[0])
    with pytest.raises(OutputExistsError):
        write_audio_blocks(blocks, [wav], SR)

    def failing():
        yield wav[:1000]
        raise AudioError("x.wav: broken halfway", "fix it")

    with pytest.raises(AudioError, match="broken halfway"):
        write_audio_blocks(tmp_path / "partial.wav", failing(), SR)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocks.wav", "whole.wav"]  # no output, no temp file


# -- denoise ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "opts",
    [
        DenoiseOptions(pairs=2, mask=MaskSettings(window_seconds=1.0, overlap_seconds=0.1)),
        DenoiseOptions(mode="paper", pairs=2, segment_seconds=0.5),
    ],
    ids=["default", "paper"],
)
def test_denoise_streams_and_equals_whole(models, tmp_path: Path, opts: DenoiseOptions) -> None:
    llm, codec = models
    den = Denoiser.from_pairs(llm, codec, load_pair_folder(write_pairs(tmp_path / "pairs")), opts)
    wav = speechlike(5.3, seed=3)
    out = den.denoise_wav(wav)
    assert out.shape == wav.shape
    blocks = list(den.denoise_blocks(wav[i : i + 3001] for i in range(0, len(wav), 3001)))
    assert len(blocks) > 2  # written window by window
    assert np.array_equal(np.concatenate(blocks), out)
    path = write_audio(tmp_path / "noisy.wav", wav, SR)
    streamed = list(den.stream(path))
    assert np.array_equal(np.concatenate(streamed), den.denoise_wav(load_audio(path, SR)))


# -- the CLI ---------------------------------------------------------------------------------


def test_cli_encodes_and_decodes_past_the_old_600_s_limit(tmp_path: Path, tiny_codec, vocab, monkeypatch) -> None:
    """`encode` has no default length limit (memory does not grow with length) and `decode`
    writes the file window by window: 11 minutes of 8 kHz audio, resampled as it is read."""
    import json

    from typer.testing import CliRunner

    from uniaudio_cli.cli import app
    from uniaudio_cli.codec.checkpoint import save_codec

    monkeypatch.setattr("uniaudio_cli.codec.api.load_vocabulary", lambda llm=None, **_: vocab)
    codec_dir = save_codec(tiny_codec, tmp_path / "codec")
    src = tmp_path / "eleven_minutes.wav"
    with sf.SoundFile(src, "w", samplerate=8000, channels=1, subtype="PCM_16") as f:
        for k in range(11):
            f.write(0.2 * np.sin(2 * np.pi * (300 + 50 * k) * np.arange(60 * 8000) / 8000))
    runner = CliRunner()
    res = runner.invoke(app, ["encode", "--codec", str(codec_dir), "--json", "--quiet", str(src)])
    assert res.exit_code == 0, res.output
    obj = json.loads(res.stdout)
    assert obj["num_samples"] == 660 * SR and len(obj["codes"][-1]) == 660 * 100 // 3
    codes = tmp_path / "codes.json"
    codes.write_text(res.stdout)
    out = tmp_path / "out.wav"
    res = runner.invoke(app, ["decode", "--codec", str(codec_dir), "--quiet", str(codes), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert sf.info(out).frames == 660 * SR
    res = runner.invoke(app, ["encode", "--codec", str(codec_dir), "--max-seconds", "600", str(src)])
    assert res.exit_code == 1 and "660.0 s long, the limit is 600 s" in res.stderr
