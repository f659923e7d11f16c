"""A differentiable stand-in for PESQ's disturbance (ITU-T P.862 / P.862.2), as a training loss.

PESQ compares the two signals' loudness per Bark band and 32 ms frame. What it punishes most is
energy the degraded signal *adds* (its asymmetry factor), exactly what an L1 on log-magnitudes
leaves in a codec's output: noise between pitch harmonics and in pauses. The L1 losses treat a
missing and an added decibel the same; this loss does not.

The stages follow the recommendation's perceptual model in simplified form (no time alignment,
which a codec does not need; no frequency or per-frame gain equalisation):

1. each signal is scaled to the same mean power (PESQ's level alignment);
2. 32 ms Hann frames, hop 16 ms, power summed into bands of equal Bark width;
3. Zwicker's loudness law per band, relative to the threshold in quiet (Terhardt's formula,
   the speech set to about 79 dB SPL as PESQ assumes);
4. the signed loudness difference with PESQ's dead zone (a quarter of the smaller loudness);
5. an asymmetric copy weighted by ``((P_deg + c) / (P_ref + c)) ** 1.2``, clipped to [0, 12] and
   zero below 3, so only clearly added energy counts;
6. per frame an L2 (symmetric) and an L1 (asymmetric) over bands, then an L6 over groups of 20
   frames and an L2 over the groups;
7. ``0.1 * d_sym + 0.0309 * d_asym``, the drop PESQ's raw score takes from 4.5.

It is a training objective, not a PESQ implementation: figures are still measured with the
reference ``pesq`` package.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def bark(f: np.ndarray) -> np.ndarray:
    """Traunmüller's Hz -> Bark."""
    f = np.asarray(f, dtype=np.float64)
    return 26.81 * f / (1960.0 + f) - 0.53


def threshold_in_quiet_db(f: np.ndarray) -> np.ndarray:
    """Terhardt's absolute threshold of hearing in dB SPL (frequencies in Hz, clipped to 50 Hz)."""
    k = np.maximum(np.asarray(f, dtype=np.float64), 50.0) / 1000.0
    return 3.64 * k**-0.8 - 6.5 * np.exp(-0.6 * (k - 3.3) ** 2) + 1e-3 * k**4


class PesqLikeLoss(nn.Module):
    """PESQ-style loudness disturbance between ``(B, 1, T)`` waveforms, a scalar (lower is better).

    Args:
        sample_rate: audio rate (16 kHz: P.862.2 wideband).
        n_fft: frame length (512 = 32 ms at 16 kHz, as PESQ).
        n_bands: Bark bands between ``f_min`` and ``f_max`` (PESQ wideband: 49).
        level_db: the SPL the signals' mean power is set to.
        group: frames per L6 group (PESQ: 20, about 320 ms).
        equalise: compensate a fixed filtering and short-term gain as PESQ does (off: every
            loudness difference counts).
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 512,
        n_bands: int = 49,
        f_min: float = 100.0,
        f_max: float = 7800.0,
        level_db: float = 79.0,
        group: int = 20,
        equalise: bool = True,
    ) -> None:
        super().__init__()
        self.n_fft, self.hop, self.group, self.equalise = n_fft, n_fft // 2, group, equalise
        freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
        z = bark(freqs)
        edges = np.linspace(bark(f_min), bark(f_max), n_bands + 1)
        band = np.searchsorted(edges, z, side="right") - 1
        members = np.zeros((n_bands, len(freqs)), dtype=np.float32)
        for b in range(n_bands):
            members[b, band == b] = 1.0
        # Bark bands narrower than one FFT bin (below about 300 Hz) hold no bin: give each the
        # nearest bin so every band keeps a loudness.
        for b in np.flatnonzero(members.sum(1) == 0):
            centre = 0.5 * (edges[b] + edges[b + 1])
            members[b, int(np.argmin(np.abs(z - centre)))] = 1.0
        centres = np.array([freqs[members[b] > 0].mean() for b in range(n_bands)])
        self.register_buffer("members", torch.from_numpy(members), persistent=False)
        # Band power is summed over its bins, so its threshold grows with the bin count.
        thr = 10.0 ** (threshold_in_quiet_db(centres) / 10.0) * members.sum(1)
        self.register_buffer("p0", torch.from_numpy(thr.astype(np.float32)), persistent=False)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.level = 10.0 ** (level_db / 10.0)

    def band_power(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` -> ``(B, frames, n_bands)`` band powers, the signal's mean power set to ``level_db``."""
        x = x / x.square().mean(dim=-1, keepdim=True).add(1e-10).sqrt()
        spec = torch.stft(x, self.n_fft, self.hop, window=self.window, center=False, return_complex=True)
        power = spec.real.square() + spec.imag.square()
        # A unit-power signal gives sum over bins of |X|^2 = sum(window^2) * n_fft / 2 per frame.
        scale = self.level / (self.window.square().sum() * self.n_fft / 2)
        return torch.matmul(self.members, power).transpose(1, 2) * scale

    def loudness(self, p: torch.Tensor) -> torch.Tensor:
        """Zwicker's law per band, zero below the threshold in quiet."""
        p0 = self.p0
        gamma = 0.23
        # 0.187: PESQ's loudness scaling at 16 kHz, so the result sits near PESQ's scale.
        return 0.187 * ((p0 / 0.5) ** gamma * ((0.5 + 0.5 * p / p0) ** gamma - 1.0)).clamp_min(0.0)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``pred``, ``target``: ``(B, 1, T)`` float32, ``T >= n_fft * 2``; returns the mean
        over the items whose target is not silent (a scalar)."""
        if self.training:
            # A random frame phase per call, so the decoder cannot fit the loss at fixed frame
            # positions while leaving what lies between them wrong.
            shift = int(torch.randint(0, self.hop, (1,)))
            pred, target = pred[..., shift:], target[..., shift:]
        pd = self.band_power(pred.squeeze(1))
        with torch.no_grad():
            pr = self.band_power(target.squeeze(1))
            if self.equalise:
                pr = pr * self._frequency_equaliser(pr, pd)
                gain = self._gain_equaliser(pr, pd)
        if self.equalise:
            pd = pd * gain
        ld, lr = self.loudness(pd), self.loudness(pr)
        diff = ld - lr
        dead = 0.25 * torch.minimum(ld, lr)
        dist = torch.sign(diff) * F.relu(diff.abs() - dead)
        c = self.p0
        ratio = ((pd + c) / (pr + c)).pow(1.2)
        asym = torch.where(ratio < 3.0, torch.zeros_like(ratio), ratio.clamp_max(12.0))
        n_bands = dist.shape[-1]
        d_sym = dist.square().mean(-1).add(1e-12).sqrt() * n_bands**0.5
        d_asym = (dist.abs() * asym).mean(-1) * n_bands
        per_item = 0.1 * self._aggregate(d_sym) + 0.0309 * self._aggregate(d_asym)
        # A (nearly) silent target has no loudness to compare with: leave it to the other losses.
        keep = (target.squeeze(1).square().mean(-1) > 1e-8).float()
        return (per_item * keep).sum() / keep.sum().clamp_min(1.0)

    def _frequency_equaliser(self, pr: torch.Tensor, pd: torch.Tensor) -> torch.Tensor:
        """Per-band factor ``(B, 1, n_bands)`` for the reference: PESQ does not count a fixed
        filtering (or a stationary added noise) as fully as a time-varying distortion, so the
        reference's mean band power over its loud frames is moved to the degraded one's."""
        loud = (pr.sum(-1, keepdim=True) > 1e-2 * pr.sum(-1, keepdim=True).mean(1, keepdim=True)).float()
        audible = (pr > 100.0 * self.p0).float() * loud
        mean_r = (pr * audible).sum(1, keepdim=True) / audible.sum(1, keepdim=True).clamp_min(1.0)
        mean_d = (pd * audible).sum(1, keepdim=True) / audible.sum(1, keepdim=True).clamp_min(1.0)
        c = 10.0 * self.p0
        return ((mean_d + c) / (mean_r + c)).clamp(0.01, 100.0)

    def _gain_equaliser(self, pr: torch.Tensor, pd: torch.Tensor) -> torch.Tensor:
        """Per-frame factor ``(B, F, 1)`` for the degraded signal (its short-term gain moved
        towards the reference's, clipped to [3e-4, 5] and smoothed over time)."""
        floor = 100.0 * self.p0
        er = (pr * (pr > floor)).sum(-1)
        ed = (pd * (pd > floor)).sum(-1)
        c = 50.0 * self.p0.sum()
        raw = ((er + c) / (ed + c)).clamp(3e-4, 5.0)
        # First-order smoothing y_t = 0.8 y_{t-1} + 0.2 x_t from y_{-1} = 1, as one matrix
        # product instead of a Python loop over frames.
        n = raw.shape[-1]
        t = torch.arange(n, device=raw.device, dtype=raw.dtype)
        lag = t[:, None] - t[None, :]
        kernel = torch.where(lag >= 0, 0.2 * 0.8 ** lag.clamp_min(0), torch.zeros_like(lag))
        smooth = raw @ kernel.T + 0.8 ** (t + 1)
        return smooth.unsqueeze(-1)

    def _aggregate(self, frames: torch.Tensor) -> torch.Tensor:
        """``(B, F)`` frame disturbances -> ``(B,)``: L6 over half-overlapping groups, L2 over groups."""
        n = frames.shape[-1]
        size = min(self.group, n)
        groups = frames.unfold(-1, size, max(size // 2, 1))
        return _power_mean(_power_mean(groups, 6.0), 2.0)


def _power_mean(x: torch.Tensor, p: float) -> torch.Tensor:
    """``mean(x ** p) ** (1 / p)`` over the last axis, scaled by the maximum so that neither
    small values underflow nor an all-zero row gets an infinite gradient."""
    top = x.detach().amax(-1, keepdim=True).clamp_min(1e-6)
    return top.squeeze(-1) * ((x / top).pow(p).mean(-1) + 1e-12).pow(1.0 / p)
