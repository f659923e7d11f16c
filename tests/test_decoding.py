"""Prefix KV-cache reuse, candidate scoring and constrained generation on a tiny random LLaMA."""

from __future__ import annotations

import pytest
import torch

from uniaudio_cli.decoding import (
    FixedDraft,
    LookupDraft,
    PrefixCache,
    allowed_mask,
    continuation_logprobs,
    generate_constrained,
    token_logprobs,
)
from uniaudio_cli.errors import PromptTooLongError

V = 64
CPU = torch.device("cpu")


def tiny_llama(seed: int = 0, vocab_size: int = V):
    """A seeded 2-layer LLaMA; a large init range makes its next-token distributions peaked, so a
    wrong cache shows up as clearly different scores."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        initializer_range=0.2,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def model():
    return tiny_llama()


PREFIX = [5, 9, 17, 3, 40, 22, 8, 61, 2, 33]
QUERY = [12, 7, 50]
CANDS = [[4], [6, 11], [30, 31, 32], [6, 12]]


@torch.no_grad()
def direct_scores(model, context: list[int], candidates: list[list[int]]) -> torch.Tensor:
    """Sum of log-softmax of each candidate's tokens, from one full-sequence forward pass each."""
    out = []
    for cand in candidates:
        ids = torch.tensor([context + cand])
        lp = torch.log_softmax(model(input_ids=ids, use_cache=False).logits[0].float(), -1)
        out.append(sum(lp[len(context) - 1 + j, t].item() for j, t in enumerate(cand)))
    return torch.tensor(out)


def test_scores_match_full_sequence(model) -> None:
    direct = direct_scores(model, PREFIX + QUERY, CANDS)
    reused = continuation_logprobs(PrefixCache(model, PREFIX, CPU, 256, reuse=True), QUERY, CANDS)
    fresh = continuation_logprobs(PrefixCache(model, PREFIX, CPU, 256, reuse=False), QUERY, CANDS)
    torch.testing.assert_close(reused, direct, atol=1e-4, rtol=0)
    torch.testing.assert_close(fresh, direct, atol=1e-4, rtol=0)
    # The check is sensitive: another context gives clearly other scores.
    other = direct_scores(model, [*PREFIX, 13, 7, 50], CANDS)
    assert (other - direct).abs().max() > 1e-2
    # An empty query scores right after the prefix.
    empty = continuation_logprobs(PrefixCache(model, PREFIX, CPU, 256), [], CANDS)
    torch.testing.assert_close(empty, direct_scores(model, PREFIX, CANDS), atol=1e-4, rtol=0)


def test_prefix_cache_is_restored_between_queries(model) -> None:
    prefix = PrefixCache(model, PREFIX, CPU, 256)
    first = continuation_logprobs(prefix, QUERY, CANDS)
    # A longer query in between must not leak into the next scoring.
    continuation_logprobs(prefix, [1, 2, 3, 4, 5, 6], [[7, 8, 9]])
    generate_constrained(prefix, [44], [allowed_mask(V, range(2, V), CPU)] * 5)
    again = continuation_logprobs(prefix, QUERY, CANDS)
    assert torch.equal(first, again)
    cache, logits = prefix.start()
    assert cache.get_seq_length() == len(PREFIX)
    assert logits.shape == (V,)


def test_generate_constrained_obeys_masks(model) -> None:
    prefix = PrefixCache(model, PREFIX, CPU, 256)
    allowed = [[10, 11, 12], [40], list(range(20, 30)), [2, 63], [5, 6, 7, 8]]
    schedule = [allowed_mask(V, a, CPU) for a in allowed]
    greedy = generate_constrained(prefix, QUERY, schedule)
    assert len(greedy) == len(allowed)
    assert all(t in a for t, a in zip(greedy, allowed, strict=True))
    # Greedy = the most likely allowed token given everything before it.
    ctx = PREFIX + QUERY
    with torch.no_grad():
        for t, a in zip(greedy, allowed, strict=True):
            logits = model(input_ids=torch.tensor([ctx]), use_cache=False).logits[0, -1]
            assert t == a[int(logits[a].argmax())]
            ctx.append(t)
    # Sampling (with and without top-k) stays inside the masks too, and is seeded.
    for top_k in (0, 2):
        runs = [
            generate_constrained(
                prefix, QUERY, schedule, temperature=1.5, top_k=top_k, generator=torch.Generator().manual_seed(s)
            )
            for s in range(6)
        ]
        assert all(t in a for run in runs for t, a in zip(run, allowed, strict=True))
        assert runs[0] == generate_constrained(
            prefix, QUERY, schedule, temperature=1.5, top_k=top_k, generator=torch.Generator().manual_seed(0)
        )
    # top_k=1 keeps only the likeliest allowed token, so sampling gives the greedy answer.
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        assert generate_constrained(prefix, QUERY, schedule, temperature=1.5, top_k=1, generator=g) == greedy
    assert generate_constrained(prefix, QUERY, []) == []
    assert generate_constrained(prefix, QUERY, schedule) == greedy  # the cache was restored
    # With an empty query the first step reads the logits after the prefix's last token.
    cont = PrefixCache(model, PREFIX + QUERY, CPU, 256)
    assert generate_constrained(cont, [], schedule) == greedy


def test_generate_constrained_bias(model) -> None:
    prefix = PrefixCache(model, PREFIX, CPU, 256)
    allowed = list(range(10, 20))
    schedule = [allowed_mask(V, allowed, CPU)] * 4
    greedy = generate_constrained(prefix, QUERY, schedule)
    # Steer each step to a token greedy decoding did not pick; a bias on a masked-out token is ignored.
    targets = [next(t for t in allowed if t != g) for g in greedy]
    bias = []
    for t in targets:
        b = torch.zeros(V)
        b[t] = 50.0
        b[0] = 1000.0  # not allowed: must never be emitted
        bias.append(b)
    assert generate_constrained(prefix, QUERY, schedule, bias=bias) == targets
    # None entries leave a step unbiased.
    out = generate_constrained(prefix, QUERY, schedule, bias=[bias[0], None, None, None])
    assert out[0] == targets[0] and all(t in allowed for t in out)


class CountingPrefix(PrefixCache):
    """Counts forward passes after the prefix."""

    passes = 0

    def _run(self, ids, cache):
        if cache is not None:
            self.passes += 1
        return super()._run(ids, cache)


def test_drafted_generation_equals_one_token_at_a_time(model) -> None:
    prefix = CountingPrefix(model, PREFIX, CPU, 256)
    rng = torch.Generator().manual_seed(3)
    allowed = [torch.randperm(V, generator=rng)[:12].tolist() for _ in range(24)]
    schedule = [allowed_mask(V, a, CPU) for a in allowed]
    bias = [torch.zeros(V).index_fill_(0, torch.tensor(a[:2]), 1.5) for a in allowed]
    for b in (None, bias):
        greedy = generate_constrained(prefix, QUERY, schedule, bias=b, draft_block=1)
        single = prefix.passes
        prefix.passes = 0
        wrong = [next(t for t in a if t != g) for a, g in zip(allowed, greedy, strict=True)]
        half = [g if i % 3 else w for i, (g, w) in enumerate(zip(greedy, wrong, strict=True))]
        for guesses in (greedy, wrong, half, [0] * len(greedy)):
            for block in (2, 3, 10, 40):
                out = generate_constrained(
                    prefix, QUERY, schedule, bias=b, draft=FixedDraft(guesses), draft_block=block
                )
                assert out == greedy, (guesses, block)
                if guesses is greedy:
                    # A perfect draft fills block tokens per pass (after the query's pass).
                    assert prefix.passes == 1 + -(-(len(greedy) - 1) // block), block
                prefix.passes = 0
        out = generate_constrained(prefix, QUERY, schedule, bias=b, draft=LookupDraft(PREFIX + QUERY))
        assert out == greedy and prefix.passes <= single
        prefix.passes = 0
    # Sampling ignores a draft (it could not keep the seeded result) and the cache is restored.
    seeded = [
        generate_constrained(
            prefix, QUERY, schedule, temperature=1.0, generator=torch.Generator().manual_seed(0), draft=d
        )
        for d in (None, FixedDraft(greedy))
    ]
    assert seeded[0] == seeded[1]
    assert generate_constrained(prefix, QUERY, schedule, bias=bias) == greedy


def test_lookup_draft_guesses_repeats_and_copies() -> None:
    context = [1, 2, 3, 4, 5, 9, 9, 7]
    draft = LookupDraft(context)
    # The last token 7 never occurred before: nothing to guess; after "... 2, 3" the context
    # continues with 4, 5, 9.
    assert draft.propose([], 3) == []
    assert draft.propose([2, 3], 3) == [4, 5, 9]
    # The longest matching n-gram wins: "9 9" was followed by 7, a lone "9" (latest) by 9.
    assert LookupDraft([9, 9, 7, 5, 9]).propose([9], 2) == [7, 5]
    # A token repeated in the written tokens is guessed to go on repeating.
    assert LookupDraft([1, 2]).propose([6, 6], 4) == [6, 6, 6, 6]
    # The latest occurrence is used.
    assert LookupDraft([3, 1, 3, 2]).propose([3], 1) == [2]
    with pytest.raises(ValueError, match="went back"):
        draft.propose([2], 1)


def test_prompt_too_long(model) -> None:
    prefix = PrefixCache(model, PREFIX, CPU, context_length=len(PREFIX) + 4, source="test prompt")
    assert continuation_logprobs(prefix, [1, 2, 3], [[4]]).shape == (1,)  # exactly fits
    with pytest.raises(PromptTooLongError, match="test prompt: prompt of 15 tokens exceeds the LLM's context of 14"):
        continuation_logprobs(prefix, [1, 2, 3], [[4, 5]])
    # The longest candidate decides, whichever comes first.
    with pytest.raises(PromptTooLongError, match="prompt of 15 tokens"):
        continuation_logprobs(prefix, [1, 2, 3], [[4], [4, 5]])
    with pytest.raises(PromptTooLongError):
        generate_constrained(prefix, [1, 2], [allowed_mask(V, [3], CPU)] * 3)
    with pytest.raises(PromptTooLongError):
        prefix.extend(prefix.start()[0], [1, 2, 3, 4, 5])
    # A prefix that alone exceeds the context is refused before the model runs it.
    for reuse in (True, False):
        with pytest.raises(PromptTooLongError, match="of 10 tokens exceeds the LLM's context of 9"):
            PrefixCache(model, PREFIX, CPU, context_length=9, reuse=reuse)
    assert PromptTooLongError.exit_code == 1
    # Each task names the fix that fits its own command, not the classification options.
    with pytest.raises(PromptTooLongError, match=r"\(fix: use a shorter caption\)$"):
        PrefixCache(model, PREFIX, CPU, context_length=9, fix="use a shorter caption")
    with pytest.raises(PromptTooLongError, match=r"--shots/--repeats"):
        PrefixCache(model, PREFIX, CPU, context_length=9)


def test_token_logprobs_match_one_forward_pass(model) -> None:
    prefix = PrefixCache(model, PREFIX, CPU, context_length=64)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([PREFIX + QUERY])).logits[0].float()
    logp = torch.log_softmax(logits[len(PREFIX) - 1 : -1], dim=-1)
    want = logp[torch.arange(len(QUERY)), torch.tensor(QUERY)]
    for _ in range(2):  # the cache is cropped back between calls
        torch.testing.assert_close(token_logprobs(prefix, QUERY), want, atol=1e-4, rtol=0)
    assert token_logprobs(prefix, []).shape == (0,)
    # Long sequences run in blocks on the growing cache: the same log-probabilities.
    long = QUERY * 5 + [4]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([PREFIX + long])).logits[0].float()
    want = torch.log_softmax(logits[len(PREFIX) - 1 : -1], dim=-1)[torch.arange(len(long)), torch.tensor(long)]
    for block in (1, 2, 5, len(long) - 1, 512):
        torch.testing.assert_close(token_logprobs(prefix, long, block=block), want, atol=1e-4, rtol=0)


def test_crop_cache_of_a_cache_without_layer_objects() -> None:
    """transformers 4.x caches have no layer objects: the whole cache is cropped, only when longer."""
    from uniaudio_cli.decoding import crop_cache

    class OldCache:
        def __init__(self, n: int) -> None:
            self.n, self.crops = n, []

        def get_seq_length(self) -> int:
            return self.n

        def crop(self, k: int) -> None:
            self.crops.append(k)

    longer, shorter = OldCache(10), OldCache(5)
    crop_cache(longer, 7)
    crop_cache(shorter, 7)
    assert longer.crops == [-3] and shorter.crops == []
