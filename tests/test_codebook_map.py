"""The residual MLP beside the acoustic layers' linear codebook map, and its fitting."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from uniaudio_cli.bridge import codebook_tables
from uniaudio_cli.codec.checkpoint import build_codec, load_codec_weights, save_codec
from uniaudio_cli.codec.config import CodecConfig
from uniaudio_cli.codec.model import LLMCodec
from uniaudio_cli.errors import CheckpointError, UsageError
from uniaudio_cli.llm import Vocabulary
from uniaudio_cli.train.refit_maps import (
    fit_codebook_maps,
    layer1_residuals,
    quantization_error,
    with_map_hidden,
)


def test_a_new_map_mlp_changes_no_code_and_only_the_acoustic_layers_get_one(tiny_codec: LLMCodec) -> None:
    wide = with_map_hidden(tiny_codec, 8)
    layers = wide.quantizer.quantizers
    assert layers[0].cb_mlp is None and layers[1].cb_mlp is not None and layers[2].cb_mlp is not None
    wav = 0.1 * torch.randn(1, 1, 16000, generator=torch.Generator().manual_seed(1))
    for a, b in zip(wide.encode(wav), tiny_codec.encode(wav), strict=True):
        assert torch.equal(a, b)
    with torch.no_grad():
        layers[2].cb_mlp[2].bias.fill_(0.5)  # a trained MLP moves every row
    assert not torch.equal(layers[2].projected_codebook(), tiny_codec.quantizer.quantizers[2].projected_codebook())


def test_a_map_mlp_saves_and_loads_strictly(tmp_path: Path, tiny_codec: LLMCodec, vocab: Vocabulary) -> None:
    wide = with_map_hidden(tiny_codec, 8)
    with torch.no_grad():
        wide.quantizer.quantizers[1].cb_mlp[2].weight.normal_()
    out = save_codec(wide, tmp_path / "codec")
    cfg, sd = load_codec_weights(out)
    assert cfg.codebook_map_hidden == 8
    loaded = build_codec(cfg, sd, str(out))
    assert cfg.vocab is not None
    loaded.set_codebooks(*codebook_tables(cfg.vocab, vocab))
    torch.testing.assert_close(
        loaded.quantizer.quantizers[1].projected_codebook(), wide.quantizer.quantizers[1].projected_codebook()
    )
    # Weights with an MLP under a config without one (or the reverse) are refused by name.
    with pytest.raises(CheckpointError, match=r"unexpected.*cb_mlp"):
        build_codec(dataclasses.replace(cfg, codebook_map_hidden=0), sd, str(out))
    for bad in (-1, True, 2.5):
        data = cfg.to_dict() | {"codebook_map_hidden": bad}
        with pytest.raises(CheckpointError, match="codebook_map_hidden"):
            CodecConfig.from_dict(data, "config.json")


def test_a_search_snapshot_holds_the_mlp_too(tiny_codec: LLMCodec) -> None:
    q = with_map_hidden(tiny_codec, 8).quantizer.quantizers[1]
    with torch.no_grad():
        q.cb_mlp[2].weight.normal_(generator=torch.Generator().manual_seed(0))
    z = torch.randn(2, 16, 12)
    before = q.search(z, euclidean=True)
    q.freeze_search()
    snapshot = dict(q.search_snapshot or {})
    assert {"weight", "bias", "mlp.0.weight", "mlp.2.bias"} <= set(snapshot)
    with torch.no_grad():
        q.cb_mlp[2].weight.neg_()
    assert torch.equal(q.search(z, euclidean=True), before)  # ranks with the frozen MLP
    q.unfreeze_search()
    after = q.search(z, euclidean=True)
    assert not torch.equal(after, before)
    q.freeze_search(snapshot)
    assert torch.equal(q.search(z, euclidean=True), before)  # a saved snapshot rebuilds the same table
    with pytest.raises(ValueError, match="snapshot"):
        q.freeze_search((q.cb_proj.weight, q.cb_proj.bias))  # a linear-only snapshot for an MLP map


def test_fitting_the_maps_lowers_the_error_and_leaves_the_rest_alone(tiny_codec: LLMCodec) -> None:
    model = with_map_hidden(tiny_codec, 16)
    model.quantizer.residual_search = "euclidean"
    g = torch.Generator().manual_seed(0)
    clips = [0.2 * torch.randn(8000, generator=g) for _ in range(6)]
    residuals = layer1_residuals(model, clips)
    assert residuals.shape[1:] == (2, 16)  # windows of the largest acoustic stride
    acoustic = ("quantizers.1.", "quantizers.2.")
    frozen = {k: v.clone() for k, v in model.state_dict().items() if not any(a in k for a in acoustic)}
    before = quantization_error(model, residuals)
    losses = fit_codebook_maps(model, residuals, steps=60, lr=1e-2, batch=64)
    after = quantization_error(model, residuals)
    assert len(losses) == 60
    assert after < 0.8 * before, (before, after)
    for k, v in model.state_dict().items():
        if k in frozen:
            assert torch.equal(v, frozen[k]), k  # encoder, decoder and the semantic layer untouched
    assert all(q.search_snapshot is None for q in model.quantizer.quantizers)


def test_the_fit_tool_refuses_a_missing_data_folder_before_loading_a_codec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import uniaudio_cli.codec.api as api
    from uniaudio_cli.train import refit_maps

    def no_load(*args: object, **kwargs: object) -> None:
        raise AssertionError("the codec was loaded before the arguments were checked")

    monkeypatch.setattr(api, "load_codec", no_load)
    missing = tmp_path / "nothing"
    argv = ["refit_maps", "--data", str(missing), "--out", str(tmp_path / "out")]
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        refit_maps.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {missing}: not a folder")
    monkeypatch.setattr("sys.argv", [*argv, "--debug"])
    with pytest.raises(UsageError):
        refit_maps.main()
