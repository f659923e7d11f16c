"""Running the frozen LLM: a reusable KV cache of the shared prompt prefix, scoring of
candidate answers, and generation constrained to allowed-token sets.

Answers are never parsed from free text: labels are scored, and generated audio tokens are
drawn only from the codes valid at each position.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch

from uniaudio_cli.errors import PromptTooLongError


def crop_cache(cache: Any, length: int) -> None:
    """Drop cached positions past ``length`` (a negative ``crop`` works across transformers versions)."""
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)


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
    query instead (for measuring what the cache saves).
    """

    def __init__(
        self,
        model: Any,
        prefix: Sequence[int],
        device: torch.device,
        context_length: int,
        reuse: bool = True,
        source: str = "prompt",
    ) -> None:
        self.model = model
        self.device = device
        self.prefix = list(prefix)
        self.context_length = context_length
        self.reuse = reuse
        self.source = source
        self._cache: Any = None
        self._logits: torch.Tensor | None = None
        self.check_length(0)  # before running a prefix the model cannot position
        if reuse:
            self._cache, logits = self._run(self.prefix, None)
            self._logits = logits[-1].clone()  # keep one row, not the (L, V) table

    def check_length(self, extra: int) -> None:
        n = len(self.prefix) + extra
        if n > self.context_length:
            raise PromptTooLongError(
                f"{self.source}: prompt of {n} tokens exceeds the LLM's context of {self.context_length}",
                "use fewer --shots/--repeats, a shorter --crop, --layers semantic, or an LLM with a longer context",
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


def allowed_mask(vocab_size: int, allowed: Sequence[int], device: torch.device) -> torch.Tensor:
    """Boolean ``(V,)`` mask of allowed token ids."""
    mask = torch.zeros(vocab_size, dtype=torch.bool, device=device)
    mask[torch.as_tensor(list(allowed), dtype=torch.long, device=device)] = True
    return mask


@torch.no_grad()
def generate_constrained(
    prefix: PrefixCache,
    query: Sequence[int],
    schedule: Sequence[torch.Tensor],
    temperature: float = 0.0,
    top_k: int = 0,
    bias: Sequence[torch.Tensor | None] | None = None,
    generator: torch.Generator | None = None,
) -> list[int]:
    """Generate ``len(schedule)`` tokens after ``prefix + query``; step ``i`` may only emit
    tokens where ``schedule[i]`` (a boolean ``(V,)`` mask) is true. ``bias[i]`` (optional,
    ``(V,)``) is added to the log-probabilities first (steering). Greedy when ``temperature``
    is 0."""
    prefix.check_length(len(query) + len(schedule))
    cache, last = prefix.start()
    if query:
        cache, logits = prefix.extend(cache, query)
        last = logits[-1]
    out: list[int] = []
    for i, mask in enumerate(schedule):
        logp = torch.log_softmax(last, dim=-1)
        if bias is not None and bias[i] is not None:
            logp = logp + bias[i].to(logp.device)
        logp = logp.masked_fill(~mask.to(logp.device), float("-inf"))
        if temperature <= 0:
            tok = int(logp.argmax())
        else:
            scaled = logp / temperature
            if top_k > 0:
                kth = torch.topk(scaled, min(top_k, int(mask.sum()))).values[-1]
                scaled = scaled.masked_fill(scaled < kth, float("-inf"))
            tok = int(torch.multinomial(torch.softmax(scaled, -1).cpu(), 1, generator=generator))
        out.append(tok)
        if i + 1 < len(schedule):
            cache, logits = prefix._run([tok], cache)
            last = logits[-1]
    return out
