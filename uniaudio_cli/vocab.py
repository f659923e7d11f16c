"""An LLM's vocabulary as the codec sees it: tokenizer, input-embedding table, and its fingerprint.

Kept apart from :mod:`uniaudio_cli.llm` (which loads vocabularies) and :mod:`uniaudio_cli.bridge`
(which builds codebooks on them) so that neither of those needs the other. Imports nothing heavy:
torch is only imported inside :func:`embedding_fingerprint`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
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


class TokenTable:
    """The id <-> token table of a ``tokenizer.json``, read with the ``tokenizers`` library.

    What the codec needs of a tokenizer (token text for ids, the size, the special ids, and plain
    encoding for the trainer's label targets), without importing transformers: its import and
    ``AutoTokenizer`` take 1.5-2.5 s of every ``uniaudio encode`` or ``decode`` on a 2-core CPU,
    which never use the LLM. Prompts need the transformers tokenizer (chat templates, special
    tokens); :func:`uniaudio_cli.llm.load_llm` loads that one.
    """

    def __init__(self, path: str | Path) -> None:
        from tokenizers import Tokenizer

        self.path = Path(path)
        self._tok = Tokenizer.from_file(str(self.path))

    def __len__(self) -> int:
        return int(self._tok.get_vocab_size(with_added_tokens=True))

    @property
    def all_special_ids(self) -> list[int]:
        """Ids of the added tokens marked special (the control tokens)."""
        return sorted(int(i) for i, t in self._tok.get_added_tokens_decoder().items() if t.special)

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        """Token strings of ``ids`` as the vocabulary spells them (``"Ġword"``), like transformers'."""
        return [self._tok.id_to_token(int(i)) or "" for i in ids]

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of ``text``; with ``add_special_tokens`` the post-processor's (BOS, ...) too."""
        return list(self._tok.encode(text, add_special_tokens=add_special_tokens).ids)


@dataclass
class Vocabulary:
    """An LLM's tokenizer and input-embedding table.

    Attributes:
        name: short name recorded in codec checkpoints.
        tokenizer: a transformers tokenizer, or a :class:`TokenTable` where only the codec
            needs it (``load_vocabulary(..., full_tokenizer=False)``).
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
