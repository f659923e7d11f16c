"""Clip features for prototype classification, and the base-set centre they are measured from.

A clip's feature is the frozen LLM's hidden state averaged over the clip's audio tokens, at every
depth: ``(L + 1, H)`` for an LLM with ``L`` layers and width ``H``.

Such averages share a large common component, so any two clips look alike under cosine
similarity. As in SimpleShot (Wang et al. 2019, "CL2N"), the mean feature of a broad reference
set (the *base set*) is subtracted before L2-normalising. On 2-way 1-shot, 400 episodes,
SmolLM2-135M with the shipped codec at depth 0.6, centring moved ESC-10 fold 3 from 78.3 % to
81.7 % and left RAVDESS actors 11-12 at 59.8 % -> 59.3 %. A centre from speech only (the shipped
prompt audio) gave 82.4 % but cost RAVDESS 3 points, so the shipped centre mixes environmental
sound and speech (``checkpoints/make_prototype_center.py``).

The centre belongs to one codec and one LLM: it is stored beside the codec's weights as
``prototype_center.safetensors`` with fingerprints of both, and a pair it does not match gets
uncentred features and a warning.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from uniaudio_cli.codec.api import Codec
from uniaudio_cli.errors import CheckpointError, UsageError
from uniaudio_cli.llm import LoadedLLM
from uniaudio_cli.paths import file_sha256
from uniaudio_cli.prompts import bos_ids

log = logging.getLogger(__name__)

CENTER_FILE = "prototype_center.safetensors"
CENTER_FORMAT_VERSION = 1
_LEAD = "Input: <"  # the text before audio tokens in the classification prompts


@torch.no_grad()
def clip_features(llm: LoadedLLM, tokens: Sequence[int], source: str = "clip") -> torch.Tensor:
    """Mean hidden state over a clip's audio ``tokens`` at every depth: ``(L + 1, H)`` float32.

    Depth 0 is the embedding layer. The tokens follow ``bos + "Input: <"`` as in the prompts.
    """
    lead = bos_ids(llm.tokenizer) + list(llm.tokenizer.encode(_LEAD, add_special_tokens=False))
    ids = lead + list(tokens)
    if not tokens:
        raise UsageError(f"{source}: no audio tokens", "pass a clip of at least 0.1 s")
    if len(ids) > llm.context_length:
        raise UsageError(
            f"{source}: a clip of {len(tokens)} tokens exceeds the LLM's context of {llm.context_length}",
            "use --crop SECONDS or --layers semantic",
        )
    x = torch.tensor([ids], dtype=torch.long, device=llm.device)
    # Only hidden states are used: skip the (tokens, vocabulary) logits where the model allows.
    keep = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(type(llm.model).forward).parameters else {}
    out = llm.model(input_ids=x, output_hidden_states=True, use_cache=False, **keep)
    return torch.stack([h[0, len(lead) :].float().mean(0).cpu() for h in out.hidden_states])


def depth_index(n_states: int, depth: float) -> int:
    """Index into ``(L + 1, ...)`` hidden states for a relative ``depth`` in [0, 1]."""
    return round(min(max(depth, 0.0), 1.0) * (n_states - 1))


def _pair_identity(llm: LoadedLLM, codec: Codec) -> dict[str, str] | None:
    """What a centre must match: the codec's weight file and the LLM's embedding table and shape."""
    weights = Path(codec.source) / "model.safetensors"
    if not weights.is_file():
        return None
    cfg = llm.model.config
    return {
        # Hashed once when the codec was loaded; a centre is checked per classifier (per episode).
        "codec_weights_sha256": codec.weights_sha256 or file_sha256(weights),
        "llm_embedding_fingerprint": llm.vocabulary.fingerprint,
        "llm_layers": str(int(cfg.num_hidden_layers)),
        "llm_hidden_size": str(int(cfg.hidden_size)),
    }


def compute_center(llm: LoadedLLM, codec: Codec, groups: Mapping[str, Sequence[Sequence[int]]]) -> torch.Tensor:
    """The base-set centre ``(L + 1, H)``: the mean feature of each group of clips (given as
    layer-1 token lists), then the mean over groups, so every source weighs the same."""
    if not groups or not all(groups.values()):
        raise UsageError("the base set is empty", "pass folders holding audio clips")
    means = [torch.stack([clip_features(llm, t) for t in clips]).mean(0) for clips in groups.values()]
    return torch.stack(means).mean(0)


def save_center(path: str | Path, center: torch.Tensor, llm: LoadedLLM, codec: Codec, sources: str) -> Path:
    """Write ``center`` for this (codec, LLM) pair into the codec's folder (or ``path``)."""
    from safetensors.torch import save_file

    ident = _pair_identity(llm, codec)
    if ident is None:
        raise UsageError(f"{codec.source}: not a codec checkpoint folder", "pass a folder with model.safetensors")
    out = Path(path)
    tmp = out.with_name(out.name + ".tmp")
    meta = {"format_version": str(CENTER_FORMAT_VERSION), "sources": sources, **ident}
    save_file({"center": center.float().contiguous()}, str(tmp), metadata=meta)
    tmp.replace(out)
    return out


def load_center(llm: LoadedLLM, codec: Codec) -> torch.Tensor | None:
    """The centre ``(L + 1, H)`` stored beside ``codec`` for this LLM, or ``None`` (with a warning
    when there is none or it belongs to another pair)."""
    from safetensors import safe_open

    path = Path(codec.source) / CENTER_FILE
    if not path.is_file():
        log.warning("prototype: %s has no %s; clip features are not centred", codec.source, CENTER_FILE)
        return None
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        center = f.get_tensor("center")
    if meta.get("format_version") != str(CENTER_FORMAT_VERSION):
        raise CheckpointError(
            f"{path}: format version {meta.get('format_version')!r}, expected {CENTER_FORMAT_VERSION}",
            "delete the file or recreate it with checkpoints/make_prototype_center.py",
        )
    ident = _pair_identity(llm, codec) or {}
    wrong = [k for k, v in ident.items() if meta.get(k) != v]
    if wrong:
        log.warning(
            "prototype: %s was made for another codec/LLM pair (%s differ); clip features are not centred",
            path,
            ", ".join(wrong),
        )
        return None
    return center


def center_features(x: torch.Tensor, center: torch.Tensor | None) -> torch.Tensor:
    """Subtract ``center`` (broadcast over leading dims) and L2-normalise the last dim."""
    if center is not None:
        x = x - center
    return torch.nn.functional.normalize(x, dim=-1)


def manifest(groups: Mapping[str, Sequence[str | Path]]) -> str:
    """A short JSON description of a base set (group -> clip count), stored with the centre."""
    return json.dumps({k: len(v) for k, v in groups.items()}, sort_keys=True)


__all__ = [
    "CENTER_FILE",
    "center_features",
    "clip_features",
    "compute_center",
    "depth_index",
    "load_center",
    "manifest",
    "save_center",
]
