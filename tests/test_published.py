"""The published (UniAudio 1.5) backbone and its checkpoint loader, on a tiny config."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from uniaudio_cli.codec.config import CodecConfig
from uniaudio_cli.codec.model import LLMCodec
from uniaudio_cli.codec.published import (
    PublishedDecoder,
    PublishedEncoder,
    WNConv1d,
    WNConvTranspose1d,
    fuse_weight_norm,
    noise_disabled,
    set_noise,
)
from uniaudio_cli.codec.published_ckpt import (
    expected_published_shapes,
    infer_published_config,
    load_published_state_dict,
    make_synthetic_published_state_dict,
    save_as_pth,
)
from uniaudio_cli.errors import CheckpointError

# latent_dim must be encoder_dim * 2**4 and attention widths multiples of the head size 64.
TINY = CodecConfig(
    backbone="published",
    encoder_dim=4,
    latent_dim=64,
    decoder_dim=64,
    codebook_sizes=[50, 80, 80],
    codebook_dims=[16, 16, 16],
)
HOP = 480

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_sd() -> dict[str, torch.Tensor]:
    return make_synthetic_published_state_dict(TINY, seed=0)


@pytest.fixture(scope="module")
def tiny_pth(tmp_path_factory: pytest.TempPathFactory, tiny_sd: dict[str, torch.Tensor]) -> Path:
    return save_as_pth(tiny_sd, tmp_path_factory.mktemp("ckpt") / "tiny.pth")


def _loaded_codec(sd: dict[str, torch.Tensor]) -> LLMCodec:
    codec = LLMCodec(TINY)
    codec.load_state_dict(sd, strict=True)
    return codec.eval()


# --------------------------------------------------------------------------- architecture


def test_encoder_decoder_shapes_and_hop() -> None:
    assert TINY.hop_length == HOP and TINY.pad_multiple == HOP * 8
    enc, dec = PublishedEncoder(TINY), PublishedDecoder(TINY)
    wav = torch.randn(2, 1, TINY.pad_multiple * 2)
    with torch.no_grad():
        z = enc(wav)
        assert z.shape == (2, TINY.latent_dim, wav.shape[-1] // HOP)
        out = dec(z)
    assert out.shape == wav.shape
    assert out.abs().max() <= 1.0  # tanh output


def test_published_codec_breaks_ties_as_the_reference() -> None:
    assert all(q.reference_ties for q in LLMCodec(TINY).quantizer.quantizers)
    small = dataclasses.replace(TINY, backbone="small")
    assert not any(q.reference_ties for q in LLMCodec(small).quantizer.quantizers)


def test_key_names_follow_published_layout() -> None:
    keys = expected_published_shapes(TINY)
    for key in (
        "encoder.block.0.weight_g",
        "encoder.block.0.weight_v",
        "encoder.block.1.block.0.block.1.weight_v",
        "encoder.block.5.norm.weight",
        "encoder.block.5.to_qkv.weight",
        "encoder.block.5.rel_pos.inv_freq",
        "encoder.block.6.weight_v",
        "quantizer.quantizers.0.codebook.weight",
        "quantizer.quantizers.2.cb_proj.bias",
        "decoder.model.2.to_out.weight",
        "decoder.model.3.block.1.weight_g",  # transposed conv
        "decoder.model.3.block.2.linear.weight_v",  # NoiseBlock
        "decoder.model.8.bias",
    ):
        assert key in keys, key
    assert "decoder.model.3.block.2.linear.bias" not in keys
    assert "encoder.block.0.weight" not in keys  # weight norm keeps only g and v
    assert keys["decoder.model.3.block.1.weight_g"] == (64, 1, 1)  # weight norm over dim 0, as the old API


def test_released_config_has_267_tensors() -> None:
    released = dataclasses.replace(
        TINY,
        encoder_dim=32,
        latent_dim=512,
        decoder_dim=1536,
        codebook_sizes=[3248, 32000, 32000],
        codebook_dims=[768, 4096, 4096],
    )
    shapes = expected_published_shapes(released)  # meta tensors: no memory
    assert len(shapes) == 267
    assert shapes["decoder.model.6.block.1.weight_v"] == (192, 96, 6)


def test_weight_norm_matches_torch_old_weight_norm() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 6, 20)
    for ours, plain in (
        (WNConv1d(6, 8, 5, padding=2, groups=2), nn.Conv1d(6, 8, 5, padding=2, groups=2)),
        (
            WNConvTranspose1d(6, 4, 6, stride=3, padding=2, output_padding=1),
            nn.ConvTranspose1d(6, 4, 6, stride=3, padding=2, output_padding=1),
        ),
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            old = nn.utils.weight_norm(plain)
        with torch.no_grad():
            old.weight_g.uniform_(0.5, 2.0)
        assert set(old.state_dict()) == set(ours.state_dict()) == {"bias", "weight_g", "weight_v"}
        ours.load_state_dict(old.state_dict())
        assert torch.equal(ours(x), old(x))


def test_fuse_weight_norm_keeps_outputs_and_keys(tiny_sd: dict[str, torch.Tensor]) -> None:
    codec = _loaded_codec(tiny_sd)
    z = torch.randn(1, TINY.latent_dim, 8)
    with torch.no_grad(), noise_disabled(codec):
        before = codec.decoder(z)
        fuse_weight_norm(codec)
        after = codec.decoder(z)
    torch.testing.assert_close(after, before)
    assert set(codec.state_dict()) == set(tiny_sd)
    # loading new weights must not keep serving the cached product
    codec.load_state_dict(make_synthetic_published_state_dict(TINY, seed=1), strict=True)
    with torch.no_grad(), noise_disabled(codec):
        assert not torch.allclose(codec.decoder(z), before)


def test_noise_control(tiny_sd: dict[str, torch.Tensor]) -> None:
    codec = _loaded_codec(tiny_sd)
    z = torch.randn(1, TINY.latent_dim, 8)
    with torch.no_grad():
        with noise_disabled(codec):
            clean = [codec.decoder(z), codec.decoder(z)]
        assert torch.equal(clean[0], clean[1])
        assert not torch.equal(codec.decoder(z), clean[0])  # noise is back on after the context
        seeded = []
        for _ in range(2):
            set_noise(codec, enabled=True, generator=torch.Generator().manual_seed(3))
            seeded.append(codec.decoder(z))
        assert torch.equal(seeded[0], seeded[1])
        set_noise(codec, enabled=False)
        assert torch.equal(codec.decoder(z), clean[0])


def test_attention_needs_whole_windows() -> None:
    with pytest.raises(ValueError, match="window"):
        PublishedDecoder(TINY)(torch.randn(1, TINY.latent_dim, 12))


# --------------------------------------------------------------------------- checkpoint round trip


def test_round_trip_through_pth(tiny_pth: Path, tiny_sd: dict[str, torch.Tensor]) -> None:
    cfg, sd = load_published_state_dict(tiny_pth)
    assert cfg.backbone == "published" and cfg.vocab is None
    assert cfg == TINY
    assert set(sd) == set(tiny_sd) and all(torch.equal(sd[k], tiny_sd[k]) for k in sd)
    codec = _loaded_codec(sd)
    assert torch.equal(codec.quantizer.quantizers[1].codebook.weight, tiny_sd["quantizer.quantizers.1.codebook.weight"])
    wav = 0.1 * torch.randn(1, 1, 5000)
    codes = codec.encode(wav)
    assert [c.shape[-1] for c in codes] == codec.codes_length(5000) == [4, 8, 16]
    with noise_disabled(codec):
        assert codec.decode(codes, length=5000).shape == (1, 1, 5000)


@pytest.mark.parametrize(
    "changes",
    [
        {"noise": False, "depthwise": False},
        {"encoder_rates": [2, 4, 5, 6], "decoder_rates": [6, 5, 4, 2], "attn_window_size": 0},
    ],
)
def test_config_inferred_from_shapes(changes: dict) -> None:
    cfg = dataclasses.replace(TINY, **changes)
    sd = make_synthetic_published_state_dict(cfg, seed=0)
    inferred = infer_published_config(sd)
    assert inferred == dataclasses.replace(cfg, attn_window_size=8 if cfg.attn_window_size else 0)


def test_prefix_and_bare_state_dict_accepted(tmp_path: Path, tiny_sd: dict[str, torch.Tensor]) -> None:
    path = tmp_path / "ddp.pth"
    torch.save({"codec_model": {f"module.{k}": v for k, v in tiny_sd.items()}, "epoch": 3}, path)
    assert set(load_published_state_dict(path)[1]) == set(tiny_sd)
    torch.save(tiny_sd, path)
    assert set(load_published_state_dict(path)[1]) == set(tiny_sd)


# --------------------------------------------------------------------------- errors


def _save(tmp_path: Path, sd: dict[str, torch.Tensor]) -> Path:
    return save_as_pth(sd, tmp_path / "bad.pth")


def test_wrong_shape_is_a_checkpoint_error(tmp_path: Path, tiny_sd: dict[str, torch.Tensor]) -> None:
    sd = dict(tiny_sd)
    sd["decoder.model.2.to_out.weight"] = torch.zeros(64, 32)
    with pytest.raises(CheckpointError, match=r"bad\.pth.*decoder\.model\.2\.to_out\.weight") as e:
        load_published_state_dict(_save(tmp_path, sd))
    assert e.value.fix


def test_missing_and_unexpected_keys_are_checkpoint_errors(tmp_path: Path, tiny_sd: dict[str, torch.Tensor]) -> None:
    sd = {k: v for k, v in tiny_sd.items() if k != "decoder.model.8.bias"}
    with pytest.raises(CheckpointError, match=r"missing keys: decoder\.model\.8\.bias"):
        load_published_state_dict(_save(tmp_path, sd))
    sd = {**tiny_sd, "encoder.extra.weight": torch.zeros(3)}
    with pytest.raises(CheckpointError, match=r"unexpected keys: encoder\.extra\.weight"):
        load_published_state_dict(_save(tmp_path, sd))
    sd = {k: v for k, v in tiny_sd.items() if not k.startswith("quantizer.quantizers.2.")}
    with pytest.raises(CheckpointError, match="quantizer layers"):
        load_published_state_dict(_save(tmp_path, sd))


def test_not_a_checkpoint(tmp_path: Path) -> None:
    text = tmp_path / "notes.pth"
    text.write_text("this is not a checkpoint\n")
    with pytest.raises(CheckpointError, match=r"notes\.pth"):
        load_published_state_dict(text)
    with pytest.raises(CheckpointError, match="no such file"):
        load_published_state_dict(tmp_path / "absent.pth")
    other = tmp_path / "other.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, other)
    with pytest.raises(CheckpointError, match="codec_model"):
        load_published_state_dict(other)


class _Payload:
    """Unpickling this calls ``open(path, "w")``: a visible side effect if code is executed."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple:
        return (open, (self.path, "w"))


def test_pickled_code_is_never_executed(tmp_path: Path, tiny_sd: dict[str, torch.Tensor]) -> None:
    marker = tmp_path / "executed"
    path = tmp_path / "trojan.pth"
    torch.save({"codec_model": tiny_sd, "extra": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match=r"trojan\.pth.*pickled") as e:
        load_published_state_dict(path)
    assert not marker.exists()
    assert "weights_only=False" in (e.value.fix or "")
    # sanity: the payload does run when unpickled without weights_only
    torch.load(path, weights_only=False)["extra"].close()
    assert marker.exists()


def test_load_codec_published_pth_encode_decode(tiny_pth: Path) -> None:
    from uniaudio_cli.codec.api import load_codec

    codec = load_codec(tiny_pth, device="cpu")
    wav = torch.randn(HOP * 11).numpy() * 0.1
    ids = codec.encode(wav)
    frames = -(-len(wav) // TINY.pad_multiple) * TINY.pad_multiple // HOP
    assert [len(c) for c in ids] == [frames // 4, frames // 2, frames]
    assert codec.decode(ids, length=len(wav)).shape == (len(wav),)
    # Codes an LLM writes need not fill whole attention windows: decode pads and crops.
    short = [ids[0][:1], ids[1][:2], ids[2][:4]]
    assert codec.decode(short).shape == (4 * HOP,)
    # Noise is seeded, so a fresh load decodes identically.
    again = load_codec(tiny_pth, device="cpu")
    assert (again.decode(ids) == load_codec(tiny_pth, device="cpu").decode(ids)).all()


def test_a_word_list_layer_1_is_shown_as_indices_and_refused_by_the_tasks(
    tiny_pth: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TINY's layer 1 (50 codes) is not the LLM's table (80): like the released 3,248-word
    checkpoint, its codes index a word list, so no task may read them as token ids."""
    import uniaudio_cli as ua
    from uniaudio_cli import llm as llm_module
    from uniaudio_cli.codec.api import load_codec
    from uniaudio_cli.errors import CheckpointError
    from uniaudio_cli.vocab import Vocabulary

    codec = load_codec(tiny_pth, device="cpu")
    ids = codec.encode(torch.randn(HOP * 8).numpy() * 0.1)
    assert codec.token_text(ids)[0].split() == [f"w{i}" for i in ids[0]]
    vocab = Vocabulary("tiny-llama", None, torch.randn(80, 16), special_ids=[])
    monkeypatch.setattr(llm_module, "load_vocabulary", lambda *a, **k: vocab)
    monkeypatch.setattr(llm_module, "load_llm", lambda *a, **k: pytest.fail("the LLM was loaded"))
    with pytest.raises(CheckpointError, match="indexes its own 50-word list") as err:
        ua.load_models(llm="tiny-llama", codec=str(tiny_pth), device="cpu")
    assert "full LLaMA table" in err.value.fix


def test_a_published_codec_keeps_its_centre_beside_the_pth(tiny_pth: Path, models, tmp_path: Path) -> None:
    """The prototype and fused methods' base-set centre for a published ``.pth``: a file beside
    it, tied to its code weights (a folder checkpoint keeps it inside)."""
    import shutil

    from uniaudio_cli.codec.api import load_codec
    from uniaudio_cli.tasks.prototype import center_path, load_center, save_center

    llm, _ = models
    pth = Path(shutil.copy(tiny_pth, tmp_path / "llm3_codec_uni.pth"))
    codec = load_codec(pth, device="cpu")
    assert center_path(codec) == tmp_path / "llm3_codec_uni.prototype_center.safetensors"
    assert load_center(llm, codec) is None
    center = torch.randn(llm.model.config.num_hidden_layers + 1, llm.model.config.hidden_size)
    save_center(center_path(codec), center, llm, codec, "{}")
    assert torch.equal(load_center(llm, codec), center)
