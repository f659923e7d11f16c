"""Prototype features and the base-set centre: shapes, the stored file, and refusals."""

from __future__ import annotations

import copy
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tests.test_tasks import label_demos  # noqa: F401 - module fixture
from uniaudio_cli.errors import CheckpointError, UsageError
from uniaudio_cli.prompts import bos_ids
from uniaudio_cli.tasks.classify import Classifier, ClassifyOptions
from uniaudio_cli.tasks.demos import load_demo_folder
from uniaudio_cli.tasks.prototype import (
    ACOUSTIC_DIM,
    CENTER_FILE,
    FUSED_DEPTHS,
    N_PROSODY,
    FusedStats,
    center_features,
    clip_features,
    compute_center,
    compute_fused_stats,
    depth_index,
    fused_feature,
    fused_llm_part,
    load_center,
    load_fused_stats,
    save_center,
)


def test_clip_features_are_per_depth_means(models) -> None:
    llm, _ = models
    tokens = [5, 6, 7]
    feats = clip_features(llm, tokens)
    cfg = llm.model.config
    assert feats.shape == (cfg.num_hidden_layers + 1, cfg.hidden_size)
    lead = bos_ids(llm.tokenizer) + llm.tokenizer.encode("Input: <", add_special_tokens=False)
    with torch.no_grad():
        hs = llm.model(input_ids=torch.tensor([lead + tokens]), output_hidden_states=True).hidden_states
    torch.testing.assert_close(feats[-1], hs[-1][0, len(lead) :].mean(0))
    torch.testing.assert_close(feats[0], hs[0][0, len(lead) :].mean(0))
    with pytest.raises(UsageError, match="no audio tokens"):
        clip_features(llm, [])


def test_depth_index() -> None:
    assert [depth_index(31, d) for d in (0.0, 0.6, 1.0, 2.0)] == [0, 18, 30, 30]


def test_center_features_subtracts_then_normalises() -> None:
    x = torch.tensor([[3.0, 4.0], [1.0, 1.0]])
    out = center_features(x, torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(out[0], torch.tensor([0.5547, 0.8321]), atol=1e-4, rtol=0)
    assert torch.allclose(out.norm(dim=-1)[0], torch.tensor(1.0))
    torch.testing.assert_close(center_features(x, None)[0], torch.tensor([0.6, 0.8]))


def test_center_round_trip_and_refusals(models, tmp_path: Path, caplog) -> None:
    llm, codec = models
    center = compute_center(llm, codec, {"a": [[5, 6, 7], [8, 9]], "b": [[10, 11]]})
    a = (clip_features(llm, [5, 6, 7]) + clip_features(llm, [8, 9])) / 2
    torch.testing.assert_close(center, (a + clip_features(llm, [10, 11])) / 2)  # groups weigh the same

    folder = Path(codec.source)
    path = save_center(folder / CENTER_FILE, center, llm, codec, '{"a": 2, "b": 1}')
    try:
        torch.testing.assert_close(load_center(llm, codec), center)

        # A retrained decoder writes the same codes: the centre still holds.
        other = tmp_path / "other"
        shutil.copytree(folder, other)
        model = copy.deepcopy(codec.model)
        with torch.no_grad():
            next(model.decoder.parameters()).add_(1.0)
        same_codes = type(codec)(model, codec.bridge, codec.device, str(other), codec.vocabulary)
        torch.testing.assert_close(load_center(llm, same_codes), center)

        # Another encoder writes other codes: ignored with a warning naming what differs.
        with torch.no_grad():
            next(model.encoder.parameters()).add_(1.0)
        codec_other = type(codec)(model, codec.bridge, codec.device, str(other), codec.vocabulary)
        with caplog.at_level(logging.WARNING):
            assert load_center(llm, codec_other) is None
        assert "codec_codes_sha256" in caplog.text

        # An unknown format version is refused, naming the file and the fix.
        save_file({"center": center}, str(path), metadata={"format_version": "99"})
        with pytest.raises(CheckpointError, match=r"prototype_center.safetensors: format version '99'"):
            load_center(llm, codec)
    finally:
        path.unlink(missing_ok=True)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert load_center(llm, codec) is None
    assert "no prototype_center.safetensors for" in caplog.text and "make_prototype_center.py" in caplog.text


def test_classifier_uses_the_stored_center(models, label_demos) -> None:  # noqa: F811
    llm, codec = models
    demos = load_demo_folder(label_demos).pick(1)
    folder = Path(codec.source)
    center = torch.randn(llm.model.config.num_hidden_layers + 1, llm.model.config.hidden_size) * 5
    path = save_center(folder / CENTER_FILE, center, llm, codec, "{}")
    try:
        on = Classifier.from_files(llm, codec, demos, ClassifyOptions(method="prototype"))
        off = Classifier.from_files(llm, codec, demos, ClassifyOptions(method="prototype", center=False))
    finally:
        path.unlink()
    tokens = on.clip_tokens(label_demos / "dog" / "0.wav")
    feats = clip_features(llm, tokens)
    d = depth_index(feats.shape[0], 0.6)
    torch.testing.assert_close(on._embed(tokens), center_features(feats[d], center[d]))
    torch.testing.assert_close(off._embed(tokens), center_features(feats[d], None))
    assert not torch.allclose(on.centroids, off.centroids)


def test_meanstd_pooling(models) -> None:
    llm, _ = models
    tokens = [5, 6, 7, 9]
    both = clip_features(llm, tokens, pooling="meanstd")
    h = llm.model.config.hidden_size
    assert both.shape == (llm.model.config.num_hidden_layers + 1, 2 * h)
    torch.testing.assert_close(both[:, :h], clip_features(llm, tokens))
    lead = bos_ids(llm.tokenizer) + llm.tokenizer.encode("Input: <", add_special_tokens=False)
    with torch.no_grad():
        hs = llm.model(input_ids=torch.tensor([lead + tokens]), output_hidden_states=True).hidden_states
    torch.testing.assert_close(both[2, h:], hs[2][0, len(lead) :].std(0, unbiased=False))


def test_fused_features_and_stats_round_trip(models) -> None:
    llm, codec = models
    h = llm.model.config.hidden_size
    states = clip_features(llm, [5, 6, 7], pooling="meanstd")
    part = fused_llm_part(states)
    assert part.shape == (len(FUSED_DEPTHS) * 2 * h,)
    # Every depth, and the mean and std inside it, weighs the same.
    blocks = part.view(len(FUSED_DEPTHS), 2 * h)
    torch.testing.assert_close(blocks.norm(dim=1), torch.ones(len(FUSED_DEPTHS)))
    acoustic = np.linspace(-1.0, 1.0, ACOUSTIC_DIM)
    stats = FusedStats(torch.full_like(part, 0.01), torch.full((ACOUSTIC_DIM,), 0.5), torch.full((ACOUSTIC_DIM,), 2.0))
    feat = fused_feature(states, acoustic, stats)
    assert feat.shape == (part.numel() + ACOUSTIC_DIM,) and torch.isclose(feat.norm(), torch.tensor(1.0))
    # LLM part, MFCC part and prosody part each weigh the same, standardised with the base set's statistics.
    z = (torch.as_tensor(acoustic, dtype=torch.float32) - 0.5) / 2.0
    cut = ACOUSTIC_DIM - N_PROSODY
    expected = torch.cat([torch.nn.functional.normalize(z[:cut], dim=0), torch.nn.functional.normalize(z[cut:], dim=0)])
    torch.testing.assert_close(feat[-ACOUSTIC_DIM:] * 3**0.5, expected, atol=1e-6, rtol=1e-5)
    with pytest.raises(UsageError, match="acoustic statistics of shape"):
        fused_feature(states, acoustic[:38], stats)  # MFCC statistics alone (the format before prosody)

    computed = compute_fused_stats(
        llm, {"a": [([5, 6, 7], acoustic), ([8, 9], acoustic + 1)], "b": [([10, 11], acoustic)]}
    )
    a = (fused_llm_part(states) + fused_llm_part(clip_features(llm, [8, 9], pooling="meanstd"))) / 2
    b = fused_llm_part(clip_features(llm, [10, 11], pooling="meanstd"))
    torch.testing.assert_close(computed.center, (a + b) / 2)  # groups weigh the same
    torch.testing.assert_close(computed.acoustic_mean, torch.as_tensor(acoustic + 1 / 3, dtype=torch.float32))

    path = save_center(Path(codec.source) / CENTER_FILE, torch.zeros(3, h), llm, codec, "{}", computed)
    try:
        loaded = load_fused_stats(llm, codec)
        assert loaded is not None
        torch.testing.assert_close(loaded.center, computed.center)
        torch.testing.assert_close(loaded.acoustic_std, computed.acoustic_std)
        save_center(path, torch.zeros(3, h), llm, codec, "{}")  # without the fused statistics
        assert load_fused_stats(llm, codec) is None
    finally:
        path.unlink(missing_ok=True)


def test_clip_features_upto_runs_only_the_layers_needed(models) -> None:
    llm, _ = models
    tokens = [5, 6, 7, 9]
    full = clip_features(llm, tokens, pooling="meanstd")
    layers = llm.model.model.layers
    part = clip_features(llm, tokens, pooling="meanstd", upto=1)
    assert llm.model.model.layers is layers  # put back
    torch.testing.assert_close(part[:2], full[:2], rtol=0, atol=0)
    assert part[2:].isnan().all()
    torch.testing.assert_close(clip_features(llm, tokens, upto=len(layers)), clip_features(llm, tokens))


def test_clip_features_take_a_clip_up_to_the_context_exactly(models) -> None:
    from uniaudio_cli.errors import UsageError
    from uniaudio_cli.prompts import bos_ids
    from uniaudio_cli.tasks.prototype import _LEAD, clip_features

    llm, _ = models
    lead = bos_ids(llm.tokenizer) + list(llm.tokenizer.encode(_LEAD, add_special_tokens=False))
    fits = llm.context_length - len(lead)
    assert clip_features(llm, [5] * fits, upto=1).shape[-1] > 0
    with pytest.raises(UsageError, match=f"a clip of {fits + 1} tokens exceeds the LLM's context"):
        clip_features(llm, [5] * (fits + 1), upto=1)
