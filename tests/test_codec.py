"""The codec core: shapes, the token bridge, checkpoints and their errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import WORDS, TinyTokenizer, tiny_config, tiny_vocabulary
from uniaudio_cli.bridge import TokenBridge, word_token_ids
from uniaudio_cli.codec.api import load_codec
from uniaudio_cli.codec.checkpoint import CONFIG_FILE, WEIGHTS_FILE, save_codec
from uniaudio_cli.codec.config import CodecConfig
from uniaudio_cli.codec.model import LLMCodec
from uniaudio_cli.codec.quantizer import LLMVectorQuantizer
from uniaudio_cli.errors import CheckpointError, OutputExistsError, UsageError, VocabularyMismatchError
from uniaudio_cli.vocab import embedding_fingerprint


def test_default_config_rates() -> None:
    cfg = CodecConfig()
    assert cfg.hop_length == 480
    assert cfg.frame_rate == pytest.approx(100 / 3)
    # 8.33 + 16.67 + 33.33 tokens per second, as in the paper (about 58)
    assert cfg.tokens_per_second == pytest.approx(58.333, abs=1e-3)
    published = CodecConfig(backbone="published")
    assert published.hop_length == 480
    assert published.pad_multiple == 480 * 8


@pytest.mark.parametrize("seconds", [0.05, 1.0, 1.3])
def test_shapes_and_token_counts(tiny_codec: LLMCodec, seconds: float) -> None:
    n = int(seconds * 16000)
    wav = torch.randn(2, 1, n) * 0.1
    out = tiny_codec(wav)
    assert out.audio.shape == (2, 1, n)
    padded = -(-n // 1920) * 1920
    frames = padded // 480
    assert [tuple(c.shape) for c in out.quant.codes] == [(2, frames // 4), (2, frames // 2), (2, frames)]
    assert tiny_codec.codes_length(n) == [frames // 4, frames // 2, frames]
    codes = tiny_codec.encode(wav)
    for c, ref in zip(codes, out.quant.codes, strict=True):
        assert torch.equal(c, ref)
    assert tiny_codec.decode(codes, n).shape == (2, 1, n)


def test_quantizer_is_residual(tiny_codec: LLMCodec) -> None:
    z = torch.randn(1, 16, 8)
    q = tiny_codec.quantizer
    codes = q.encode(z)
    z_q = q.decode(codes)
    # Each layer reduces (or keeps) the residual energy relative to nothing quantized.
    assert z_q.shape == z.shape
    assert torch.allclose(q(z).z_q, z_q, atol=1e-5)


def test_banned_codes_never_emitted(tiny_codec: LLMCodec) -> None:
    q = tiny_codec.quantizer.quantizers[1]
    # Make the special tokens the best match for everything, then check they are still avoided.
    with torch.no_grad():
        q.codebook.weight[0] = 100.0
        q.codebook.weight[1] = -100.0
    z = torch.randn(4, 16, 32)
    codes = q.nearest(z)
    assert not torch.isin(codes, torch.tensor([0, 1])).any()
    q.reference_ties = True  # the published checkpoint's distance form: same codes
    try:
        assert torch.equal(q.nearest(z), codes)
    finally:
        q.reference_ties = False


def test_nearest_with_a_given_table_matches_the_cached_one(tiny_codec: LLMCodec) -> None:
    q = tiny_codec.quantizer.quantizers[2]
    z = torch.randn(2, 16, 24)
    with torch.no_grad():
        cached = q.nearest(z)
        table = q.projected_codebook().clone()  # not the cache object: the uncached path
        for ties in (False, True):
            q.reference_ties = ties
            try:
                assert torch.equal(q.nearest(z, table), cached)
            finally:
                q.reference_ties = False


def test_argmax_rows_matches_argmax_with_ties() -> None:
    from uniaudio_cli.codec.quantizer import argmax_rows

    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(37, 4096, generator=g).to(dtype)
        # Ties in several blocks and -inf columns: the first maximum must win, as argmax does.
        x[:, 5] = x[:, 700] = x[:, 4000] = 10.0
        x[3] = float("-inf")
        x[3, 2048] = x[3, 4095] = 0.0
        x[4, :64] = float("-inf")
        assert torch.equal(argmax_rows(x), x.argmax(dim=-1))
        for k in (4000, 4001, 4095):  # a partial last block, its maximum there or not
            y = x[:, :k].contiguous()
            y[7, k - 1] = 20.0
            assert torch.equal(argmax_rows(y), y.argmax(dim=-1))
    assert torch.equal(argmax_rows(x[:, :100]), x[:, :100].argmax(dim=-1))  # too narrow: plain argmax


def test_training_search_matches_nearest_and_can_be_frozen(tiny_codec: LLMCodec) -> None:
    q = tiny_codec.quantizer.quantizers[1]
    with torch.no_grad():
        q.codebook.weight[0] = 100.0  # banned (the tiny vocabulary's special tokens) yet the best match
    z = torch.randn(3, 16, 20)
    before = q.nearest(z)
    assert torch.equal(q.search(z), before)
    assert not torch.isin(before, torch.tensor([0, 1])).any()
    q.freeze_search()
    with torch.no_grad():
        q.cb_proj.weight.neg_()  # a weight update that changes every ranking
    after = q.nearest(z)
    assert not torch.equal(after, before)
    assert torch.equal(q.search(z), before)  # ranks with the frozen projection
    q.freeze_search()
    assert torch.equal(q.search(z), after)  # refreshed
    q.freeze_search((q.cb_proj.weight.neg(), q.cb_proj.bias))
    assert torch.equal(q.search(z), before)  # a saved snapshot rebuilds the same table
    q.unfreeze_search()
    assert torch.equal(q.search(z), after)


def test_word_token_ids_whole_words_in_id_order() -> None:
    tok = TinyTokenizer()
    ids = word_token_ids(tok, n=5, words=set(WORDS))
    assert tok.convert_ids_to_tokens(ids) == ["Ġthe", "Ġdog", "Ġrain", "Ġbark", "Ġsea"]
    # Without a dictionary, lower-case alphabetic word starts still qualify; capitals and digits never.
    loose = tok.convert_ids_to_tokens(word_token_ids(tok, n=3))
    assert loose == ["Ġst", "Ġxq", "Ġthe"]
    with pytest.raises(ValueError):
        word_token_ids(tok, n=100)


def test_fingerprint_ignores_storage_dtype() -> None:
    t = torch.randn(10, 4).to(torch.float16).float()
    assert embedding_fingerprint(t) == embedding_fingerprint(t.half())
    assert embedding_fingerprint(t) != embedding_fingerprint(t + 1e-2)


def test_bridge_round_trip_and_errors() -> None:
    bridge = TokenBridge([[5, 9, 7], None, None], [3, 20, 20], excluded=frozenset({0}))
    codes = [[0, 2, 1], [3, 4, 5, 6], [1, 2, 3, 4]]
    ids = bridge.to_token_ids(codes)
    assert ids[0] == [5, 7, 9]
    assert ids[1:] == codes[1:]
    assert bridge.from_token_ids(ids) == codes
    with pytest.raises(UsageError, match="not a code of layer 1"):
        bridge.from_token_ids([[6], [1], [1]])
    with pytest.raises(UsageError, match="not a code of layer 2"):
        bridge.from_token_ids([[5], [0], [1]])
    with pytest.raises(UsageError, match="2 code layers, this codec has 3"):
        bridge.from_token_ids([[5], [1]])
    assert bridge.valid_token_ids(0) == [5, 9, 7]
    assert 0 not in bridge.valid_token_ids(1)


def test_checkpoint_round_trip(tmp_path: Path, tiny_codec: LLMCodec, vocab) -> None:
    out = save_codec(tiny_codec, tmp_path / "codec")
    assert sorted(p.name for p in out.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    # Frozen codebooks are rebuilt from the LLM, not stored.
    from safetensors.torch import load_file

    assert not any("codebook" in k for k in load_file(str(out / WEIGHTS_FILE)))
    codec = load_codec(out, vocabulary=vocab, device="cpu")
    wav = np.random.default_rng(0).standard_normal(8000).astype(np.float32) * 0.1
    ids = codec.encode(wav)
    expected = codec.bridge.to_token_ids([c[0].tolist() for c in tiny_codec.encode(torch.tensor(wav)[None, None])])
    assert ids == expected
    # Layer-1 token ids are the word subset; layers 2-3 never use special tokens.
    assert set(ids[0]) <= set(tiny_codec.cfg.vocab.layer1_token_ids)
    assert not {0, 1} & (set(ids[1]) | set(ids[2]))
    audio = codec.decode(ids, length=len(wav))
    assert audio.shape == wav.shape
    ref = tiny_codec.decode([c for c in tiny_codec.encode(torch.tensor(wav)[None, None])], len(wav))[0, 0].numpy()
    np.testing.assert_allclose(audio, ref, atol=1e-5)
    assert codec.token_text(ids)[0].split()[0] in WORDS


def test_checkpoint_refuses_other_vocabulary(tmp_path: Path, tiny_codec: LLMCodec) -> None:
    out = save_codec(tiny_codec, tmp_path / "codec")
    with pytest.raises(VocabularyMismatchError, match="embedding table"):
        load_codec(out, vocabulary=tiny_vocabulary(seed=1, name="other"), device="cpu")
    small = tiny_vocabulary()
    small.embeddings = small.embeddings[:, :4]
    with pytest.raises(VocabularyMismatchError, match="x 4"):
        load_codec(out, vocabulary=small, device="cpu")


def test_checkpoint_errors_name_file_and_fix(tmp_path: Path, tiny_codec: LLMCodec, vocab) -> None:
    out = save_codec(tiny_codec, tmp_path / "codec")
    cfg_path = out / CONFIG_FILE
    original = json.loads(cfg_path.read_text())

    def expect(data: dict, match: str) -> None:
        cfg_path.write_text(json.dumps(data))
        with pytest.raises(CheckpointError, match=match) as info:
            load_codec(out, vocabulary=vocab, device="cpu")
        assert str(out) in info.value.message and info.value.fix

    expect({**original, "format_version": 99}, "version 99")
    expect({**original, "format_version": 0}, "version 0")  # older formats too: strictly versioned
    expect({k: v for k, v in original.items() if k != "format_version"}, "version None")
    expect({**original, "bogus": 1}, "unknown codec config fields")
    expect({**original, "format": "other"}, "not a uniaudio codec config")
    expect({**original, "small_dim": 48}, "wrong shape")
    cfg_path.write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_codec(out, vocabulary=vocab, device="cpu")
    cfg_path.write_text(json.dumps(original))
    # A weight left out (or one of another model) is refused, never left at its random start.
    from safetensors.torch import load_file, save_file

    weights = load_file(str(out / WEIGHTS_FILE))
    first = sorted(weights)[0]
    save_file({k: v for k, v in weights.items() if k != first}, str(out / WEIGHTS_FILE))
    with pytest.raises(CheckpointError, match=re.escape(f"missing ['{first}']")):
        load_codec(out, vocabulary=vocab, device="cpu")
    save_file({**weights, "decoder.extra": torch.zeros(1)}, str(out / WEIGHTS_FILE))
    with pytest.raises(CheckpointError, match=r"decoder\.extra"):
        load_codec(out, vocabulary=vocab, device="cpu")
    (out / WEIGHTS_FILE).write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_codec(out, vocabulary=vocab, device="cpu")
    with pytest.raises(CheckpointError, match="no such codec checkpoint"):
        load_codec(tmp_path / "missing", vocabulary=vocab, device="cpu")


def test_decode_rejects_inconsistent_layers(tmp_path: Path, tiny_codec: LLMCodec, vocab) -> None:
    codec = load_codec(save_codec(tiny_codec, tmp_path / "codec"), vocabulary=vocab, device="cpu")
    ids = codec.encode(np.random.default_rng(0).standard_normal(4000).astype(np.float32) * 0.1)
    with pytest.raises(UsageError, match="inconsistent lengths"):
        codec.decode([ids[0], ids[1][:-1], ids[2]])


def test_config_round_trip(tmp_path: Path) -> None:
    vocab = tiny_vocabulary()
    cfg = tiny_config(vocab)
    cfg.save(tmp_path / "c.json")
    again = CodecConfig.load(tmp_path / "c.json")
    assert again == cfg


def test_save_never_replaces_a_folder_holding_more_than_a_checkpoint(tmp_path: Path, tiny_codec: LLMCodec) -> None:
    # A run folder (train state, metrics) given as the destination must survive untouched.
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(OutputExistsError, match=r"metrics\.jsonl"):
        save_codec(tiny_codec, run)
    assert sorted(p.name for p in run.iterdir()) == ["metrics.jsonl"]
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no temporary folder left behind
    # A checkpoint folder itself is replaced as a whole (the trainer's periodic checkpoints).
    ck = save_codec(tiny_codec, tmp_path / "codec")
    assert save_codec(tiny_codec, ck) == ck
    assert sorted(p.name for p in ck.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]


def test_export_needs_force_to_replace(tmp_path: Path, tiny_codec: LLMCodec) -> None:
    from uniaudio_cli.codec.export import export_codec

    src = save_codec(tiny_codec, tmp_path / "src")
    dst = export_codec(src, tmp_path / "dst", torch.float16)
    before = (dst / WEIGHTS_FILE).read_bytes()
    with pytest.raises(OutputExistsError, match="--force"):
        export_codec(src, dst)
    assert (dst / WEIGHTS_FILE).read_bytes() == before
    export_codec(src, dst, force=True)
    assert (dst / WEIGHTS_FILE).stat().st_size > len(before)  # float32 now
    (dst / "prototype_center.safetensors").write_bytes(b"x")
    with pytest.raises(OutputExistsError, match="prototype_center"):
        export_codec(src, dst, force=True)
    assert (dst / "prototype_center.safetensors").read_bytes() == b"x"


def test_export_float16_halves_size_and_keeps_behaviour(tmp_path: Path, tiny_codec: LLMCodec, vocab) -> None:
    from uniaudio_cli.codec.export import export_codec

    full = save_codec(tiny_codec, tmp_path / "fp32")
    half = export_codec(full, tmp_path / "fp16", torch.float16)
    assert (half / WEIGHTS_FILE).stat().st_size < 0.6 * (full / WEIGHTS_FILE).stat().st_size
    a = load_codec(full, vocabulary=vocab, device="cpu")
    b = load_codec(half, vocabulary=vocab, device="cpu")
    assert next(b.model.parameters()).dtype == torch.float32
    wav = np.random.default_rng(1).standard_normal(8000).astype(np.float32) * 0.1
    ids = a.encode(wav)
    np.testing.assert_allclose(a.decode(ids), b.decode(ids), atol=1e-2)


def test_istft_head_gives_float32_magnitude_and_phase_under_any_precision() -> None:
    from uniaudio_cli.codec.small import ISTFTHead

    head = ISTFTHead(dim=8, n_fft=16, hop=4)
    h = torch.randn(2, 8, 5)
    want = head(h)
    # Under CUDA's autocast exp() runs in float32 beside a bfloat16 phase, which polar() refuses:
    # both must come out in float32 whatever the projection's precision.
    mag, phase = head.to(torch.bfloat16).magnitude_phase(h.to(torch.bfloat16))
    assert mag.dtype == phase.dtype == torch.float32
    head.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = head(h)
    assert got.dtype == torch.float32 and got.shape == want.shape == (2, 1, 20)
    assert torch.allclose(got, want, atol=0.05 * want.abs().max().item())


def _unit_rows(g: torch.Generator, k: int, mix: torch.Tensor, spread: float) -> torch.Tensor:
    """``(k, D)`` unit rows in the span of ``mix`` ``(6, D)``, plus ``spread`` of isotropic noise."""
    strong = torch.randn(k, mix.shape[0], generator=g) @ mix
    return torch.nn.functional.normalize(strong + spread * torch.randn(k, mix.shape[1], generator=g), dim=-1)


@pytest.mark.parametrize("spread", [0.01, 3.0])  # nearly low-rank (two passes) and full rank (fallback)
def test_low_rank_search_finds_the_exact_best_row(spread: float, monkeypatch: pytest.MonkeyPatch) -> None:
    from uniaudio_cli.codec import quantizer
    from uniaudio_cli.codec.quantizer import LowRankSearch, argmax_rows

    g = torch.Generator().manual_seed(int(spread * 100))
    mix = torch.randn(6, 64, generator=g)
    table = _unit_rows(g, 9000, mix, spread)
    table[4321] = table[17]  # an exact tie: the lower index wins, as argmax's does
    banned = torch.zeros(9000, dtype=torch.bool)
    banned[:5] = True
    queries = torch.cat([_unit_rows(g, 300, mix, spread), table[[17, 0, 2, 4321]]])  # 0 and 2: banned
    search = LowRankSearch(table, banned, rank=8)
    exact = queries @ table.t()
    exact[:, banned] = float("-inf")
    want = argmax_rows(exact)
    full_products = []
    monkeypatch.setattr(quantizer, "argmax_rows", lambda x: full_products.append(x.shape) or argmax_rows(x))
    monkeypatch.setattr(LowRankSearch, "ROWS", 128)  # three slices of queries, the last partial
    assert torch.equal(search.argmax(queries), want)
    assert want[-4] == want[-1] == 17 and not banned[want].any()
    # Near the table's span the candidates are few; far from it, one exact product is cheaper,
    # and the quantizer would not take this search at all.
    assert (len(full_products) > 0) == (spread > 1) == (not search.useful)
    # A NaN query reaches no candidate, yet names the row the exact search names.
    queries[5] = float("nan")
    exact = queries[:8] @ table.t()
    exact[:, banned] = float("-inf")
    assert torch.equal(search.argmax(queries[:8]), argmax_rows(exact))


def test_nearest_takes_the_low_rank_search_and_gives_the_same_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    from uniaudio_cli.codec import quantizer

    g = torch.Generator().manual_seed(3)
    q = quantizer.LLMVectorQuantizer(input_dim=32, codebook_size=9000, codebook_dim=12).eval()
    with torch.no_grad():  # a wide, nearly low-rank table, as an LLM's projected embeddings are
        q.codebook.weight.copy_(torch.randn(9000, 3, generator=g) @ torch.randn(3, 12, generator=g))
        q.codebook.weight.add_(0.05 * torch.randn(9000, 12, generator=g))
    q.banned[:3] = True
    z = torch.randn(2, 32, 50, generator=g)
    monkeypatch.setattr(quantizer.LowRankSearch, "RANK", 4)
    with torch.no_grad():  # as encoding runs: the projected table is cached, and its search with it
        fast = q.nearest(z)
        assert q._cache_low_rank is not None and q._cache_low_rank.basis.shape == (32, 4)
        # Training's search (gradients on, as in a training step) takes it too, and agrees.
        with torch.enable_grad():
            assert torch.equal(q.search(z), fast) and q._search is not None and q._search[2] is not None
        monkeypatch.setattr(quantizer.LowRankSearch, "pays_off", staticmethod(lambda table: False))
        assert torch.equal(fast, q.nearest(z))
        q.unfreeze_search()  # a new search table, now without the low-rank pass
        assert torch.equal(q.search(z), fast) and q._search[2] is None


def _brute_euclidean(q, z: torch.Tensor) -> torch.Tensor:
    """The Euclidean nearest projected rows of ``z`` ``(B, D, T)``, by every distance, in float64."""
    rows = q.projected_codebook().detach().double()
    d = torch.cdist(z.transpose(1, 2).reshape(-1, z.shape[1]).double(), rows)
    d[:, q.banned] = float("inf")
    return d.argmin(dim=1).view(z.shape[0], z.shape[2])


@pytest.mark.parametrize("low_rank", [True, False])
def test_euclidean_search_finds_the_nearest_row_not_the_best_direction(
    low_rank: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from uniaudio_cli.codec import quantizer

    g = torch.Generator().manual_seed(5)
    q = quantizer.LLMVectorQuantizer(input_dim=32, codebook_size=9000, codebook_dim=12).eval()
    with torch.no_grad():  # rows of very different lengths, nearly low-rank as the LLM's are
        q.codebook.weight.copy_(torch.randn(9000, 3, generator=g) @ torch.randn(3, 12, generator=g))
        q.codebook.weight.mul_(torch.rand(9000, 1, generator=g) * 3)
        q.codebook.weight.add_(0.05 * torch.randn(9000, 12, generator=g))
    q.banned[:3] = True
    monkeypatch.setattr(quantizer.LowRankSearch, "RANK", 4)
    if not low_rank:
        monkeypatch.setattr(quantizer.LowRankSearch, "pays_off", staticmethod(lambda table: False))
    with torch.no_grad():
        rows = q.projected_codebook()
        z = 0.7 * rows[torch.randint(3, 9000, (2, 40), generator=g)].permute(0, 2, 1)
        z = z + 0.05 * torch.randn(z.shape, generator=g)
        z[0, :, 0] = rows[0]  # a banned row itself: the next nearest
        want = _brute_euclidean(q, z)
        got = q.nearest_euclidean(z)
        assert torch.equal(got, want)
        assert (q._cache_euclidean[1] is not None) == low_rank
        # A shortened row is the cosine search's pick but rarely the nearest one.
        assert (q.nearest(z) != want).float().mean() > 0.3
        assert torch.equal(q.nearest_euclidean(z, rows.clone()), want)  # a given table, uncached
        with torch.enable_grad():  # training's search, gradients on
            assert torch.equal(q.search(z, euclidean=True), want)
        assert torch.equal(q.search(z), q.nearest(z))  # its cosine table is kept apart


def test_euclidean_residual_search_leaves_less_error_and_keeps_the_semantic_layer(
    tiny_codec: LLMCodec, tmp_path: Path, vocab
) -> None:
    from uniaudio_cli.codec.api import _state_sha256, codes_sha256
    from uniaudio_cli.codec.export import export_codec

    src = save_codec(tiny_codec, tmp_path / "cos")
    dst = export_codec(src, tmp_path / "euc", residual_search="euclidean")
    assert json.loads((dst / CONFIG_FILE).read_text())["residual_search"] == "euclidean"
    assert (dst / WEIGHTS_FILE).read_bytes() == (src / WEIGHTS_FILE).read_bytes()
    cos = load_codec(src, vocabulary=vocab, device="cpu")
    euc = load_codec(dst, vocabulary=vocab, device="cpu")
    assert euc.model.quantizer.residual_search == "euclidean"
    # Codes differ, so what is computed from codes (a prototype centre) must not be shared...
    assert cos.codes_sha256 != euc.codes_sha256
    # ...while the default rule keeps the hash every committed centre is keyed on.
    assert codes_sha256(cos.model) == _state_sha256(cos.model, ("encoder.", "quantizer."))
    z = torch.randn(3, 16, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = cos.model.quantizer.encode(z), euc.model.quantizer.encode(z)
        assert torch.equal(a[0], b[0])  # the semantic layer: cosine under both
        err_a = (z - cos.model.quantizer.decode(a)).pow(2).sum()
        err_b = (z - euc.model.quantizer.decode(b)).pow(2).sum()
        assert err_b < err_a
        # Training's forward picks the same codes as encoding.
        assert all(torch.equal(x, y) for x, y in zip(euc.model.quantizer(z).codes, b, strict=True))
    data = json.loads((dst / CONFIG_FILE).read_text())
    data["residual_search"] = "l2"
    (dst / CONFIG_FILE).write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="residual_search 'l2'"):
        load_codec(dst, vocabulary=vocab, device="cpu")


def test_spectral_contrast_deepens_valleys_and_keeps_each_frames_energy() -> None:
    from uniaudio_cli.codec.small import spectral_contrast

    g = torch.Generator().manual_seed(0)
    mag = torch.rand(2, 33, 7, generator=g) + 0.05
    assert spectral_contrast(mag, 1.0) is mag
    out = spectral_contrast(mag, 1.2)
    torch.testing.assert_close(out.pow(2).sum(1), mag.pow(2).sum(1))
    # Peaks rise against the valleys: the ratio of each frame's largest to smallest bin grows.
    ratio = lambda m: m.amax(1) / m.amin(1)  # noqa: E731
    assert (ratio(out) > ratio(mag) * 1.05).all()
    # The ordering of bins within a frame is kept, and frames are filtered independently.
    assert torch.equal(out.argsort(1), mag.argsort(1))
    torch.testing.assert_close(spectral_contrast(mag[..., 2:4], 1.2), out[..., 2:4])
    assert torch.isfinite(spectral_contrast(torch.zeros(1, 5, 3), 1.2)).all()


def test_spectral_contrast_with_smooth_raises_the_envelope_and_keeps_the_fine_structure() -> None:
    import torch.nn.functional as F

    from uniaudio_cli.codec.small import spectral_contrast

    # A frame of harmonics (every 4th bin 10x up) on a tilted envelope.
    bins = torch.arange(65, dtype=torch.float32)
    envelope = torch.exp(-bins / 20.0)
    harmonics = torch.where(bins % 4 == 0, 10.0, 1.0)
    mag = (envelope * harmonics).reshape(1, 65, 1).repeat(2, 1, 3)
    out = spectral_contrast(mag, 1.3, smooth=9)
    torch.testing.assert_close(out.pow(2).sum(1), mag.pow(2).sum(1))

    def smoothed(m: torch.Tensor) -> torch.Tensor:
        rows = F.pad(m.log().transpose(1, 2), (4, 4), mode="replicate")
        return F.avg_pool1d(rows, 9, stride=1).transpose(1, 2)

    # The gain it applies is the envelope raised (a constant per frame aside): the harmonics keep
    # their depth, where the whole-magnitude filter deepens each of them.
    gain = out.log() - mag.log()
    residual = gain - 0.3 * smoothed(mag)
    torch.testing.assert_close(residual, residual.mean(1, keepdim=True).expand_as(residual), atol=1e-4, rtol=0)
    whole = spectral_contrast(mag, 1.3)
    ripple = lambda g: g.diff(dim=1).abs().amax()  # noqa: E731
    assert ripple(gain) < 0.1 < ripple(whole.log() - mag.log())
    # The envelope is steeper: the low bins gain against the high ones.
    assert (out[:, :8].sum(1) / out[:, -8:].sum(1) > 1.5 * mag[:, :8].sum(1) / mag[:, -8:].sum(1)).all()
    assert spectral_contrast(mag, 1.0, smooth=9) is mag
    torch.testing.assert_close(spectral_contrast(mag[..., 1:2], 1.3, smooth=9), out[..., 1:2])
    assert torch.isfinite(spectral_contrast(torch.zeros(1, 5, 3), 1.2, smooth=3)).all()


def test_export_sets_the_post_filter_without_touching_codes(
    tiny_codec: LLMCodec,
    tmp_path: Path,
    vocab,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from uniaudio_cli.codec.export import export_codec

    src = save_codec(tiny_codec, tmp_path / "plain")
    assert json.loads((src / CONFIG_FILE).read_text())["small_contrast"] == 1.0
    dst = export_codec(src, tmp_path / "pf", contrast=1.1)
    assert json.loads((dst / CONFIG_FILE).read_text())["small_contrast"] == 1.1
    assert (dst / WEIGHTS_FILE).read_bytes() == (src / WEIGHTS_FILE).read_bytes()
    plain = load_codec(src, vocabulary=vocab, device="cpu")
    pf = load_codec(dst, vocabulary=vocab, device="cpu")
    wav = np.random.default_rng(2).standard_normal(8000).astype(np.float32) * 0.1
    ids = plain.encode(wav)
    assert pf.encode(wav) == ids and pf.codes_sha256 == plain.codes_sha256  # encoding and centres unchanged
    a, b = plain.decode(ids), pf.decode(ids)
    assert a.shape == b.shape and not np.allclose(a, b)
    with pytest.raises(UsageError, match="--contrast"):
        export_codec(src, tmp_path / "bad", contrast=3.0)
    # The envelope-only filter: the same codes again, another output, and a width it refuses.
    env = export_codec(src, tmp_path / "env", contrast=1.1, contrast_smooth=9)
    assert json.loads((env / CONFIG_FILE).read_text())["small_contrast_smooth"] == 9
    pf_env = load_codec(env, vocabulary=vocab, device="cpu")
    assert pf_env.encode(wav) == ids
    c = pf_env.decode(ids)
    assert c.shape == a.shape and not np.allclose(c, b) and not np.allclose(c, a)
    for bad in (8, -1, 65):
        with pytest.raises(UsageError, match="--contrast-smooth"):
            export_codec(src, tmp_path / f"bad{bad}", contrast_smooth=bad)

    # The tool: one error line naming the output and the fix, its exit code, the traceback only
    # with --debug; an existing output is never replaced without --force.
    from uniaudio_cli.codec import export

    argv = ["export", str(src), str(dst), "--contrast", "1.2"]
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        export.main()
    assert exit_info.value.code == OutputExistsError("", "").exit_code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {dst}") and "--force" in err[0]
    assert json.loads((dst / CONFIG_FILE).read_text())["small_contrast"] == 1.1
    monkeypatch.setattr("sys.argv", [*argv, "--debug"])
    with pytest.raises(OutputExistsError):
        export.main()
    monkeypatch.setattr("sys.argv", [*argv, "--force"])
    export.main()
    assert json.loads((dst / CONFIG_FILE).read_text())["small_contrast"] == 1.2


def test_config_reads_checkpoints_without_the_post_filter_and_refuses_a_bad_one(tiny_codec: LLMCodec) -> None:
    data = tiny_codec.cfg.to_dict()
    del data["small_contrast"]  # written before the field existed
    assert CodecConfig.from_dict(data).small_contrast == 1.0
    for bad in ("strong", True, 0.0, 5):
        data["small_contrast"] = bad
        with pytest.raises(CheckpointError, match="small_contrast"):
            CodecConfig.from_dict(data, source="x/config.json")
    data["small_contrast"] = 1.1
    assert CodecConfig.from_dict(data).small_contrast_smooth == 0  # written before the field existed
    data["small_contrast_smooth"] = 17
    assert CodecConfig.from_dict(data).small_contrast_smooth == 17
    for bad in (4, True, 1.0, -3, 101, "17"):
        data["small_contrast_smooth"] = bad
        with pytest.raises(CheckpointError, match=r"x/config\.json: small_contrast_smooth"):
            CodecConfig.from_dict(data, source="x/config.json")


@pytest.mark.parametrize("euclidean", [False, True])
def test_search_under_a_bf16_autocast_takes_the_float32_low_rank_pass(
    euclidean: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Training autocasts to bfloat16 on CPUs with native bf16; the low-rank pass reuses a float32
    # score buffer, which a bf16 product cannot fill (it raised there before).
    from uniaudio_cli.codec import quantizer

    g = torch.Generator().manual_seed(7)
    q = quantizer.LLMVectorQuantizer(input_dim=32, codebook_size=9000, codebook_dim=12)
    with torch.no_grad():
        q.codebook.weight.copy_(torch.randn(9000, 3, generator=g) @ torch.randn(3, 12, generator=g))
        q.codebook.weight.add_(0.05 * torch.randn(9000, 12, generator=g))
    q.banned[:3] = True
    monkeypatch.setattr(quantizer.LowRankSearch, "RANK", 4)
    z = torch.randn(2, 32, 50, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = q.search(z, euclidean=euclidean)
    table, ids, fast = q._search
    assert fast is not None and ids is None and fast.table.dtype == torch.float32
    # The exact best rows of the table it searched (the bf16-rounded projection, in float32).
    queries = (
        quantizer.euclidean_queries(z)
        if euclidean
        else torch.nn.functional.normalize(z.transpose(1, 2).reshape(-1, 32), dim=-1)
    )
    scores = queries.float() @ table.float().t()
    scores[:, q.banned] = float("-inf")
    assert torch.equal(got, quantizer.argmax_rows(scores).view(2, 50))


def _wide_layer(seed: int) -> LLMVectorQuantizer:
    g = torch.Generator().manual_seed(seed)
    layer = LLMVectorQuantizer(input_dim=16, codebook_size=9000, codebook_dim=12, map_hidden=8).eval()
    with torch.no_grad():
        layer.codebook.weight.copy_(torch.randn(9000, 12, generator=torch.Generator().manual_seed(0)))
        for p in layer.parameters():
            if p is not layer.codebook.weight:
                p.copy_(torch.randn(p.shape, generator=g))
    return layer


def test_projected_tables_are_stored_and_read_back_bit_for_bit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from uniaudio_cli.codec import table_cache

    first = _wide_layer(1)
    assert table_cache.load_tables([first], tmp_path) == 0  # computed, then stored
    with torch.no_grad():
        want = first.projected_codebook().clone()
    assert len(list(tmp_path.glob("*.safetensors"))) == 1
    again = _wide_layer(1)  # the same weights in a new process
    monkeypatch.setattr(again, "project", lambda *a, **k: pytest.fail("projected although stored"))
    assert table_cache.load_tables([again], tmp_path) == 1
    with torch.no_grad():
        assert torch.equal(again.projected_codebook(), want)
        z = torch.randn(1, 16, 20, generator=torch.Generator().manual_seed(3))
        assert torch.equal(again.nearest_euclidean(z), first.nearest_euclidean(z))
    # Other weights are another key; narrow tables are not stored.
    other = _wide_layer(2)
    assert table_cache.load_tables([other], tmp_path) == 0 and len(list(tmp_path.glob("*.safetensors"))) == 2
    monkeypatch.setattr(table_cache, "MIN_ROWS", 10_000)
    assert table_cache.load_tables([_wide_layer(3)], tmp_path) == 0 and len(list(tmp_path.glob("*"))) == 2
    monkeypatch.setattr(table_cache, "MIN_ROWS", 8192)
    # A damaged file is projected again (with a warning) and replaced.
    path = tmp_path / f"{table_cache.table_key(first)[:32]}.safetensors"
    path.write_bytes(b"not a table")
    with pytest.warns(UserWarning, match="unreadable codebook table"):
        assert table_cache.load_tables([_wide_layer(1)], tmp_path) == 0
    assert table_cache.load_tables([_wide_layer(1)], tmp_path) == 1
    # Training moves the weights: the installed table is dropped, not reused.
    moved = _wide_layer(1)
    assert table_cache.load_tables([moved], tmp_path) == 1
    with torch.no_grad():
        moved.cb_proj.weight.add_(0.1)
        assert not torch.equal(moved.projected_codebook(), want)
    # The store keeps the most recently used tables within its limit.
    size = path.stat().st_size
    assert len(list(tmp_path.glob("*.safetensors"))) == 2
    assert table_cache.load_tables([_wide_layer(1)], tmp_path) == 1  # used last
    table_cache.load_tables([_wide_layer(4)], tmp_path, limit=2 * size)
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == sorted(
        f"{table_cache.table_key(x)[:32]}.safetensors" for x in (_wide_layer(1), _wide_layer(4))
    )
    monkeypatch.setenv("UNIAUDIO_TABLE_CACHE", "0")
    assert not table_cache.enabled()
