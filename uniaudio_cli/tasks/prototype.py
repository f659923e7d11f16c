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
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from uniaudio_cli.codec.api import Codec
from uniaudio_cli.errors import CheckpointError, UsageError
from uniaudio_cli.llm import LoadedLLM
from uniaudio_cli.paths import file_sha256, save_tensors
from uniaudio_cli.prompts import bos_ids

log = logging.getLogger(__name__)

Pooling = Literal["mean", "meanstd"]

CENTER_FILE = "prototype_center.safetensors"
# 3: the fused statistics cover MFCC and prosody statistics; 2: tied to the weights that decide
# the codes (a retrained decoder keeps the centre); 1: to the whole weight file. 1 and 2 are still
# read for the prototype centre.
CENTER_FORMAT_VERSION = 3
_LEAD = "Input: <"  # the text before audio tokens in the classification prompts


@torch.no_grad()
def clip_features(
    llm: LoadedLLM,
    tokens: Sequence[int],
    source: str = "clip",
    pooling: Pooling = "mean",
    upto: int | None = None,
) -> torch.Tensor:
    """Hidden states pooled over a clip's audio ``tokens`` at every depth, float32: the mean,
    ``(L + 1, H)``, or with ``pooling="meanstd"`` the mean and the standard deviation side by
    side, ``(L + 1, 2H)``.

    Depth 0 is the embedding layer. The tokens follow ``bos + "Input: <"`` as in the prompts.
    ``upto``: only depths ``0..upto`` are needed; the layers above are not run and their rows
    are NaN (a prototype at 0.6 depth costs 60 % of a full pass).
    """
    lead = bos_ids(llm.tokenizer) + list(llm.tokenizer.encode(_LEAD, add_special_tokens=False))
    ids = lead + list(tokens)
    if not tokens:
        raise UsageError(f"{source}: no audio tokens", "pass a clip of at least 0.1 s")
    if len(ids) > llm.context_length:
        raise UsageError(
            f"{source}: a clip of {len(tokens)} tokens exceeds the LLM's context of {llm.context_length}",
            "cut it into shorter clips, or read part of it with --crop SECONDS",
        )
    x = torch.tensor([ids], dtype=torch.long, device=llm.device)
    n_states = int(llm.model.config.num_hidden_layers) + 1
    want = n_states if upto is None else min(upto + 1, n_states)
    hidden = _hidden_states(llm.model, x, want)
    states = [h[0, len(lead) :].float() for h in hidden]  # (T, H) per depth
    if pooling == "mean":
        rows = [h.mean(0).cpu() for h in states]
    else:
        rows = [torch.cat([h.mean(0), h.std(0, unbiased=False)]).cpu() for h in states]
    rows += [torch.full_like(rows[0], float("nan"))] * (n_states - len(rows))
    return torch.stack(rows)


def _hidden_states(model: torch.nn.Module, x: torch.Tensor, want: int) -> list[torch.Tensor]:
    """The first ``want`` of the ``L + 1`` hidden states transformers' ``output_hidden_states``
    gives for ids ``x`` ``(1, T)``, each ``(1, T, H)``, running only the layers they need.

    They are recorded by hooks of our own on the embedding, the layers and the final norm (the
    last state is the normed output of the last layer), not by ``output_hidden_states``: newer
    transformers install its recorders once, on the layers of the first pass, so a pass on a
    shortened layer list would leave every later pass short of states. A model without a
    LLaMA-style ``model.layers`` list runs whole with ``output_hidden_states``.
    """
    keep = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(type(model).forward).parameters else {}
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    embed, norm = getattr(inner, "embed_tokens", None), getattr(inner, "norm", None)
    if not isinstance(layers, torch.nn.ModuleList) or embed is None or norm is None:
        out = model(input_ids=x, output_hidden_states=True, use_cache=False, **keep)
        return list(out.hidden_states[:want])
    full = want >= len(layers) + 1
    run = len(layers) if full else want - 1  # states 0..want-1 need layers 0..want-2
    states: list[torch.Tensor] = []

    def record(_module: object, _args: object, output: object) -> None:
        states.append(output[0] if isinstance(output, tuple) else output)  # type: ignore[arg-type, index]

    modules = [embed, *list(layers)[:run]] + ([norm] if full else [])
    hooks = [m.register_forward_hook(record) for m in modules]
    try:
        with _first_layers(model, run):
            model(input_ids=x, use_cache=False, **keep)
    finally:
        for h in hooks:
            h.remove()
    if full:
        del states[-2]  # the last layer's output, unnormed: transformers gives it normed
    return states[:want]


@contextmanager
def _first_layers(model: torch.nn.Module, n: int | None) -> Iterator[None]:
    """Run only the first ``n`` decoder layers of a transformers LLaMA-style model (``None``, or
    a model without a ``model.layers`` list: all)."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if n is None or not isinstance(layers, torch.nn.ModuleList) or n >= len(layers):
        yield
        return
    inner.layers = torch.nn.ModuleList(list(layers)[:n])  # type: ignore[union-attr]
    try:
        yield
    finally:
        inner.layers = layers  # type: ignore[union-attr]


def depth_index(n_states: int, depth: float) -> int:
    """Index into ``(L + 1, ...)`` hidden states for a relative ``depth`` in [0, 1]."""
    return round(min(max(depth, 0.0), 1.0) * (n_states - 1))


def center_path(codec: Codec) -> Path:
    """Where ``codec``'s base-set centre is kept: ``<folder>/prototype_center.safetensors`` for a
    checkpoint folder, ``<stem>.prototype_center.safetensors`` beside a published ``.pth``."""
    source = Path(codec.source)
    return source / CENTER_FILE if source.is_dir() else source.with_name(f"{source.stem}.{CENTER_FILE}")


def _pair_identity(llm: LoadedLLM, codec: Codec, version: int = CENTER_FORMAT_VERSION) -> dict[str, str] | None:
    """What a centre must match: the weights that decide the codec's codes (format 1: its whole
    weight file) and the LLM's embedding table and shape."""
    source = Path(codec.source)
    weights = source / "model.safetensors" if source.is_dir() else source
    if not weights.is_file():
        return None
    cfg = llm.model.config
    # Hashed once per loaded codec; a centre is checked per classifier (per episode).
    codec_id = (
        {"codec_weights_sha256": codec.weights_sha256 or file_sha256(weights)}
        if version == 1
        else {"codec_codes_sha256": codec.codes_sha256}
    )
    return {
        **codec_id,
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


@dataclass
class FusedStats:
    """What the ``fused`` method measures features from: the base-set centre of the LLM part
    ``(len(FUSED_DEPTHS) * 2H,)`` and the base set's mean and std of the acoustic statistics
    ``(ACOUSTIC_DIM,)`` (:func:`acoustic_statistics`)."""

    center: torch.Tensor
    acoustic_mean: torch.Tensor
    acoustic_std: torch.Tensor


def save_center(
    path: str | Path,
    center: torch.Tensor,
    llm: LoadedLLM,
    codec: Codec,
    sources: str,
    fused: FusedStats | None = None,
) -> Path:
    """Write ``center`` (and the ``fused`` method's statistics) for this (codec, LLM) pair."""

    ident = _pair_identity(llm, codec)
    if ident is None:
        raise UsageError(
            f"{codec.source}: not a codec checkpoint", "pass a folder with model.safetensors or a published .pth"
        )
    out = Path(path)
    tmp = out.with_name(out.name + ".tmp")
    meta = {"format_version": str(CENTER_FORMAT_VERSION), "sources": sources, **ident}
    tensors = {"center": center.float().contiguous()}
    if fused is not None:
        tensors |= {
            "fused_center": fused.center.float().contiguous(),
            "acoustic_mean": fused.acoustic_mean.float().contiguous(),
            "acoustic_std": fused.acoustic_std.float().contiguous(),
        }
    save_tensors(tensors, tmp, metadata=meta)
    tmp.replace(out)
    return out


def _read_center_file(llm: LoadedLLM, codec: Codec) -> dict[str, torch.Tensor] | None:
    """The tensors of the centre file beside ``codec`` if it was made for this (codec, LLM) pair;
    else ``None`` with a warning."""
    from safetensors import safe_open

    path = center_path(codec)
    if not path.is_file():
        log.warning(
            "prototype: no %s for %s; clip features are not centred (make it with "
            "checkpoints/make_prototype_center.py --codec %s, or pass --no-center)",
            path.name,
            codec.source,
            codec.source,
        )
        return None
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a Mapping)
    version = meta.get("format_version")
    if version not in {str(v) for v in range(1, CENTER_FORMAT_VERSION + 1)}:
        raise CheckpointError(
            f"{path}: format version {version!r}, expected {CENTER_FORMAT_VERSION}",
            "delete the file or recreate it with checkpoints/make_prototype_center.py",
        )
    ident = _pair_identity(llm, codec, min(int(version), 2)) or {}
    wrong = [k for k, v in ident.items() if meta.get(k) != v]
    if wrong:
        log.warning(
            "prototype: %s was made for another codec/LLM pair (%s differ); clip features are not centred",
            path,
            ", ".join(wrong),
        )
        return None
    return tensors


def load_center(llm: LoadedLLM, codec: Codec) -> torch.Tensor | None:
    """The centre ``(L + 1, H)`` stored beside ``codec`` for this LLM, or ``None`` (with a warning
    when there is none or it belongs to another pair)."""
    tensors = _read_center_file(llm, codec)
    return None if tensors is None else tensors["center"]


def load_fused_stats(llm: LoadedLLM, codec: Codec) -> FusedStats | None:
    """The ``fused`` method's statistics stored beside ``codec``, or ``None`` with a warning."""
    tensors = _read_center_file(llm, codec)
    if tensors is None:
        return None
    if "acoustic_mean" not in tensors:
        log.warning(
            "fused: %s has no statistics for this version of the fused method; features are not "
            "centred (remake the file with checkpoints/make_prototype_center.py)",
            center_path(codec),
        )
        return None
    return FusedStats(tensors["fused_center"], tensors["acoustic_mean"], tensors["acoustic_std"])


# --------------------------------------------------------------------------- fused features

# Chosen on development splits of four sets (bench/classify_methods.py): the token-identity layer
# (depth 0) and a middle layer, each as mean and std over the clip's tokens of all three layers,
# joined to acoustic statistics of the waveform (MFCC and prosody), each part weighing the same.
FUSED_DEPTHS = (0.0, 0.6)
N_MFCC = 20  # coefficient 0 (log energy) is left out: loudness alone should not decide
N_MFCC_STATS = 2 * (N_MFCC - 1)  # mean and std of each kept coefficient
N_PROSODY = 18
ACOUSTIC_DIM = N_MFCC_STATS + N_PROSODY


def mfcc_statistics(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    """MFCC 1-19 mean and standard deviation over time: ``(38,)`` float64."""
    import librosa

    m = librosa.feature.mfcc(y=np.asarray(wav, dtype=np.float32), sr=sample_rate, n_mfcc=N_MFCC)[1:]
    return np.concatenate([m.mean(axis=1), m.std(axis=1)]).astype(np.float64)


def _spread(x: np.ndarray) -> float:
    return float(np.percentile(x, 90) - np.percentile(x, 10)) if x.size else 0.0


def _mean_std(x: np.ndarray) -> tuple[float, float]:
    return (float(x.mean()), float(x.std())) if x.size else (0.0, 0.0)


def prosody_statistics(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    """How a clip is said rather than what: ``(N_PROSODY,)`` float64 statistics over its active
    frames (within 35 dB of its loudest 10 ms frame) of pitch (level, spread, movement), loudness
    (level, spread, change), voicing, spectral balance (alpha ratio, Hammarberg index, centroid),
    onset rate and active duration. The layer-1 tokens carry what is said; on RAVDESS, where every
    actor says the same two sentences, these are what separates emotions (bench/classify_methods.py)."""
    import librosa

    y = np.asarray(wav, dtype=np.float32)
    hop = sample_rate // 100
    if y.size < 2 * 1024:  # YIN needs two of its frames; shorter clips are padded with silence
        y = np.pad(y, (0, 2 * 1024 - y.size))
    db = 20 * np.log10(librosa.feature.rms(y=y, frame_length=4 * hop, hop_length=hop)[0] + 1e-5)
    f0 = librosa.yin(y, fmin=60, fmax=500, sr=sample_rate, frame_length=1024, hop_length=hop)
    n = min(f0.size, db.size)
    f0, db = np.log2(f0[:n]), db[:n]
    active = db > db.max() - 35
    # YIN decides no voicing: frames whose pitch holds steady from the previous one count as voiced.
    voiced = np.r_[False, np.abs(np.diff(f0)) < 0.05] & active
    pitch = f0[voiced] if voiced.sum() > 5 else f0[active]
    moves = np.abs(np.diff(f0))[voiced[1:]]
    level = db[active]
    power = np.abs(librosa.stft(y, n_fft=512, hop_length=hop)) ** 2
    m = min(power.shape[1], n)
    power = power[:, :m][:, active[:m]] + 1e-10
    freq = librosa.fft_frequencies(sr=sample_rate, n_fft=512)
    below_1k, above_1k = (freq >= 50) & (freq < 1000), (freq >= 1000) & (freq < 5000)
    alpha = 10 * np.log10(power[below_1k].sum(0) / power[above_1k].sum(0))
    hammarberg = 10 * np.log10(power[freq < 2000].max(0) / power[(freq >= 2000) & (freq < 5000)].max(0))
    centroid = np.log((freq[:, None] * power).sum(0) / power.sum(0))
    onsets = librosa.onset.onset_detect(y=y, sr=sample_rate, hop_length=hop)
    return np.array(
        [
            *_mean_std(pitch),
            _spread(pitch),
            float(moves.mean()) if moves.size else 0.0,
            float(level.mean() - db.max()),
            float(level.std()),
            _spread(level),
            float(np.abs(np.diff(db))[active[1:]].mean()) if n > 1 and active[1:].any() else 0.0,
            float(voiced.mean() / max(active.mean(), 1e-3)),
            float(active.mean()),
            *_mean_std(alpha),
            *_mean_std(hammarberg),
            *_mean_std(centroid),
            len(onsets) / (y.size / sample_rate),
            float(np.log(active.sum() * 0.01 + 0.1)),
        ],
        dtype=np.float64,
    )


def acoustic_statistics(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    """The ``fused`` method's waveform part: :func:`mfcc_statistics` then :func:`prosody_statistics`,
    ``(ACOUSTIC_DIM,)`` float64."""
    import warnings

    with warnings.catch_warnings():
        # librosa warns on every clip shorter than its analysis window; such a clip already
        # gets the classifier's own "too short to judge" warning.
        warnings.filterwarnings("ignore", message="n_fft=.* is too large for input signal", category=UserWarning)
        return np.concatenate([mfcc_statistics(wav, sample_rate), prosody_statistics(wav, sample_rate)])


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=-1)


def fused_llm_part(states: torch.Tensor) -> torch.Tensor:
    """``(L + 1, 2H)`` mean|std states (see :func:`clip_features`) -> ``(len(FUSED_DEPTHS) * 2H,)``:
    per depth, the unit mean joined to the unit std, normalised (so each depth weighs the same)."""
    h = states.shape[-1] // 2
    parts = []
    for d in FUSED_DEPTHS:
        x = states[depth_index(states.shape[0], d)]
        parts.append(_unit(torch.cat([_unit(x[:h]), _unit(x[h:])])))
    return torch.cat(parts)


def fused_upto(llm: LoadedLLM) -> int:
    """The deepest hidden state :func:`fused_llm_part` reads (``upto`` for :func:`clip_features`)."""
    return depth_index(int(llm.model.config.num_hidden_layers) + 1, max(FUSED_DEPTHS))


def fused_feature(states: torch.Tensor, acoustic: np.ndarray, stats: FusedStats | None) -> torch.Tensor:
    """One clip's ``fused`` feature, unit length ``(len(FUSED_DEPTHS) * 2H + ACOUSTIC_DIM,)``: the
    centred LLM part, the standardised MFCC statistics and the standardised prosody statistics
    (``acoustic`` from :func:`acoustic_statistics`), each normalised so all three weigh the same."""
    if np.shape(acoustic) != (ACOUSTIC_DIM,):
        raise UsageError(
            f"fused: acoustic statistics of shape {np.shape(acoustic)}, expected ({ACOUSTIC_DIM},)",
            "compute them with uniaudio_cli.tasks.prototype.acoustic_statistics",
        )
    llm_part = fused_llm_part(states)
    a = torch.as_tensor(acoustic, dtype=torch.float32)
    if stats is not None:
        llm_part = llm_part - stats.center
        a = (a - stats.acoustic_mean) / stats.acoustic_std
    return _unit(torch.cat([_unit(llm_part), _unit(a[:N_MFCC_STATS]), _unit(a[N_MFCC_STATS:])]))


def compute_fused_stats(llm: LoadedLLM, groups: Mapping[str, Sequence[tuple[Sequence[int], np.ndarray]]]) -> FusedStats:
    """:class:`FusedStats` of a base set: per group, clips as (all-layer tokens, acoustic statistics).
    The centre is the mean over groups of each group's mean, so every source weighs the same."""
    if not groups or not all(groups.values()):
        raise UsageError("the base set is empty", "pass folders holding audio clips")
    means, acoustic = [], []
    for clips in groups.values():
        feats = [fused_llm_part(clip_features(llm, t, pooling="meanstd", upto=fused_upto(llm))) for t, _ in clips]
        means.append(torch.stack(feats).mean(0))
        acoustic += [a for _, a in clips]
    a = torch.as_tensor(np.stack(acoustic), dtype=torch.float32)
    return FusedStats(torch.stack(means).mean(0), a.mean(0), a.std(0, unbiased=False) + 1e-8)


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
    "FUSED_DEPTHS",
    "FusedStats",
    "center_features",
    "center_path",
    "clip_features",
    "compute_center",
    "compute_fused_stats",
    "depth_index",
    "fused_feature",
    "fused_llm_part",
    "fused_upto",
    "load_center",
    "load_fused_stats",
    "manifest",
    "mfcc_statistics",
    "save_center",
]
