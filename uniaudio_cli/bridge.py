"""The codes <-> LLM-token bridge.

Layer 1 of the codec indexes a word-level subset of the LLM vocabulary (whole English words
that are single tokens); layers 2 and 3 index the whole embedding table, so their codes *are*
token ids. This module builds that subset reproducibly from a tokenizer, fingerprints the
embedding table so a codec refuses a mismatched LLM, and maps codes to token ids and text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from uniaudio_cli.codec.config import VocabSpec
from uniaudio_cli.errors import CodesFormatError, VocabularyMismatchError

# Re-exported: the fingerprint lives in uniaudio_cli.vocab (no import circle with uniaudio_cli.llm).
from uniaudio_cli.vocab import embedding_fingerprint as embedding_fingerprint

if TYPE_CHECKING:
    from uniaudio_cli.vocab import Vocabulary

WORD_MARKERS = ("Ġ", "▁")  # byte-level BPE (GPT-2, SmolLM) and SentencePiece (LLaMA) word starts


def english_words() -> set[str] | None:
    """A lower-case English word list when the optional ``english-words`` package is installed."""
    try:
        from english_words import get_english_words_set
    except ImportError:
        return None
    # Words in both dictionaries: either alone admits fragments such as "st" or "com".
    web2 = get_english_words_set(["web2"], lower=True, alpha=True)
    return web2 & get_english_words_set(["gcide"], lower=True, alpha=True)


def word_token_ids(tokenizer: Any, n: int = 3000, words: set[str] | None = None, min_len: int = 2) -> list[int]:
    """The first ``n`` token ids (in id order, i.e. BPE merge order, roughly by frequency) that
    are a whole lower-case English word with a word-start marker; filtered by ``words`` if given.
    """
    vocab_size = len(tokenizer)
    tokens = tokenizer.convert_ids_to_tokens(list(range(vocab_size)))
    out: list[int] = []
    seen: set[str] = set()
    for i, tok in enumerate(tokens):
        if not tok or tok[0] not in WORD_MARKERS:
            continue
        w = tok[1:]
        if len(w) < min_len or not (w.isascii() and w.isalpha() and w.islower()) or w in seen:
            continue
        if words is not None and w not in words:
            continue
        seen.add(w)
        out.append(i)
        if len(out) == n:
            break
    if len(out) < n:
        raise ValueError(f"tokenizer has only {len(out)} whole-word tokens, {n} asked for")
    return out


def build_vocab_spec(vocab: Vocabulary, n_words: int = 3000) -> VocabSpec:
    """Record which vocabulary a new codec is built on (layer-1 word ids included)."""
    return VocabSpec(
        llm=vocab.name,
        vocab_size=vocab.size,
        embedding_dim=int(vocab.embeddings.shape[1]),
        embedding_sha256=vocab.fingerprint,
        layer1_token_ids=word_token_ids(vocab.tokenizer, n_words, english_words()),
        excluded_token_ids=list(vocab.special_ids),
    )


def check_vocabulary(spec: VocabSpec, vocab: Vocabulary, source: str) -> None:
    """Raise :class:`VocabularyMismatchError` unless ``vocab`` is the one ``spec`` was built on."""
    fix = f"load the LLM this codec was trained for ({spec.llm}) with --llm, or use a codec trained for {vocab.name}"
    shape = (vocab.size, int(vocab.embeddings.shape[1]))
    if shape != (spec.vocab_size, spec.embedding_dim):
        raise VocabularyMismatchError(
            f"{source}: codec built for {spec.llm} (vocabulary {spec.vocab_size} x {spec.embedding_dim}), "
            f"the LLM {vocab.name} has {shape[0]} x {shape[1]}",
            fix,
        )
    if vocab.fingerprint != spec.embedding_sha256:
        raise VocabularyMismatchError(
            f"{source}: codec built for {spec.llm}, but the embedding table of {vocab.name} differs", fix
        )


def codebook_tables(spec: VocabSpec, vocab: Vocabulary, source: str = "codec") -> tuple[list, list]:
    """Frozen tables ``[(K1, E), (V, E), (V, E)]`` and banned ids per layer for ``LLMCodec.set_codebooks``."""
    import torch

    check_vocabulary(spec, vocab, source)
    emb = vocab.embeddings
    banned = torch.tensor(spec.excluded_token_ids, dtype=torch.long)
    return [emb[torch.tensor(spec.layer1_token_ids)], emb, emb], [None, banned, banned]


@dataclass
class TokenBridge:
    """Maps codebook indices to LLM token ids and back.

    ``layer_token_ids[i]`` is the token id of each code of layer ``i`` (``None``: codes are token
    ids already). ``tokenizer`` renders tokens as text. ``word_list_layer1``: the published
    codec whose layer 1 indexes its own 3,248-word list, not the LLM's tokens; its layer-1
    codes pass through as they are (``w<index>`` as text) and the LLM tasks refuse it.
    """

    layer_token_ids: list[list[int] | None]
    codebook_sizes: list[int]
    tokenizer: Any = None
    word_list_layer1: bool = False
    excluded: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        self._inverse = [None if ids is None else {t: c for c, t in enumerate(ids)} for ids in self.layer_token_ids]

    @property
    def num_layers(self) -> int:
        return len(self.codebook_sizes)

    def to_token_ids(self, codes: Sequence[Sequence[int]]) -> list[list[int]]:
        """Per-layer codebook indices -> per-layer LLM token ids."""
        out = []
        for layer, c in enumerate(codes):
            ids = self.layer_token_ids[layer]
            out.append([int(x) for x in c] if ids is None else [ids[int(x)] for x in c])
        return out

    def from_token_ids(self, token_ids: Sequence[Sequence[int]], source: str = "codes") -> list[list[int]]:
        """Per-layer LLM token ids -> codebook indices; raises :class:`CodesFormatError` (a
        :class:`UsageError`) on ids that are not codes of their layer."""
        if len(token_ids) != self.num_layers:
            raise CodesFormatError(
                f"{source}: {len(token_ids)} code layers, this codec has {self.num_layers}",
                "pass codes written by `uniaudio encode --json` with the same codec",
            )
        out = []
        for layer, ids in enumerate(token_ids):
            inv = self._inverse[layer]
            size = self.codebook_sizes[layer]
            codes = []
            for t in ids:
                c = int(t) if inv is None else inv.get(int(t), -1)
                if not 0 <= c < size or (inv is None and int(t) in self.excluded):
                    raise CodesFormatError(
                        f"{source}: token id {t} is not a code of layer {layer + 1}",
                        "pass codes written by `uniaudio encode --json` with the same codec",
                    )
                codes.append(c)
            out.append(codes)
        return out

    def valid_token_ids(self, layer: int) -> list[int]:
        """Token ids the LLM may write for ``layer`` (used to constrain decoding)."""
        ids = self.layer_token_ids[layer]
        if ids is not None:
            return list(ids)
        return [i for i in range(self.codebook_sizes[layer]) if i not in self.excluded]

    def token_text(self, token_ids: Sequence[int], layer: int) -> list[str]:
        """Each token of one layer as the LLM's text (word-start markers shown as nothing)."""
        if layer == 0 and self.word_list_layer1:
            return [f"w{int(t)}" for t in token_ids]
        if self.tokenizer is None:
            return [str(int(t)) for t in token_ids]
        toks = self.tokenizer.convert_ids_to_tokens([int(t) for t in token_ids])
        return [t.lstrip("".join(WORD_MARKERS)) or t for t in toks]
