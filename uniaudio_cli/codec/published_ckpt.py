"""Reading (and, for tests, writing) the published UniAudio 1.5 codec checkpoint.

The published file (e.g. ``llm3_codec_uni.pth``) is a PyTorch pickle whose ``"codec_model"``
entry is a flat state dict of the ``MSCodecLM`` model: ``encoder.*``, ``quantizer.quantizers.*``
(including the frozen codebook tables) and ``decoder.*``. It is loaded with
``weights_only=True``, so no pickled code ever runs; the codec config is inferred from the
tensor shapes, falling back to the released values for what shapes cannot tell.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch
from torch import nn

from uniaudio_cli.codec.config import CodecConfig
from uniaudio_cli.codec.published import PublishedDecoder, PublishedEncoder, rotary_inv_freq
from uniaudio_cli.codec.quantizer import MultiScaleRVQ
from uniaudio_cli.errors import CheckpointError

__all__ = [
    "RELEASED_ATTN_WINDOW",
    "RELEASED_SAMPLE_RATE",
    "RELEASED_VQ_STRIDES",
    "expected_published_shapes",
    "infer_published_config",
    "load_published_state_dict",
    "make_synthetic_published_state_dict",
    "save_as_pth",
]

# Values of the released config.yaml that no tensor shape reveals.
RELEASED_SAMPLE_RATE = 16000
RELEASED_VQ_STRIDES = [4, 2, 1]
RELEASED_ATTN_WINDOW = 8

_SHOW_KEYS = 5
# Scales of the synthetic weights, chosen so that activations stay O(1) through the stacks of
# residual units: the decoder output is then rarely saturated by tanh and codes vary over time,
# which keeps comparisons against the reference sensitive.
_G_RANGE = (0.5, 1.0)
_BIAS_STD = 0.001
_FIX_REDOWNLOAD = "use the published UniAudio 1.5 codec file (e.g. llm3_codec_uni.pth) unmodified"


def _fail(path: str | Path, message: str, fix: str = _FIX_REDOWNLOAD) -> CheckpointError:
    return CheckpointError(f"{path}: {message}", fix)


def _first(keys: list[str]) -> str:
    more = f" (+{len(keys) - _SHOW_KEYS} more)" if len(keys) > _SHOW_KEYS else ""
    return ", ".join(keys[:_SHOW_KEYS]) + more


# --------------------------------------------------------------------------- layout


def _build(cfg: CodecConfig) -> nn.ModuleDict:
    """The three published modules under their checkpoint prefixes."""
    return nn.ModuleDict(
        {
            "encoder": PublishedEncoder(cfg),
            "quantizer": MultiScaleRVQ(cfg.latent_dim, cfg.vq_strides, cfg.codebook_sizes, cfg.codebook_dims),
            "decoder": PublishedDecoder(cfg),
        }
    )


def expected_published_shapes(cfg: CodecConfig) -> dict[str, tuple[int, ...]]:
    """Key -> shape of every tensor a published checkpoint with config ``cfg`` holds."""
    with torch.device("meta"):  # shapes only: no memory for the 32000 x 4096 tables
        layout = _build(cfg)
    return {k: tuple(v.shape) for k, v in layout.state_dict().items()}


# --------------------------------------------------------------------------- inference of the config


def _indices(sd: dict[str, torch.Tensor], pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in sd if (m := rx.fullmatch(k))})


def _shape(sd: dict[str, torch.Tensor], key: str, path: str | Path) -> tuple[int, ...]:
    if key not in sd:
        raise _fail(path, f"missing tensor {key!r}, so this is not a published LLM-Codec state dict")
    return tuple(sd[key].shape)


def _stride(kernel: int, key: str, path: str | Path) -> int:
    # Down/up-sampling convs have kernel 2 * stride.
    if kernel % 2:
        raise _fail(path, f"{key} has odd kernel size {kernel}; expected 2 * stride")
    return kernel // 2


def infer_published_config(sd: dict[str, torch.Tensor], path: str | Path = "<state dict>") -> CodecConfig:
    """Infer a ``CodecConfig(backbone="published")`` from the tensor shapes of ``sd``.

    Read from shapes: encoder_dim, encoder_rates, latent_dim, decoder_dim, decoder_rates, noise,
    depthwise, per-layer codebook sizes and dims. Not visible in shapes, so taken from the
    released config: sample_rate 16000, vq_strides [4, 2, 1] (needs exactly 3 layers) and
    attention window 8 (0 when the checkpoint has no attention).
    """
    encoder_dim = _shape(sd, "encoder.block.0.weight_v", path)[0]
    down = _indices(sd, r"encoder\.block\.(\d+)\.block\.4\.weight_v")
    if not down or down != list(range(1, len(down) + 1)):
        raise _fail(path, "no encoder down-sampling blocks found (encoder.block.{1..}.block.4)")
    encoder_rates = [
        _stride(sd[f"encoder.block.{i}.block.4.weight_v"].shape[-1], f"encoder.block.{i}", path) for i in down
    ]
    latent_dim = encoder_dim * 2 ** len(down)
    has_attn = f"encoder.block.{len(down) + 1}.to_qkv.weight" in sd
    last = len(down) + (2 if has_attn else 1)
    depthwise = _shape(sd, f"encoder.block.{last}.weight_v", path)[1] == 1 and latent_dim > 1

    first_conv = "decoder.model.1.weight_v" if depthwise else "decoder.model.0.weight_v"
    decoder_dim = _shape(sd, first_conv, path)[0]
    up = _indices(sd, r"decoder\.model\.(\d+)\.block\.1\.weight_v")
    if not up:
        raise _fail(path, "no decoder up-sampling blocks found (decoder.model.{i}.block.1)")
    decoder_rates = [
        _stride(sd[f"decoder.model.{j}.block.1.weight_v"].shape[-1], f"decoder.model.{j}", path) for j in up
    ]
    noise = f"decoder.model.{up[0]}.block.2.linear.weight_v" in sd

    layers = _indices(sd, r"quantizer\.quantizers\.(\d+)\.codebook\.weight")
    if layers != list(range(len(layers))) or not layers:
        raise _fail(path, "no codebook tables found (quantizer.quantizers.{i}.codebook.weight)")
    if len(layers) != len(RELEASED_VQ_STRIDES):
        raise _fail(
            path,
            f"{len(layers)} quantizer layers; the published layout has {len(RELEASED_VQ_STRIDES)} "
            f"(strides {RELEASED_VQ_STRIDES}) and strides are not stored in the file",
        )
    tables = [sd[f"quantizer.quantizers.{i}.codebook.weight"] for i in layers]
    if any(t.dim() != 2 for t in tables):
        raise _fail(path, "a codebook table is not 2-D")

    return CodecConfig(
        backbone="published",
        sample_rate=RELEASED_SAMPLE_RATE,
        latent_dim=latent_dim,
        vq_strides=list(RELEASED_VQ_STRIDES),
        codebook_sizes=[int(t.shape[0]) for t in tables],
        codebook_dims=[int(t.shape[1]) for t in tables],
        encoder_dim=int(encoder_dim),
        encoder_rates=encoder_rates,
        decoder_dim=int(decoder_dim),
        decoder_rates=decoder_rates,
        attn_window_size=RELEASED_ATTN_WINDOW if has_attn else 0,
        noise=noise,
        depthwise=depthwise,
        vocab=None,
    )


# --------------------------------------------------------------------------- loading


def _torch_load(path: Path) -> object:
    try:
        try:
            # mmap keeps the (up to 1 GB) codebook tables out of memory until they are copied.
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            # Files in the legacy (pre-zip) format cannot be memory-mapped.
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower() or "weights_only" in str(e):
            raise _fail(
                path,
                "holds pickled Python objects other than tensors and plain containers; "
                "uniaudio never executes pickled code",
                "only if you trust its source, re-save just the weights from Python: "
                "torch.save({'codec_model': torch.load(p, weights_only=False)['codec_model']}, p2)",
            ) from e
        raise _fail(path, f"not a PyTorch checkpoint ({e})") from e
    except (RuntimeError, EOFError, ValueError, OSError, AttributeError, KeyError, IndexError) as e:
        detail = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        raise _fail(path, f"not a readable PyTorch checkpoint ({detail})") from e


def _state_dict_of(obj: object, path: Path) -> dict[str, torch.Tensor]:
    sd = obj.get("codec_model") if isinstance(obj, dict) else None
    bare = isinstance(obj, dict) and any(str(k).startswith(("encoder.", "module.encoder.")) for k in obj)
    if sd is None and bare:
        sd = obj
    if not isinstance(sd, dict):
        found = sorted(map(str, obj))[:_SHOW_KEYS] if isinstance(obj, dict) else type(obj).__name__
        raise _fail(path, f"no 'codec_model' state dict in the file (found {found})")
    bad = [str(k) for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise _fail(path, f"'codec_model' has non-tensor entries: {_first(bad)}")
    if sd and all(k.startswith("module.") for k in sd):
        # saved from a DistributedDataParallel wrapper
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def _check_layout(sd: dict[str, torch.Tensor], cfg: CodecConfig, path: Path) -> None:
    try:
        expected = expected_published_shapes(cfg)
    except ValueError as e:
        raise _fail(path, f"inferred config cannot be built ({e})") from e
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    wrong = [
        f"{k} {tuple(sd[k].shape)} != {expected[k]}" for k in expected if k in sd and tuple(sd[k].shape) != expected[k]
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_first(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_first(unexpected)}")
    if wrong:
        problems.append(f"shape mismatches: {_first(wrong)}")
    if problems:
        raise _fail(path, "does not match the published LLM-Codec layout; " + "; ".join(problems))


def load_published_state_dict(path: str | Path) -> tuple[CodecConfig, dict[str, torch.Tensor]]:
    """Load a published codec ``.pth`` without executing pickled code.

    Returns ``(cfg, sd)``: ``cfg`` a ``CodecConfig(backbone="published", vocab=None)`` inferred
    from the shapes, ``sd`` the float32 state dict (codebook tables included) ready for
    ``LLMCodec(cfg).load_state_dict(sd, strict=True)``.

    Raises:
        CheckpointError: the file is missing or unreadable, needs pickle execution, has no
            ``codec_model`` state dict, or its keys/shapes do not match the published layout.
    """
    path = Path(path)
    if not path.is_file():
        what = "is not a file" if path.exists() else "no such file"
        raise _fail(path, what, "pass the path of the published codec .pth file")
    sd = _state_dict_of(_torch_load(path), path)
    cfg = infer_published_config(sd, path)
    _check_layout(sd, cfg, path)
    # The reference runs in float32 (it casts its codebooks with .float()); half-precision
    # copies of the file are widened here so that codes match it.
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if not v.is_floating_point():
            raise _fail(path, f"tensor {k} has dtype {v.dtype}, expected a floating point type")
        out[k] = v.float()
    return cfg, out


# --------------------------------------------------------------------------- writing (tests, tools)


def make_synthetic_published_state_dict(cfg: CodecConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict in the exact published layout (key names, order and shapes).

    Every tensor is drawn from a generator seeded with ``seed`` (the global RNG is left alone),
    with ``weight_g`` independent of ``||weight_v||`` and Snake/LayerNorm parameters perturbed so
    that a wrongly mapped key changes the output. Codebook tables of equal shape share one
    tensor, as layers 2 and 3 of the release share the LLaMA table.
    """
    with torch.device("meta"):
        layout = _build(cfg)
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    tables: dict[tuple[int, ...], torch.Tensor] = {}
    for key, ref in layout.state_dict().items():
        shape = tuple(ref.shape)
        name = key.rsplit(".", 1)[-1]
        if name == "inv_freq":
            sd[key] = rotary_inv_freq(2 * shape[0])
        elif key.endswith("codebook.weight"):
            if shape not in tables:
                tables[shape] = torch.randn(shape, generator=gen)
            sd[key] = tables[shape]
        elif name == "weight_v":
            fan_in = max(1, int(torch.tensor(shape[1:]).prod()))
            sd[key] = torch.randn(shape, generator=gen) / fan_in**0.5
        elif name == "weight_g":
            lo, hi = _G_RANGE
            sd[key] = lo + (hi - lo) * torch.rand(shape, generator=gen)
        elif name == "alpha":
            sd[key] = 0.5 + torch.rand(shape, generator=gen)
        elif key.endswith("norm.weight"):
            sd[key] = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        elif name == "weight":  # attention and cb_proj linears
            sd[key] = torch.randn(shape, generator=gen) / shape[-1] ** 0.5
        else:  # biases
            # large biases add one constant direction to the latent and collapse the codes
            sd[key] = _BIAS_STD * torch.randn(shape, generator=gen)
    return sd


def save_as_pth(sd: dict[str, torch.Tensor], path: str | Path) -> Path:
    """Write ``{"codec_model": sd}`` with ``torch.save`` (the published file's layout)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"codec_model": sd}, path)
    return path
