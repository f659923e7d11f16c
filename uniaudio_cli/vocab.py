"""An LLM's vocabulary as the codec sees it: tokenizer, input-embedding table, and its fingerprint.

Kept apart from :mod:`uniaudio_cli.llm` (which loads vocabularies) and :mod:`uniaudio_cli.bridge`
(which builds codebooks on them) so that neither of those needs the other. Imports nothing heavy:
torch is only imported inside :func:`embedding_fingerprint`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def embedding_fingerprint(table: torch.Tensor) -> str:
    """SHA-256 of ``(V, E)`` rounded to float16, so fp32/fp16/bf16-stored copies of one table agree."""
    import torch

    t = table.detach().to("cpu", torch.float32).to(torch.float16).contiguous()
    h = hashlib.sha256()
    h.update(str(tuple(t.shape)).encode())
    h.update(t.numpy().tobytes())
    return h.hexdigest()


@dataclass
class Vocabulary:
    """An LLM's tokenizer and input-embedding table.

    Attributes:
        name: short name recorded in codec checkpoints.
        tokenizer: a transformers tokenizer.
        embeddings: ``(V, E)`` float32 CPU tensor, row ``i`` = embedding of token id ``i``.
        special_ids: ids of control tokens (never used as audio codes).
    """

    name: str
    tokenizer: Any
    embeddings: torch.Tensor
    special_ids: list[int] = field(default_factory=list)

    @property
    def size(self) -> int:
        """Number of token ids (rows of the embedding table)."""
        return int(self.embeddings.shape[0])

    @cached_property
    def fingerprint(self) -> str:
        """:func:`embedding_fingerprint` of the table, hashed once (56 MB for SmolLM2)."""
        return embedding_fingerprint(self.embeddings)
