"""The UniAudio 1.5 waveform encoder and decoder (the ``published`` backbone).

Module and parameter names follow the published LLM-Codec checkpoint so that its state dict
(under the prefixes ``encoder.`` and ``decoder.``) loads as is: weight-normalised convolutions
keep the old ``weight_g`` / ``weight_v`` pair, the windowed attention keeps ``norm``,
``to_qkv``, ``to_out`` and ``rel_pos.inv_freq``.

Architecture (``hop = prod(encoder_rates)`` samples per latent frame, 480 for the release):

* encoder: conv k7 -> down blocks (residual units, Snake, strided conv; channels double) ->
  windowed attention -> depthwise conv k7. ``(B, 1, T)`` -> ``(B, encoder_dim * 2**n, T / hop)``.
* decoder: (depthwise k7 +) pointwise conv to ``decoder_dim`` -> windowed attention -> up blocks
  (Snake, transposed conv, NoiseBlock, residual units; channels halve) -> Snake -> conv k7 ->
  tanh. ``(B, latent_dim, T')`` -> ``(B, 1, T' * hop)``.

Noise: the decoder's NoiseBlocks add Gaussian noise at inference too, as the reference does.
Use :func:`set_noise` to switch it off or to draw it from a seeded ``torch.Generator``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from uniaudio_cli.codec.config import CodecConfig

__all__ = [
    "LocalMHA",
    "NoiseBlock",
    "PublishedDecoder",
    "PublishedEncoder",
    "Snake1d",
    "WNConv1d",
    "WNConvTranspose1d",
    "fuse_weight_norm",
    "noise_disabled",
    "rotary_inv_freq",
    "set_noise",
    "unfuse_weight_norm",
]


# --------------------------------------------------------------------------- weight norm


class _WeightNorm:
    """Mixin replacing a conv's ``weight`` by ``weight = g * v / ||v||`` (norm over all dims but 0).

    Keeps the old ``torch.nn.utils.weight_norm`` parameter names (``weight_g``, ``weight_v``)
    that the published checkpoint uses; the newer parametrisations API would rename them.
    Dim 0 is used for transposed convolutions too (``g``: ``(C_in, 1, 1)``), as the old API did.
    """

    weight_g: nn.Parameter
    weight_v: nn.Parameter
    _fused_weight: torch.Tensor | None

    def _init_weight_norm(self) -> None:
        module: nn.Module = self  # type: ignore[assignment]
        weight = module._parameters.pop("weight").detach()
        dims = tuple(range(1, weight.dim()))
        module.weight_g = nn.Parameter(weight.norm(dim=dims, keepdim=True))
        module.weight_v = nn.Parameter(weight.clone())
        # Cache for inference (see fuse_weight_norm); a buffer so that .to() moves it, not
        # persistent so that state dict keys stay those of the checkpoint.
        module.register_buffer("_fused_weight", None, persistent=False)

    def norm_weight(self) -> torch.Tensor:
        """The effective convolution weight."""
        if self._fused_weight is not None:
            return self._fused_weight
        # The fused kernel the old weight_norm used, so results match it bit for bit.
        return torch._weight_norm(self.weight_v, self.weight_g, 0)

    def fuse(self) -> None:
        """Compute the weight once; later changes to ``weight_g``/``weight_v`` are ignored until
        :meth:`unfuse` (or a ``load_state_dict``, which unfuses)."""
        with torch.no_grad():
            self._fused_weight = torch._weight_norm(self.weight_v, self.weight_g, 0).detach()

    def unfuse(self) -> None:
        self._fused_weight = None

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        self._fused_weight = None  # new weights make any cached product stale
        super()._load_from_state_dict(*args, **kwargs)  # type: ignore[misc]


class WNConv1d(_WeightNorm, nn.Conv1d):
    """Weight-normalised ``Conv1d``: parameters ``weight_g``, ``weight_v`` and ``bias``."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._init_weight_norm()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, T)`` -> ``(B, C_out, T_out)``."""
        return self._conv_forward(x, self.norm_weight(), self.bias)


class WNConvTranspose1d(_WeightNorm, nn.ConvTranspose1d):
    """Weight-normalised ``ConvTranspose1d``: parameters ``weight_g``, ``weight_v`` and ``bias``."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._init_weight_norm()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, T)`` -> ``(B, C_out, (T - 1) * stride - 2 * padding + kernel + output_padding)``."""
        return F.conv_transpose1d(
            x,
            self.norm_weight(),
            self.bias,
            self.stride,
            self.padding,
            self.output_padding,
            self.groups,
            self.dilation,
        )


def fuse_weight_norm(module: nn.Module) -> nn.Module:
    """Precompute every weight-normalised weight under ``module`` (inference speed-up).

    State dict keys do not change. Call it after loading weights and before inference; any
    later optimiser step is ignored until :func:`unfuse_weight_norm` is called.
    """
    for m in module.modules():
        if isinstance(m, _WeightNorm):
            m.fuse()
    return module


def unfuse_weight_norm(module: nn.Module) -> nn.Module:
    """Undo :func:`fuse_weight_norm` (weights are recomputed from ``g``/``v`` on every call)."""
    for m in module.modules():
        if isinstance(m, _WeightNorm):
            m.unfuse()
    return module


# --------------------------------------------------------------------------- layers


class Snake1d(nn.Module):
    """Snake activation ``x + sin(alpha x)^2 / (alpha + 1e-9)`` with one ``alpha`` per channel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T)`` -> ``(B, C, T)``."""
        # reciprocal-then-multiply (not a division) to round exactly as the reference does
        return x + (self.alpha + 1e-9).reciprocal() * torch.sin(self.alpha * x).pow(2)


class ResidualUnit(nn.Module):
    """Snake -> dilated conv k7 -> Snake -> conv k1, added to the input. ``(B, C, T)`` -> same."""

    def __init__(self, dim: int, dilation: int, kernel: int = 7, groups: int = 1) -> None:
        super().__init__()
        pad = (kernel - 1) * dilation // 2
        self.block = nn.Sequential(
            Snake1d(dim),
            WNConv1d(dim, dim, kernel_size=kernel, dilation=dilation, padding=pad, groups=groups),
            Snake1d(dim),
            WNConv1d(dim, dim, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        # With odd kernels the output is as long as the input; trim symmetrically otherwise.
        trim = (x.shape[-1] - y.shape[-1]) // 2
        if trim > 0:
            x = x[..., trim:-trim]
        return x + y


class EncoderBlock(nn.Module):
    """Three residual units at ``dim // 2`` channels, Snake, then a strided conv to ``dim``.

    ``(B, dim // 2, T)`` -> ``(B, dim, T / stride)``.
    """

    def __init__(self, dim: int, stride: int, groups: int = 1) -> None:
        super().__init__()
        half = dim // 2
        self.block = nn.Sequential(
            ResidualUnit(half, dilation=1, groups=groups),
            ResidualUnit(half, dilation=3, groups=groups),
            ResidualUnit(half, dilation=9, groups=groups),
            Snake1d(half),
            WNConv1d(half, dim, kernel_size=2 * stride, stride=stride, padding=math.ceil(stride / 2)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class NoiseBlock(nn.Module):
    """Adds ``n * W x`` with ``n ~ N(0, 1)`` of shape ``(B, 1, T)`` shared across channels.

    Attributes:
        enabled: when False the block is the identity (deterministic decoding).
        generator: optional ``torch.Generator`` the noise is drawn from (reproducible noise);
            None draws from the global RNG, like the reference.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = WNConv1d(dim, dim, kernel_size=1, bias=False)
        self.enabled = True
        self.generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T)`` -> ``(B, C, T)``."""
        if not self.enabled:
            return x
        b, _, t = x.shape
        # Drawn before the projection, in the same order as the reference, so that seeding the
        # global RNG identically reproduces its noise.
        noise = torch.randn((b, 1, t), device=x.device, dtype=x.dtype, generator=self.generator)
        return x + noise * self.linear(x)


class DecoderBlock(nn.Module):
    """Snake -> transposed conv (up by ``stride``) -> [NoiseBlock] -> three residual units.

    ``(B, input_dim, T)`` -> ``(B, output_dim, T * stride)``.
    """

    def __init__(self, input_dim: int, output_dim: int, stride: int, noise: bool, groups: int = 1) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            Snake1d(input_dim),
            WNConvTranspose1d(
                input_dim,
                output_dim,
                kernel_size=2 * stride,
                stride=stride,
                padding=math.ceil(stride / 2),
                output_padding=stride % 2,
            ),
        ]
        if noise:
            layers.append(NoiseBlock(output_dim))
        layers += [ResidualUnit(output_dim, dilation=d, groups=groups) for d in (1, 3, 9)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


def rotary_inv_freq(dim_head: int) -> torch.Tensor:
    """The ``dim_head / 2`` rotary frequencies ``10000 ** (-2i / dim_head)``."""
    return 1.0 / (10000 ** (torch.arange(0, dim_head, 2).float() / dim_head))


class RotaryEmbedding(nn.Module):
    """Rotary position angles for positions ``0..n-1`` of each window.

    ``inv_freq`` is a persistent buffer because the published checkpoint stores it.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("inv_freq", rotary_inv_freq(dim))

    def forward(self, n: int) -> torch.Tensor:
        """Angles ``(n, dim)``: the ``dim / 2`` frequencies, repeated for both halves."""
        t = torch.arange(n, device=self.inv_freq.device).type_as(self.inv_freq)
        freqs = torch.outer(t, self.inv_freq)
        return torch.cat((freqs, freqs), dim=-1)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``[x1, x2] -> [-x2, x1]`` over the last dim (halves, not interleaved pairs)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class LocalMHA(nn.Module):
    """Pre-norm multi-head self-attention inside non-overlapping windows, plus residual.

    The sequence is cut into ``T / window_size`` windows; each frame attends to every frame of
    its own window only (no look-back/-ahead, no causal mask). Queries and keys are rotated by
    their position within the window. Head size 64, so ``dim`` must be a multiple of 64.

    ``(B, dim, T)`` -> ``(B, dim, T)``, ``T`` a multiple of ``window_size``.
    """

    def __init__(self, dim: int, window_size: int, dim_head: int = 64) -> None:
        super().__init__()
        if dim < dim_head or dim % dim_head:
            raise ValueError(f"attention width {dim} must be a positive multiple of the head size {dim_head}")
        self.heads = dim // dim_head
        self.dim_head = dim_head
        self.window_size = window_size
        self.norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, dim * 3, bias=False)
        self.rel_pos = RotaryEmbedding(dim_head)
        self.to_out = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t = x.shape
        if t % self.window_size:
            raise ValueError(
                f"LocalMHA: length {t} is not a multiple of the window size {self.window_size}; "
                "pad the input (encoder: to a multiple of cfg.pad_multiple samples)"
            )
        w, n = t // self.window_size, self.window_size
        h = self.norm(x.transpose(1, 2))
        q, k, v = self.to_qkv(h).chunk(3, dim=-1)

        def split(z: torch.Tensor) -> torch.Tensor:  # (B, T, H*D) -> (B, H, W, N, D)
            return z.reshape(b, w, n, self.heads, self.dim_head).permute(0, 3, 1, 2, 4)

        q, k, v = split(q), split(k), split(v)
        angles = self.rel_pos(n)
        cos, sin = angles.cos(), angles.sin()
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        # Explicit softmax(q k^T / sqrt(d)) v rather than a fused kernel: keeps the float
        # rounding of the reference, which matters for near-tie code choices downstream.
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.dim_head))
        out = att.softmax(dim=-1) @ v
        out = out.permute(0, 2, 3, 1, 4).reshape(b, t, c)
        return self.to_out(out).transpose(1, 2) + x


# --------------------------------------------------------------------------- encoder / decoder


def _window(cfg: CodecConfig) -> int | None:
    return cfg.attn_window_size or None


class PublishedEncoder(nn.Module):
    """Waveform ``(B, 1, T)``, ``T`` a multiple of ``cfg.pad_multiple`` -> latent ``(B, D, T / hop)``.

    ``D = encoder_dim * 2 ** len(encoder_rates)`` must equal ``cfg.latent_dim``.
    """

    def __init__(self, cfg: CodecConfig) -> None:
        super().__init__()
        dim = cfg.encoder_dim
        out_dim = dim * 2 ** len(cfg.encoder_rates)
        if out_dim != cfg.latent_dim:
            raise ValueError(
                f"published encoder: encoder_dim {dim} * 2**{len(cfg.encoder_rates)} = {out_dim} "
                f"differs from latent_dim {cfg.latent_dim}"
            )
        layers: list[nn.Module] = [WNConv1d(1, dim, kernel_size=7, padding=3)]
        for stride in cfg.encoder_rates:
            dim *= 2
            layers.append(EncoderBlock(dim, stride, groups=dim // 2 if cfg.depthwise else 1))
        window = _window(cfg)
        if window is not None:
            layers.append(LocalMHA(dim, window))
        layers.append(WNConv1d(dim, dim, kernel_size=7, padding=3, groups=dim if cfg.depthwise else 1))
        self.block = nn.Sequential(*layers)
        self.hop_length = math.prod(cfg.encoder_rates)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return self.block(wav)


class PublishedDecoder(nn.Module):
    """Latent ``(B, latent_dim, T')`` -> waveform ``(B, 1, T' * hop)`` in ``[-1, 1]``.

    ``T'`` must be a multiple of ``cfg.attn_window_size`` (the windowed attention needs whole
    windows); codes from the encoder always are.
    """

    def __init__(self, cfg: CodecConfig) -> None:
        super().__init__()
        d_in, channels = cfg.latent_dim, cfg.decoder_dim
        layers: list[nn.Module]
        if cfg.depthwise:
            layers = [
                WNConv1d(d_in, d_in, kernel_size=7, padding=3, groups=d_in),
                WNConv1d(d_in, channels, kernel_size=1),
            ]
        else:
            layers = [WNConv1d(d_in, channels, kernel_size=7, padding=3)]
        window = _window(cfg)
        if window is not None:
            layers.append(LocalMHA(channels, window))
        out_dim = channels
        for i, stride in enumerate(cfg.decoder_rates):
            in_dim, out_dim = channels // 2**i, channels // 2 ** (i + 1)
            layers.append(DecoderBlock(in_dim, out_dim, stride, cfg.noise, groups=out_dim if cfg.depthwise else 1))
        layers += [Snake1d(out_dim), WNConv1d(out_dim, 1, kernel_size=7, padding=3), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        self.hop_length = math.prod(cfg.decoder_rates)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model(z)


# --------------------------------------------------------------------------- noise control


def set_noise(module: nn.Module, enabled: bool = True, generator: torch.Generator | None = None) -> None:
    """Switch every NoiseBlock under ``module`` on/off and set the generator it draws from."""
    for m in module.modules():
        if isinstance(m, NoiseBlock):
            m.enabled = enabled
            m.generator = generator


@contextmanager
def noise_disabled(module: nn.Module) -> Iterator[nn.Module]:
    """Context in which the NoiseBlocks under ``module`` are the identity; restores them after."""
    blocks = [m for m in module.modules() if isinstance(m, NoiseBlock)]
    saved = [m.enabled for m in blocks]
    for m in blocks:
        m.enabled = False
    try:
        yield module
    finally:
        for m, e in zip(blocks, saved, strict=True):
            m.enabled = e
