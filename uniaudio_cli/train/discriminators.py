"""Spectrogram discriminators, small enough to train on a CPU.

Each sub-discriminator looks at one STFT resolution, as a log-mel image (the paper's
"mel-scale discriminators") or as the full log-magnitude (``n_mels=None``), through a stack
of 2-D convolutions that stride along frequency, as in EnCodec's MS-STFT discriminator. Mel
inputs have 4-8x fewer frequency rows than linear ones, which is what keeps the
discriminator a fraction of a CPU training step.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from uniaudio_cli.train.losses import mel_filterbank

Resolution = tuple[int, int, int | None]  # (n_fft, hop, n_mels or None for linear bins)


class SpectrogramDiscriminator(nn.Module):
    """One resolution. ``(B, 1, T)`` -> ``(logits (B, 1, frames', bins'), feature maps)``.

    Args:
        n_fft: FFT / window size.
        hop: hop length.
        n_mels: mel bands, or ``None`` to use the ``n_fft // 2 + 1`` linear bins.
        channels: width of the conv stack.
        sample_rate: audio rate (for the mel filters).
    """

    def __init__(
        self, n_fft: int, hop: int, n_mels: int | None = 64, channels: int = 16, sample_rate: int = 16000
    ) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        if n_mels is not None:
            self.register_buffer("fb", mel_filterbank(sample_rate, n_fft, n_mels), persistent=False)
        else:
            self.fb = None
        c = channels
        # (time, frequency) kernels; strides shrink frequency, dilations widen the time context.
        self.convs = nn.ModuleList(
            [
                weight_norm(nn.Conv2d(1, c, (3, 9), padding=(1, 4))),
                weight_norm(nn.Conv2d(c, c, (3, 9), stride=(1, 2), dilation=(1, 1), padding=(1, 4))),
                weight_norm(nn.Conv2d(c, c, (3, 9), stride=(1, 2), dilation=(2, 1), padding=(2, 4))),
                weight_norm(nn.Conv2d(c, c, (3, 9), stride=(1, 2), dilation=(4, 1), padding=(4, 4))),
                weight_norm(nn.Conv2d(c, c, (3, 3), padding=(1, 1))),
            ]
        )
        self.post = weight_norm(nn.Conv2d(c, 1, (3, 3), padding=(1, 1)))

    def spectrogram(self, wav: torch.Tensor) -> torch.Tensor:
        """``(B, 1, T)`` -> log spectrogram ``(B, 1, frames, bins)`` (float32)."""
        spec = torch.stft(
            wav.squeeze(1).float(), self.n_fft, self.hop, window=self.window, center=True, return_complex=True
        )
        mag = torch.sqrt(spec.real.square() + spec.imag.square() + 1e-9)
        if self.fb is not None:
            mag = torch.matmul(self.fb, mag)
        return torch.log(mag.clamp_min(1e-5)).transpose(1, 2).unsqueeze(1)

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.spectrogram(wav)
        feats = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
            feats.append(x)
        return self.post(x), feats


class MultiResolutionDiscriminator(nn.Module):
    """Several :class:`SpectrogramDiscriminator` s.

    Args:
        resolutions: ``(n_fft, hop, n_mels | None)`` per sub-discriminator. The default is three
            mel resolutions (2048/512/128 bands, 1024/256/96, 512/128/64).
        channels: conv width.
        sample_rate: audio rate.
    """

    def __init__(
        self,
        resolutions: Sequence[Resolution] = ((2048, 512, 128), (1024, 256, 96), (512, 128, 64)),
        channels: int = 16,
        sample_rate: int = 16000,
    ) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(
            SpectrogramDiscriminator(n, h, m, channels, sample_rate) for n, h, m in resolutions
        )

    def forward(self, wav: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        """``wav (B, 1, T)`` -> (per-discriminator logits, per-discriminator feature maps)."""
        logits, feats = [], []
        for d in self.discriminators:
            lg, fm = d(wav)
            logits.append(lg)
            feats.append(fm)
        return logits, feats


class PeriodDiscriminator(nn.Module):
    """HiFi-GAN's period discriminator: the waveform folded into ``(T / p, p)`` columns, one
    column per phase of the period, through 2-D convolutions that stride along time only.

    Every column holds samples exactly ``p`` apart, so a signal that repeats with a period near a
    multiple of ``p`` is a smooth image and a noisy one is not: what spectrogram discriminators,
    which drop the phase, cannot see. ``(B, 1, T)`` -> ``(logits, feature maps)``.
    """

    def __init__(self, period: int, channels: int = 16) -> None:
        super().__init__()
        self.period = period
        widths = [1, channels, channels * 4, channels * 16, channels * 32]
        self.convs = nn.ModuleList(
            [
                weight_norm(nn.Conv2d(cin, cout, (5, 1), stride=(3, 1), padding=(2, 0)))
                for cin, cout in itertools.pairwise(widths)
            ]
            + [weight_norm(nn.Conv2d(widths[-1], widths[-1], (5, 1), padding=(2, 0)))]
        )
        self.post = weight_norm(nn.Conv2d(widths[-1], 1, (3, 1), padding=(1, 0)))

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b, c, t = wav.shape
        pad = -t % self.period
        x = F.pad(wav, (0, pad), mode="reflect") if pad else wav
        x = x.view(b, c, -1, self.period)
        feats = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.1)
            feats.append(x)
        return self.post(x), feats


class CombinedDiscriminator(MultiResolutionDiscriminator):
    """Spectrogram discriminators (:class:`MultiResolutionDiscriminator`) beside period
    discriminators (:class:`PeriodDiscriminator`, HiFi-GAN's periods 2, 3, 5, 7, 11 by default):
    the logits and feature maps of all of them, in that order."""

    def __init__(self, periods: Sequence[int] = (2, 3, 5, 7, 11), channels: int = 16, sample_rate: int = 16000):
        super().__init__(channels=channels, sample_rate=sample_rate)
        self.discriminators.extend(PeriodDiscriminator(p, channels) for p in periods)
