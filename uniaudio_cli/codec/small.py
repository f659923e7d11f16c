"""The small default backbone: frame-rate ConvNeXt encoder/decoder with an inverse-STFT head.

Everything heavy runs at the 33.3 Hz latent rate, and the decoder predicts an STFT (log
magnitude and phase) at 100 Hz that one ``istft`` turns into samples, as in Vocos. That keeps
a forward pass over a second of audio at a few tens of MFLOPs, so the codec trains and runs on
a laptop CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from uniaudio_cli.codec.config import CodecConfig


class ConvNeXtBlock(nn.Module):
    """Depthwise conv (k7) -> LayerNorm -> MLP with GELU, layer-scaled residual. ``(B, C, T)``."""

    def __init__(self, dim: int, intermediate: int, layer_scale: float = 1e-2) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, intermediate)
        self.pwconv2 = nn.Linear(intermediate, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).transpose(1, 2)
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).transpose(1, 2)


def _stack(dim: int, intermediate: int, n: int) -> nn.Sequential:
    return nn.Sequential(*(ConvNeXtBlock(dim, intermediate) for _ in range(n)))


class SmallEncoder(nn.Module):
    """Waveform ``(B, 1, T)`` -> latent ``(B, latent_dim, T / small_hop)``.

    Log-magnitude STFT at ``small_stft_hop`` (10 ms), one ConvNeXt block at that rate, a
    strided conv down to the latent rate, then the rest of the blocks.
    """

    def __init__(self, cfg: CodecConfig) -> None:
        super().__init__()
        self.n_fft = cfg.small_n_fft
        self.hop = cfg.small_stft_hop
        self.down = cfg.small_hop // cfg.small_stft_hop
        if self.down * self.hop != cfg.small_hop:
            raise ValueError("small_hop must be a multiple of small_stft_hop")
        bins = self.n_fft // 2 + 1
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        self.embed = nn.Conv1d(bins, cfg.small_dim, kernel_size=7, padding=3)
        self.fine = _stack(cfg.small_dim, cfg.small_intermediate, 1)
        self.downsample = nn.Conv1d(cfg.small_dim, cfg.small_dim, kernel_size=self.down, stride=self.down)
        self.norm = nn.LayerNorm(cfg.small_dim, eps=1e-6)
        self.blocks = _stack(cfg.small_dim, cfg.small_intermediate, max(cfg.small_encoder_layers - 1, 0))
        self.out = nn.Conv1d(cfg.small_dim, cfg.latent_dim, kernel_size=1)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        x = wav.squeeze(1)
        spec = torch.stft(x, self.n_fft, self.hop, window=self.window, center=True, return_complex=True)
        frames = x.shape[-1] // self.hop
        feats = torch.log(spec.abs()[..., :frames].clamp_min(1e-5))
        h = self.fine(self.embed(feats))
        h = self.downsample(h)
        h = self.norm(h.transpose(1, 2)).transpose(1, 2)
        return self.out(self.blocks(h))


class ISTFTHead(nn.Module):
    """``(B, C, frames)`` -> waveform ``(B, 1, frames * hop)`` via predicted log-magnitude and phase."""

    def __init__(self, dim: int, n_fft: int, hop: int) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.proj = nn.Linear(dim, n_fft + 2)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = self.proj(h.transpose(1, 2)).transpose(1, 2)
        log_mag, phase = x.chunk(2, dim=1)
        # Clamp so an untrained or diverging model cannot overflow exp().
        mag = torch.exp(log_mag.clamp(max=8.0))
        spec = torch.polar(mag, phase)
        frames = h.shape[-1]
        wav = torch.istft(spec, self.n_fft, self.hop, window=self.window, center=True, length=frames * self.hop)
        return wav.unsqueeze(1)


class SmallDecoder(nn.Module):
    """Latent ``(B, latent_dim, T')`` -> waveform ``(B, 1, T' * small_hop)``."""

    def __init__(self, cfg: CodecConfig) -> None:
        super().__init__()
        up = cfg.small_hop // cfg.small_stft_hop
        self.embed = nn.Conv1d(cfg.latent_dim, cfg.small_dim, kernel_size=7, padding=3)
        self.norm = nn.LayerNorm(cfg.small_dim, eps=1e-6)
        self.blocks = _stack(cfg.small_dim, cfg.small_intermediate, max(cfg.small_decoder_layers - 1, 0))
        self.upsample = nn.ConvTranspose1d(cfg.small_dim, cfg.small_dim, kernel_size=up, stride=up)
        self.fine = _stack(cfg.small_dim, cfg.small_intermediate, cfg.small_fine_layers)
        self.final_norm = nn.LayerNorm(cfg.small_dim, eps=1e-6)
        self.head = ISTFTHead(cfg.small_dim, cfg.small_n_fft, cfg.small_stft_hop)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.embed(z)
        h = self.blocks(self.norm(h.transpose(1, 2)).transpose(1, 2))
        h = self.fine(self.upsample(h))
        h = self.final_norm(h.transpose(1, 2)).transpose(1, 2)
        return self.head(h)
