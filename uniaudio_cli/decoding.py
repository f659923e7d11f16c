"""Running the frozen LLM: a reusable KV cache of the shared prompt prefix, scoring of
candidate answers, and generation constrained to allowed-token sets.

Answers are never parsed from free text: labels are scored, and generated audio tokens are
drawn only from the codes valid at each position.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch

from uniaudio_cli.errors import PromptTooLongError
from uniaudio_cli.limits import PROMPT_FIX

if TYPE_CHECKING:
    from uniaudio_cli.prompt_store import PromptStore

# Draft tokens checked per forward pass: long enough to skip most passes when the draft is
# mostly kept, short enough that a rejection early in the block wastes little.
DRAFT_BLOCK = 10


def crop_cache(cache: Any, length: int) -> None:
    """Drop cached positions past ``length``, in every layer.

    Layer by layer where the cache has layer objects (transformers 5): a pass stopped partway
    (an interrupt, an out-of-memory error) leaves the layers it reached longer than the
    others, and a whole-cache ``crop`` would cut the same count from each, eating into the
    prefix of the layers it never reached. A negative ``crop`` works across versions; 4.x
    crops every layer to one absolute length anyway.
    """
    layers = getattr(cache, "layers", None)
    if layers is None:
        extra = cache.get_seq_length() - length
        if extra > 0:
            cache.crop(-extra)
        return
    for layer in layers:
        if not getattr(layer, "is_initialized", True):
            continue
        extra = layer.get_seq_length() - length
        if extra > 0:
            layer.crop(-extra)


def cache_argument(model: Any) -> str:
    """The keyword a model's ``forward`` takes its KV cache by: ``cache`` from transformers 5.2x
    on, ``past_key_values`` before (the old name still works there but warns)."""
    import inspect

    params = inspect.signature(type(model).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


class PrefixCache:
    """The KV cache of a prompt prefix, computed once and reused for every query.

    ``extend`` runs more tokens on top of the prefix; ``reset`` crops the cache back so the
    next query starts from the same prefix. ``reuse=False`` recomputes the prefix for each
    query instead (for measuring what the cache saves). ``lazy=True`` defers computing the
    cache to the first :meth:`start` (for a prefix that may never be used). With a ``store``
    (:class:`~uniaudio_cli.prompt_store.PromptStore`), a cache computed in an earlier run is
    read back instead of computed, and a computed one is stored.
    """

    def __init__(
        self,
        model: Any,
        prefix: Sequence[int],
        device: torch.device,
        context_length: int,
        reuse: bool = True,
        source: str = "prompt",
        lazy: bool = False,
        store: PromptStore | None = None,
        fix: str = PROMPT_FIX,
    ) -> None:
        self.model = model
        self.fix = fix
        self.store = store
        self.device = device
        self.prefix = list(prefix)
        self.context_length = context_length
        self.reuse = reuse
        self.source = source
        self._cache: Any = None
        self._logits: torch.Tensor | None = None
        self.check_length(0)  # before running a prefix the model cannot position
        if reuse and not lazy:
            self._compute()

    def _compute(self) -> None:
        stored = self.store.load(self.prefix) if self.store is not None else None
        if stored is not None:
            self._cache, self._logits = stored
            return
        self._cache, logits = self._run(self.prefix, None)
        self._logits = logits[-1].clone()  # keep one row, not the (L, V) table
        if self.store is not None:
            self.store.save(self.prefix, self._cache, self._logits)

    def check_length(self, extra: int) -> None:
        n = len(self.prefix) + extra
        if n > self.context_length:
            raise PromptTooLongError(
                f"{self.source}: prompt of {n} tokens exceeds the LLM's context of {self.context_length}",
                self.fix,
            )

    @torch.no_grad()
    def _run(self, ids: Sequence[int], cache: Any) -> tuple[Any, torch.Tensor]:
        from transformers import DynamicCache

        if cache is None:
            cache = DynamicCache()
        x = torch.tensor([list(ids)], dtype=torch.long, device=self.device)
        out = self.model(input_ids=x, use_cache=True, **{cache_argument(self.model): cache})
        return cache, out.logits[0].float()

    def start(self) -> tuple[Any, torch.Tensor]:
        """A cache holding the prefix and the logits ``(V,)`` after its last token."""
        if not self.reuse:
            cache, logits = self._run(self.prefix, None)
            return cache, logits[-1]
        if self._cache is None:
            self._compute()
        assert self._cache is not None and self._logits is not None
        crop_cache(self._cache, len(self.prefix))
        return self._cache, self._logits

    def extend(self, cache: Any, ids: Sequence[int]) -> tuple[Any, torch.Tensor]:
        """Run ``ids`` on top of ``cache``; returns the cache and logits ``(len(ids), V)``."""
        self.check_length(cache.get_seq_length() - len(self.prefix) + len(ids))
        return self._run(ids, cache)

    def fork(self, cache: Any) -> Any:
        """An independent copy of ``cache`` (for scoring several continuations of one state)."""
        return copy.deepcopy(cache)


def continuation_logprobs(
    prefix: PrefixCache, query: Sequence[int], candidates: Sequence[Sequence[int]]
) -> torch.Tensor:
    """Log-probability of each candidate continuation after ``prefix + query``.

    Returns ``(C,)``: the sum over each candidate's tokens. The query is run once; candidates
    share its cache, which is cropped back after each.
    """
    prefix.check_length(len(query) + max(len(c) for c in candidates))
    cache, last = prefix.start()
    if query:
        cache, logits = prefix.extend(cache, query)
        last = logits[-1]
    base = cache.get_seq_length()
    first = torch.log_softmax(last, dim=-1)
    scores = []
    for cand in candidates:
        total = first[cand[0]].item()
        if len(cand) > 1:
            cache, logits = prefix._run(cand[:-1], cache)
            lp = torch.log_softmax(logits, dim=-1)
            total += lp[torch.arange(len(cand) - 1), torch.tensor(cand[1:])].sum().item()
            crop_cache(cache, base)
        scores.append(total)
    return torch.tensor(scores)


# Tokens per forward pass when scoring a long sequence: the (tokens, vocabulary) logits of one
# pass are the largest tensor (512 x 49,152 floats: 100 MB), so memory does not grow with length.
LOGPROB_BLOCK = 512


def token_logprobs(prefix: PrefixCache, ids: Sequence[int], block: int = LOGPROB_BLOCK) -> torch.Tensor:
    """Log-probability ``(N,)`` of each of ``ids`` after ``prefix`` and the ids before it.

    The ids run through the LLM ``block`` at a time on the growing KV cache, keeping only each
    block's ``N`` chosen log-probabilities (a sequence of at most ``block + 1`` ids is one pass).
    """
    if not ids:
        return torch.zeros(0)
    ids = list(ids)
    prefix.check_length(len(ids))
    cache, last = prefix.start()
    out = [torch.log_softmax(last, dim=-1)[ids[0]].reshape(1).cpu()]
    feed = ids[:-1]
    for i in range(0, len(feed), block):
        chunk = feed[i : i + block]
        cache, logits = prefix.extend(cache, chunk)
        logp = torch.log_softmax(logits, dim=-1)
        targets = torch.as_tensor(ids[i + 1 : i + 1 + len(chunk)], device=logp.device)
        out.append(logp[torch.arange(len(chunk), device=logp.device), targets].cpu())
    return torch.cat(out)


@dataclass
class BatchState:
    """Rows of prompts of different lengths run side by side on one KV cache.

    Slot ``s`` of row ``b`` holds a real token where ``mask[b, s]`` is 1 and padding the
    attention mask hides where it is 0; ``lengths[b]`` real tokens so far are also the position
    id of the row's next token, so a row's tokens sit at the positions an unbatched run gives
    them whatever padding precedes them in the cache.
    """

    cache: Any
    mask: torch.Tensor  # (B, S) long: 1 real token, 0 padding
    lengths: torch.Tensor  # (B,) long: real tokens per row
    last: torch.Tensor | None  # (B, V) float: logits after each row's last real token

    def repeat(self, n: int) -> BatchState:
        """Each row ``n`` times in a row (row ``b`` becomes rows ``b * n .. b * n + n - 1``).

        ``n == 1`` shares the cache (the caller's extension is cropped away by the next
        ``start``); otherwise the cache is copied, so the original is left as it was."""
        if n == 1:
            return self
        cache = copy.deepcopy(self.cache)
        cache.batch_repeat_interleave(n)
        last = None if self.last is None else self.last.repeat_interleave(n, dim=0)
        return BatchState(cache, self.mask.repeat_interleave(n, dim=0), self.lengths.repeat_interleave(n), last)


class PrefixBatch:
    """The KV caches of several prompt prefixes of different lengths, in one batch.

    What :class:`PrefixCache` is for one prefix, for ``B`` of them: every continuation is run
    after all prefixes in one forward pass per block instead of one pass per prefix.

    The prefixes are right-padded, not left-padded: row ``b`` holds its prefix in slots
    ``0 .. len_b - 1`` and padding after it, and continuations are appended after the longest
    prefix with position ids that go on from ``len_b``. Each real token then attends to exactly
    its row's real tokens at the positions an unbatched run gives them (rotary position
    embeddings, as in LLaMA, depend on position ids, not on cache slots), so the scores are the
    unbatched ones up to float rounding. Padding never comes before a row's first token, so no
    token (padding included) attends to nothing: a fully masked attention row is NaN in some
    attention kernels, and a NaN key or value would reach real tokens through the next layer.

    Args:
        model: the LLM (a transformers causal LM taking ``attention_mask`` and ``position_ids``).
        prefixes: ``B`` token id lists.
        device: where the ids go.
        context_length: the most tokens one row may hold.
        reuse: keep the prefixes' cache for every call (``False``: run them again each time).
        sources: a name per prefix for errors (default ``"prompt"``).
        fix: the fix a too-long prompt's error gives (default: a classification prompt's).
        block: tokens per forward pass, counted over all rows: the ``(rows, tokens, V)`` logits
            of one pass are the largest tensor.
    """

    def __init__(
        self,
        model: Any,
        prefixes: Sequence[Sequence[int]],
        device: torch.device,
        context_length: int,
        reuse: bool = True,
        sources: Sequence[str] | None = None,
        block: int = LOGPROB_BLOCK,
        fix: str = PROMPT_FIX,
    ) -> None:
        self.model = model
        self.fix = fix
        self.device = device
        self.prefixes = [list(p) for p in prefixes]
        self.context_length = context_length
        self.reuse = reuse
        self.sources = list(sources) if sources is not None else ["prompt"] * len(self.prefixes)
        self.block = block
        self._state: BatchState | None = None
        self.check_length(0)  # before running a prefix the model cannot position
        if reuse:
            self._state = self._run_prefixes(1)

    def __len__(self) -> int:
        return len(self.prefixes)

    def check_length(self, extra: int) -> None:
        """Raise :class:`PromptTooLongError` for the first prefix that ``extra`` more tokens
        would push past the context."""
        for prefix, source in zip(self.prefixes, self.sources, strict=True):
            n = len(prefix) + extra
            if n > self.context_length:
                raise PromptTooLongError(
                    f"{source}: prompt of {n} tokens exceeds the LLM's context of {self.context_length}",
                    self.fix,
                )

    def _run_prefixes(self, repeat: int) -> BatchState:
        from transformers import DynamicCache

        rows = [p for p in self.prefixes for _ in range(repeat)]
        empty = BatchState(
            DynamicCache(),
            torch.zeros(len(rows), 0, dtype=torch.long, device=self.device),
            torch.zeros(len(rows), dtype=torch.long, device=self.device),
            None,
        )
        return self.extend(empty, rows)[0]

    def start(self, repeat: int = 1) -> BatchState:
        """The prefixes, each ``repeat`` times in a row: row ``b * repeat + k`` is prefix ``b``.

        With ``reuse=False`` every row is run afresh (re-prompting, as :class:`PrefixCache`
        does per query)."""
        if not self.reuse:
            return self._run_prefixes(repeat)
        assert self._state is not None
        crop_cache(self._state.cache, self._state.mask.shape[1])
        return self._state.repeat(repeat)

    @torch.no_grad()
    def extend(
        self,
        state: BatchState,
        rows: Sequence[Sequence[int]],
        targets: Sequence[Sequence[int]] | None = None,
    ) -> tuple[BatchState, list[torch.Tensor]]:
        """Run ``rows[b]`` on top of row ``b`` of ``state`` (rows may differ in length, or be empty).

        Returns the extended state and, for each row, the log-probability ``(len(rows[b]),)``
        of ``targets[b][j]`` after ``rows[b][j]`` (empty tensors without ``targets``). The
        tokens run in blocks of ``block // B`` columns on the growing cache.
        """
        n_rows = len(rows)
        counts = torch.tensor([len(r) for r in rows], dtype=torch.long)
        width = int(counts.max()) if n_rows else 0
        if width == 0:
            return state, [torch.zeros(0) for _ in rows]
        ids = torch.zeros(n_rows, width, dtype=torch.long)  # padding: any valid id, it is masked
        tgt = torch.zeros(n_rows, width, dtype=torch.long)
        for b, row in enumerate(rows):
            ids[b, : len(row)] = torch.as_tensor(list(row), dtype=torch.long)
            if targets is not None:
                tgt[b, : len(row)] = torch.as_tensor(list(targets[b]), dtype=torch.long)
        valid = (torch.arange(width) < counts[:, None]).long()
        ids, tgt, valid, counts = (t.to(self.device) for t in (ids, tgt, valid, counts))
        mask = state.mask
        last = None if state.last is None else state.last.clone()
        scores = torch.zeros(n_rows, width, device=self.device)
        step = max(1, self.block // n_rows)
        for i in range(0, width, step):
            cols = slice(i, i + step)
            mask = torch.cat([mask, valid[:, cols]], dim=1)
            positions = state.lengths[:, None] + torch.arange(i, i + ids[:, cols].shape[1], device=self.device)
            out = self.model(
                input_ids=ids[:, cols],
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                **{cache_argument(self.model): state.cache},
            )
            logits = out.logits.float()  # (B, c, V)
            if targets is not None:
                logp = torch.log_softmax(logits, dim=-1)
                scores[:, cols] = logp.gather(-1, tgt[:, cols, None])[..., 0]
            # Each row's last real token may fall in this block; its logits seed the next call.
            end = counts - 1 - i
            hit = (end >= 0) & (end < logits.shape[1])
            if last is None:
                last = torch.zeros(n_rows, logits.shape[-1], device=self.device)
            last[hit] = logits[hit, end[hit]]
        new = BatchState(state.cache, mask, state.lengths + counts, last)
        scores = scores.cpu()
        return new, [scores[b, : len(row)] for b, row in enumerate(rows)]


def token_logprobs_batch(prefixes: PrefixBatch, queries: Sequence[Sequence[int]]) -> list[list[torch.Tensor]]:
    """What :func:`token_logprobs` gives for each query after each prefix, in one batch.

    Returns ``out[q][b]``: the log-probability ``(N_q,)`` of each of ``queries[q]`` after
    prefix ``b`` and the query's ids before it. The ``B * Q`` rows run together.
    """
    n_q = len(queries)
    queries = [list(q) for q in queries]
    prefixes.check_length(max((len(q) for q in queries), default=0))
    state = prefixes.start(n_q)  # row b * n_q + q: prefix b, query q
    rows = range(len(prefixes) * n_q)
    first = torch.log_softmax(state.last, dim=-1) if state.last is not None else None
    _, rest = prefixes.extend(state, [queries[r % n_q][:-1] for r in rows], [queries[r % n_q][1:] for r in rows])
    out: list[list[torch.Tensor]] = [[] for _ in queries]
    for r in rows:
        q = queries[r % n_q]
        if not q:
            out[r % n_q].append(torch.zeros(0))
            continue
        assert first is not None
        out[r % n_q].append(torch.cat([first[r, q[0]].reshape(1).cpu(), rest[r]]))
    return out


def continuation_logprobs_batch(
    prefix: PrefixBatch, queries: Sequence[Sequence[int]], candidates: Sequence[Sequence[int]]
) -> torch.Tensor:
    """What :func:`continuation_logprobs` gives for each query, in one batch.

    ``prefix`` holds one prefix. Returns ``(Q, C)``: the log-probability of candidate ``c``
    after ``prefix + queries[q]``. The queries run side by side once; then every multi-token
    candidate after every query, side by side, on copies of their caches.
    """
    assert len(prefix) == 1, "one prefix shared by every query"
    n_q = len(queries)
    longest = max(len(c) for c in candidates)
    prefix.check_length(max((len(q) for q in queries), default=0) + longest)
    state = prefix.start(n_q)
    state, _ = prefix.extend(state, queries)
    assert state.last is not None
    first = torch.log_softmax(state.last, dim=-1).cpu()  # (Q, V)
    scores = first[:, [c[0] for c in candidates]].clone()  # (Q, C)
    multi = [i for i, c in enumerate(candidates) if len(c) > 1]
    if multi:
        state = state.repeat(len(multi))  # row q * M + m: query q, candidate multi[m]
        rows = [candidates[m] for _ in range(n_q) for m in multi]
        _, rest = prefix.extend(state, [c[:-1] for c in rows], [c[1:] for c in rows])
        for r, lp in enumerate(rest):
            scores[r // len(multi), multi[r % len(multi)]] += lp.sum()
    return scores


def allowed_mask(vocab_size: int, allowed: Sequence[int], device: torch.device) -> torch.Tensor:
    """Boolean ``(V,)`` mask of allowed token ids."""
    mask = torch.zeros(vocab_size, dtype=torch.bool, device=device)
    mask[torch.as_tensor(list(allowed), dtype=torch.long, device=device)] = True
    return mask


class Draft(Protocol):
    """Guesses of the next tokens for :func:`generate_constrained` to check in one pass."""

    def propose(self, written: Sequence[int], k: int) -> list[int]:
        """Up to ``k`` guesses for the tokens after ``written`` (the tokens generated so far)."""
        ...


class FixedDraft:
    """One fixed guess per step (e.g. the input a task mostly keeps)."""

    def __init__(self, guesses: Sequence[int]) -> None:
        self.guesses = list(guesses)

    def propose(self, written: Sequence[int], k: int) -> list[int]:
        return self.guesses[len(written) : len(written) + k]


class LookupDraft:
    """Prompt-lookup guesses: find the latest earlier occurrence of the last ``1..max_ngram``
    tokens of ``context + written`` and guess the tokens that followed it there.

    It pays when the model copies from its prompt or repeats itself, as an LLM writing codec
    tokens after demonstrations does. The n-gram index grows with the written tokens, so a
    guess costs a few dictionary lookups, not a scan of the prompt.
    """

    def __init__(self, context: Sequence[int], max_ngram: int = 3) -> None:
        self.seq: list[int] = []
        self.max_ngram = max_ngram
        self.n_context = len(context)
        # n-gram -> end position of its latest occurrence that has a following token
        self.latest: dict[tuple[int, ...], int] = {}
        self._append(context)

    def _append(self, ids: Sequence[int]) -> None:
        for tok in ids:
            end = len(self.seq) - 1  # the n-grams ending here now have a following token
            for n in range(1, self.max_ngram + 1):
                if end - n + 1 >= 0:
                    self.latest[tuple(self.seq[end - n + 1 : end + 1])] = end
            self.seq.append(tok)

    def propose(self, written: Sequence[int], k: int) -> list[int]:
        have = len(self.seq) - self.n_context
        if len(written) < have:
            raise ValueError("LookupDraft: written tokens went back; use one draft per generation")
        self._append(written[have:])
        for n in range(min(self.max_ngram, len(self.seq)), 0, -1):
            end = self.latest.get(tuple(self.seq[-n:]))
            if end is not None:
                break
        else:
            return []
        # A match running into the end continues into its own guesses (a repeat).
        out: list[int] = []
        for j in range(end + 1, end + 1 + k):
            out.append(self.seq[j] if j < len(self.seq) else out[j - len(self.seq)])
        return out


@torch.no_grad()
def generate_constrained(
    prefix: PrefixCache,
    query: Sequence[int],
    schedule: Sequence[torch.Tensor],
    temperature: float = 0.0,
    top_k: int = 0,
    bias: Sequence[torch.Tensor | None] | None = None,
    generator: torch.Generator | None = None,
    draft: Draft | None = None,
    draft_block: int = DRAFT_BLOCK,
) -> list[int]:
    """Generate ``len(schedule)`` tokens after ``prefix + query``; step ``i`` may only emit
    tokens where ``schedule[i]`` (a boolean ``(V,)`` mask) is true. ``bias[i]`` (optional,
    ``(V,)``) is added to the log-probabilities first (steering). Greedy when ``temperature``
    is 0.

    ``draft`` (greedy only) proposes up to ``draft_block - 1`` tokens, checked in the same
    forward pass as the last chosen token: the guesses the model would have chosen itself are
    kept, and at the first disagreement its own choice is taken and the rest dropped. The
    result is the one-token-at-a-time result (up to float rounding between a block's and a
    single token's pass); a draft that guesses well turns many passes into few.
    """
    prefix.check_length(len(query) + len(schedule))
    if not schedule:
        return []
    cache, last = prefix.start()
    if query:
        cache, logits = prefix.extend(cache, query)
        last = logits[-1]

    def pick(i: int, row: torch.Tensor) -> int:
        logp = torch.log_softmax(row, dim=-1)
        if bias is not None and bias[i] is not None:
            logp = logp + bias[i].to(logp.device)
        logp = logp.masked_fill(~schedule[i].to(logp.device), float("-inf"))
        if temperature <= 0:
            return int(logp.argmax())
        scaled = logp / temperature
        if top_k > 0:
            kth = torch.topk(scaled, min(top_k, int(schedule[i].sum()))).values[-1]
            scaled = scaled.masked_fill(scaled < kth, float("-inf"))
        return int(torch.multinomial(torch.softmax(scaled, -1).cpu(), 1, generator=generator))

    n = len(schedule)
    if temperature > 0 or draft_block <= 1:
        draft = None
    out: list[int] = []
    while True:
        i = len(out)
        out.append(pick(i, last))
        if len(out) == n:
            return out
        guesses = draft.propose(out, min(draft_block - 1, n - len(out))) if draft is not None else []
        start = cache.get_seq_length()
        cache, logits = prefix._run([out[-1], *guesses], cache)
        kept = 0
        for j, guess in enumerate(guesses):
            if pick(i + 1 + j, logits[j]) != guess:
                break
            out.append(guess)
            kept += 1
            if len(out) == n:
                return out
        if kept < len(guesses):
            # The cache holds the rejected guesses too; the next pass continues after the kept ones.
            crop_cache(cache, start + 1 + kept)
        last = logits[kept]
