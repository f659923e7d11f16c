"""Writing codec tokens with the LLM so that every output decodes.

A clip is serialised as its layer-1 ids, then layer-2, then layer-3 (the same order the
prompts use). Generation follows a schedule of allowed-token masks: ``n_1`` positions where
only layer-1 words may appear, then ``n_2`` layer-2 tokens, then ``n_3`` layer-3 tokens, with
``n_i`` in the codec's stride ratios, so the result always splits back into valid layers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from uniaudio_cli.codec.api import Codec
from uniaudio_cli.decoding import allowed_mask


def flatten(ids: Sequence[Sequence[int]]) -> list[int]:
    """Per-layer token ids -> one sequence, layer 1 first."""
    return [t for layer in ids for t in layer]


def split(tokens: Sequence[int], counts: Sequence[int]) -> list[list[int]]:
    """Inverse of :func:`flatten` for known per-layer ``counts``."""
    out, i = [], 0
    for n in counts:
        out.append(list(tokens[i : i + n]))
        i += n
    return out


class LayerMasks:
    """Allowed-token masks per codec layer over an LLM vocabulary of ``vocab_size``."""

    def __init__(self, codec: Codec, vocab_size: int, device: torch.device) -> None:
        self.masks = [
            allowed_mask(vocab_size, codec.bridge.valid_token_ids(layer), device)
            for layer in range(codec.bridge.num_layers)
        ]

    def schedule(self, counts: Sequence[int]) -> list[torch.Tensor]:
        return [self.masks[layer] for layer, n in enumerate(counts) for _ in range(n)]
