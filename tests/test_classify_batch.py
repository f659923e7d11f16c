"""Batched icl classification (every label prompt or candidate of a query, and several queries,
in one forward pass) against the unbatched path, on a tiny random LLaMA + tiny codec."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from tests.conftest import write_tone
from tests.test_decoding import tiny_llama
from tests.test_tasks import write_label_demos
from uniaudio_cli.codec.api import Codec
from uniaudio_cli.decoding import (
    PrefixBatch,
    PrefixCache,
    continuation_logprobs,
    continuation_logprobs_batch,
    token_logprobs,
    token_logprobs_batch,
)
from uniaudio_cli.errors import PromptTooLongError, UsageError
from uniaudio_cli.tasks import classify
from uniaudio_cli.tasks.classify import Classifier, ClassifyOptions, Prediction, classify_files
from uniaudio_cli.tasks.demos import load_demo_folder

CPU = torch.device("cpu")
TOL = 1e-4
# Labels of different token lengths, with demonstrations of different lengths: the label
# prompts differ in length, so the batch is padded.
LABELS = ["dog", "clock tick", "rain", "sea", "baby cry"]
QUERY_LENGTHS = [9, 1, 14, 3, 20]


def layer1_tokens(codec: Codec, n: int, seed: int) -> list[int]:
    """``n`` seeded layer-1 token ids, as the codec would emit them."""
    valid = torch.as_tensor(codec.bridge.valid_token_ids(0))
    g = torch.Generator().manual_seed(seed)
    return valid[torch.randint(len(valid), (n,), generator=g)].tolist()


def demo_tokens(codec: Codec, ways: int) -> dict[str, list[list[int]]]:
    return {lb: [layer1_tokens(codec, 4 + 3 * k, seed=k)] for k, lb in enumerate(LABELS[:ways])}


def pair(models, ways: int, **options) -> tuple[Classifier, Classifier]:
    """The same classifier unbatched and batched."""
    llm, codec = models
    demos, opts = demo_tokens(codec, ways), ClassifyOptions(**{"method": "icl", **options})
    return Classifier(llm, codec, demos, opts, batch=False), Classifier(llm, codec, demos, opts, batch=True)


def assert_same(want: list[Prediction], got: list[Prediction]) -> None:
    assert [p.label for p in got] == [p.label for p in want]
    assert [p.path for p in got] == [p.path for p in want]
    for w, g in zip(want, got, strict=True):
        assert list(g.probabilities) == list(w.probabilities)
        assert list(g.probabilities.values()) == pytest.approx(list(w.probabilities.values()), abs=TOL, rel=0)
        assert g.warnings == w.warnings


@pytest.mark.parametrize("reuse", [True, False])
@pytest.mark.parametrize("per_batch", [1, 3])
@pytest.mark.parametrize("ways", [2, 5])
@pytest.mark.parametrize("mode", ["default", "paper"])
def test_batched_equals_unbatched(models, mode: str, ways: int, per_batch: int, reuse: bool) -> None:
    plain, batched = pair(models, ways, mode=mode, reuse_prefix=reuse)
    if mode == "default":
        lengths = [len(p.prefix) for p in plain.label_prefixes]
        assert len(set(lengths)) == ways  # every row of the batch has its own padding
    else:
        assert len({len(c) for c in plain.candidates}) > 1  # candidates of different lengths
    queries = [layer1_tokens(models[1], n, seed=100 + i) for i, n in enumerate(QUERY_LENGTHS)]
    names = [f"q{i}" for i in range(len(queries))]
    want = [plain.classify_tokens(t, n) for t, n in zip(queries, names, strict=True)]
    got = batched.classify_tokens_many(queries, names, per_batch=per_batch)
    assert_same(want, got)
    # Raw scores too: probabilities near 0 or 1 would hide a difference.
    scores = torch.stack(plain._scores(queries))  # (Q, L)
    torch.testing.assert_close(torch.stack(batched._scores(queries)), scores, atol=TOL, rtol=0)
    # The check can fail: a row mixed up with another label's or query's would score clearly apart.
    assert (scores[:, 1:] - scores[:, :1]).abs().max() > 100 * TOL
    assert (scores[1:] - scores[:1]).abs().max() > 100 * TOL
    # The prefix caches were restored: again, one query at a time, the same answers.
    assert_same(want, [batched.classify_tokens(t, n) for t, n in zip(queries, names, strict=True)])


def test_batched_classifier_keeps_the_unbatched_path(models) -> None:
    """A batched classifier still scores one prompt at a time on request (its per-label
    caches are built on first use)."""
    plain, batched = pair(models, 5)
    query = layer1_tokens(models[1], 12, seed=7)
    torch.testing.assert_close(batched._scores_icl(query), plain._scores_icl(query), atol=TOL, rtol=0)
    assert [p.prefix for p in batched.label_prefixes] == [p.prefix for p in plain.label_prefixes]


def test_batched_errors_match_unbatched(models) -> None:
    llm, codec = models
    plain, batched = pair(models, 2)
    for clf in (plain, batched):
        with pytest.raises(UsageError, match="no audio tokens"):
            clf.classify_tokens([])
    with pytest.raises(UsageError, match="no audio tokens"):
        batched.classify_tokens_many([layer1_tokens(codec, 5, seed=1), []])
    # A query past the context names the same prompt either way.
    longest = max(len(p.prefix) for p in plain.label_prefixes)
    short = dataclasses.replace(llm, context_length=longest + 10)
    demos = demo_tokens(codec, 2)
    query = layer1_tokens(codec, 11, seed=2)
    messages = []
    for batch in (False, True):
        clf = Classifier(short, codec, demos, ClassifyOptions(method="icl"), batch=batch)
        with pytest.raises(PromptTooLongError) as err:
            clf.classify_tokens(query)
        messages.append(str(err.value))
    assert messages[0] == messages[1]


@pytest.mark.parametrize("per_batch", [1, 4])
def test_classify_files_batches_and_isolates_errors(
    models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, per_batch: int
) -> None:
    """``classify_files`` classifies several queries per batch; a missing file or a query past
    the context fails alone, the others get the unbatched answers."""
    llm, codec = models
    monkeypatch.setattr(classify, "queries_per_batch", lambda device: per_batch)
    demos = load_demo_folder(write_label_demos(tmp_path / "demos")).pick(1)
    queries = [
        write_tone(tmp_path / "q" / "a.wav", 1.3, freq=320.0),
        tmp_path / "q" / "missing.wav",
        write_tone(tmp_path / "q" / "b.wav", 0.7, freq=1400.0),
        write_tone(tmp_path / "q" / "long.wav", 6.0, freq=900.0),
        write_tone(tmp_path / "q" / "c.wav", 1.0, freq=600.0),
        write_tone(tmp_path / "q" / "d.wav", 0.5, freq=300.0),
    ]
    opts = ClassifyOptions(method="icl")
    plain = Classifier.from_files(llm, codec, demos, opts, batch=False)
    fits = max(len(p.prefix) for p in plain.label_prefixes) + len(plain.clip_tokens(queries[0]))
    assert len(plain.clip_tokens(queries[3])) > len(plain.clip_tokens(queries[0])) + 5
    small = dataclasses.replace(llm, context_length=fits + 5)
    results = list(classify_files(small, codec, demos, queries, opts))
    assert len(results) == len(queries)
    path, err = results[1]
    assert path == queries[1] and "no such file" in str(err)
    path, err = results[3]
    assert path == queries[3] and isinstance(err, PromptTooLongError)
    good = [0, 2, 4, 5]
    want = [plain.classify(queries[i]) for i in good]
    assert_same(want, [results[i] for i in good])
    batched = Classifier.from_files(llm, codec, demos, opts)
    assert_same(want, batched.classify_many([queries[i] for i in good]))


def test_queries_per_batch_depends_on_the_device() -> None:
    assert classify.queries_per_batch(CPU) == 1
    assert classify.queries_per_batch(torch.device("cuda", 0)) > 1


# -- decoding ------------------------------------------------------------------------------

PREFIXES = [[5, 9, 17, 3, 40, 22, 8, 61, 2, 33], [1, 2, 3], [7, 8, 9, 10, 11, 12]]
QUERIES = [[12, 7, 50], [4, 5, 6, 7, 8, 9, 10, 11], [3], []]
CANDS = [[4], [6, 11], [30, 31, 32], [6, 12]]


@pytest.fixture(scope="module", params=["sdpa", "eager"])
def model(request: pytest.FixtureRequest):
    m = tiny_llama()
    m.set_attn_implementation(request.param)
    return m


@pytest.mark.parametrize("reuse", [True, False])
@pytest.mark.parametrize("block", [1, 5, 512])
def test_token_logprobs_batch_matches_one_prefix_at_a_time(model, reuse: bool, block: int) -> None:
    batch = PrefixBatch(model, PREFIXES, CPU, 256, reuse=reuse, block=block)
    singles = [PrefixCache(model, p, CPU, 256) for p in PREFIXES]
    for queries in (QUERIES, QUERIES[1:2], QUERIES):  # the cache is restored between calls
        got = token_logprobs_batch(batch, queries)
        for q, row in zip(queries, got, strict=True):
            for single, lp in zip(singles, row, strict=True):
                torch.testing.assert_close(lp, token_logprobs(single, q), atol=TOL, rtol=0)
    # Sensitive: each prefix gives other log-probabilities for the same query.
    row = token_logprobs_batch(batch, QUERIES[1:2])[0]
    assert (row[0] - row[1]).abs().max() > 1e-2 and (row[1] - row[2]).abs().max() > 1e-2


@pytest.mark.parametrize("reuse", [True, False])
def test_continuation_logprobs_batch_matches_one_query_at_a_time(model, reuse: bool) -> None:
    batch = PrefixBatch(model, PREFIXES[:1], CPU, 256, reuse=reuse, block=4)
    single = PrefixCache(model, PREFIXES[0], CPU, 256)
    want = torch.stack([continuation_logprobs(single, q, CANDS) for q in QUERIES])
    for _ in range(2):
        torch.testing.assert_close(continuation_logprobs_batch(batch, QUERIES, CANDS), want, atol=TOL, rtol=0)
    torch.testing.assert_close(continuation_logprobs_batch(batch, QUERIES[:1], CANDS), want[:1], atol=TOL, rtol=0)


def test_prefix_batch_refuses_prompts_past_the_context(model) -> None:
    with pytest.raises(PromptTooLongError, match="long one: prompt of 10 tokens exceeds the LLM's context of 9"):
        PrefixBatch(model, [[1, 2], PREFIXES[0]], CPU, 9, sources=["short one", "long one"])
    with pytest.raises(PromptTooLongError, match=r"\(fix: shorten it\)$"):
        PrefixBatch(model, [PREFIXES[0]], CPU, 9, fix="shorten it")
    batch = PrefixBatch(model, PREFIXES, CPU, 14, sources=["a", "b", "c"])
    assert len(token_logprobs_batch(batch, [[1, 2, 3, 4]])[0]) == 3  # exactly fits
    with pytest.raises(PromptTooLongError, match="a: prompt of 15 tokens"):
        token_logprobs_batch(batch, [[1], [1, 2, 3, 4, 5]])
