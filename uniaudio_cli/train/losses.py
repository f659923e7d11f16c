"""Training losses of the LLM-Codec.

Reconstruction: time-domain L1, multi-resolution STFT (log-magnitude L1 + spectral
convergence) and multi-resolution log-mel L1 as in DAC, all from one set of STFTs. Adversarial:
hinge losses and feature matching. Codebook-specific: the layer-1 *semantic* loss and the
layer-1+2 *consistency* loss (our offline replacement for the paper's Whisper loss).

All functions take float32 tensors; call them outside autocast.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from uniaudio_cli import features

_LOG_EPS = 1e-5
# Windows that resolve pitch harmonics at 16 kHz (bins of at most 31 Hz): where the low-band and
# excess terms are measured.
_HARMONIC_MIN_WINDOW = 512


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> torch.Tensor:
    """:func:`uniaudio_cli.features.mel_filterbank` as a float32 tensor ``(n_mels, n_fft // 2 + 1)``."""
    return torch.from_numpy(np.ascontiguousarray(features.mel_filterbank(sample_rate, n_fft, n_mels), dtype=np.float32))


def l1_time(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute sample error of ``(B, 1, T)`` waveforms."""
    return F.l1_loss(pred, target)


@dataclass
class SpectralLossValues:
    """Scalar losses of :class:`SpectralLoss` (each averaged over its resolutions)."""

    stft_mag: torch.Tensor
    stft_sc: torch.Tensor
    mel: torch.Tensor
    low_mag: torch.Tensor
    excess: torch.Tensor


class SpectralLoss(nn.Module):
    """Multi-resolution STFT and mel losses sharing one STFT per resolution.

    For every window length ``w`` (hop ``w // 4``, Hann window) the magnitude is computed once
    for prediction and target; it feeds a log-mel L1 with ``n_mels`` bands (log10, as DAC) and,
    for ``w >= stft_min_window``, a natural-log magnitude L1 plus spectral convergence
    ``||S - S_hat||_F / ||S||_F`` (Parallel WaveGAN).

    ``excess`` is the log-magnitude *excess* alone, ``relu(log S_hat - log S)`` averaged over the
    windows that resolve harmonics (``w >= 512``): energy the prediction adds where the target
    has less. The L1 weighs a missing and an added decibel alike, but PESQ's disturbance weighs
    added energy more, and this decoder fills the gaps between harmonics with noise: minimising
    the training loss plus this term on a clip's latent through the frozen decoder raised PESQ-WB
    more than the loss alone (``docs/codec-history.md``, 2026-12-07).

    With ``low_band_hz`` it also returns ``low_mag``: the log-magnitude L1 over the bins below
    that frequency, for the windows that resolve pitch harmonics there (``w >= 512``, bins of at
    most 31 Hz at 16 kHz). The codec's measured PESQ loss sits in the harmonic fine structure of
    the lowest kilohertz, which the all-bin average weighs by its eighth of the bins only.

    Args:
        sample_rate: audio rate.
        windows: window lengths (default DAC's seven, 32 to 2048 samples).
        n_mels: mel bands per window (same length as ``windows``).
        stft_min_window: smallest window that also enters the STFT loss.
        low_band_hz: upper edge of the low band of ``low_mag``; ``None`` leaves it out (zero).
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        windows: Sequence[int] = (32, 64, 128, 256, 512, 1024, 2048),
        n_mels: Sequence[int] = (5, 10, 20, 40, 80, 160, 320),
        stft_min_window: int = 128,
        low_band_hz: float | None = None,
    ) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.low_band_hz = low_band_hz
        if len(windows) != len(n_mels):
            raise ValueError("windows and n_mels need one entry per resolution")
        self.windows = [int(w) for w in windows]
        self.stft_min_window = stft_min_window
        for w, m in zip(self.windows, n_mels, strict=True):
            self.register_buffer(f"window_{w}", torch.hann_window(w), persistent=False)
            self.register_buffer(f"mel_{w}", mel_filterbank(sample_rate, w, int(m)), persistent=False)

    def _mag(self, x: torch.Tensor, w: int) -> torch.Tensor:
        spec = torch.stft(x, w, w // 4, window=getattr(self, f"window_{w}"), center=True, return_complex=True)
        # sqrt(re^2 + im^2 + eps) rather than abs(): abs() has an infinite gradient at zero,
        # which digital silence (zero padding) hits.
        return torch.sqrt(spec.real.square() + spec.imag.square() + 1e-9)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> SpectralLossValues:
        """``pred``, ``target``: ``(B, 1, T)`` float32."""
        x = pred.squeeze(1)
        y = target.squeeze(1)
        mag_l1, sc, mel, low, excess = [], [], [], [], []
        for w in self.windows:
            px = self._mag(x, w)
            with torch.no_grad():
                py = self._mag(y, w)
            fb = getattr(self, f"mel_{w}")
            mx = torch.log10(torch.matmul(fb, px).clamp_min(_LOG_EPS))
            my = torch.log10(torch.matmul(fb, py).clamp_min(_LOG_EPS))
            mel.append(F.l1_loss(mx, my))
            with_low = self.low_band_hz is not None and w >= _HARMONIC_MIN_WINDOW
            if w >= self.stft_min_window or with_low:
                lx, ly = torch.log(px.clamp_min(_LOG_EPS)), torch.log(py.clamp_min(_LOG_EPS))
            if w >= self.stft_min_window:
                mag_l1.append(F.l1_loss(lx, ly))
                if w >= _HARMONIC_MIN_WINDOW:
                    excess.append(F.relu(lx - ly).mean())
                sc.append(torch.linalg.vector_norm(py - px) / torch.linalg.vector_norm(py).clamp_min(1e-6))
            if with_low:
                n_bins = int(self.low_band_hz * w / self.sample_rate) + 1
                low.append(F.l1_loss(lx[:, :n_bins], ly[:, :n_bins]))
        zero = x.new_zeros(())
        return SpectralLossValues(
            stft_mag=torch.stack(mag_l1).mean() if mag_l1 else zero,
            stft_sc=torch.stack(sc).mean() if sc else zero,
            mel=torch.stack(mel).mean(),
            low_mag=torch.stack(low).mean() if low else zero,
            excess=torch.stack(excess).mean() if excess else zero,
        )


def mel_loss(pred: torch.Tensor, target: torch.Tensor, spectral: SpectralLoss) -> torch.Tensor:
    """Only the multi-resolution log-mel L1 (used as the validation metric)."""
    return spectral(pred, target).mel


class FrameLogMel(nn.Module):
    """Log-mel spectrogram at the codec's latent frame rate: ``(B, 1, T)`` -> ``(B, n_mels, T // hop)``.

    Frame ``t`` is centred on latent frame ``t`` (samples ``[t*hop, (t+1)*hop)``): the signal is
    padded by ``(n_fft - hop) / 2`` on each side and framed without centring, so ``T`` a
    multiple of ``hop`` gives exactly ``T // hop`` frames.
    """

    def __init__(self, sample_rate: int = 16000, hop: int = 480, n_fft: int = 1024, n_mels: int = 80) -> None:
        super().__init__()
        if n_fft < hop:
            raise ValueError("n_fft must be at least hop")
        self.hop, self.n_fft = hop, n_fft
        self.pad = ((n_fft - hop) // 2, n_fft - hop - (n_fft - hop) // 2)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer("fb", mel_filterbank(sample_rate, n_fft, n_mels), persistent=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        x = F.pad(wav.squeeze(1), self.pad, mode="constant")
        spec = torch.stft(x, self.n_fft, self.hop, window=self.window, center=False, return_complex=True)
        return torch.log(torch.matmul(self.fb, spec.abs()).clamp_min(_LOG_EPS))


class ConsistencyHead(nn.Module):
    """Linear map from the coarse quantized latent to the frame log-mel: ``(B, D, T) -> (B, n_mels, T)``.

    An auxiliary training module (not part of the codec checkpoint).
    """

    def __init__(self, latent_dim: int, n_mels: int = 80) -> None:
        super().__init__()
        self.proj = nn.Conv1d(latent_dim, n_mels, kernel_size=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.proj(z)


def consistency_loss(coarse: torch.Tensor, target_logmel: torch.Tensor, head: ConsistencyHead) -> torch.Tensor:
    """Layer-2 consistency loss, our stand-in for the paper's Whisper loss.

    The paper pulls layer 2 towards frozen Whisper-encoder features, which stabilised training
    and gave the coarse layers the content of the signal. No Whisper model is available
    offline, but Whisper's encoder features are a function of the 80-band log-mel spectrogram,
    so we ask the same of the coarse layers directly: a linear head must predict the log-mel at
    the latent frame rate from layers 1+2. That makes layers 1-2 carry the spectral envelope
    (the content-bearing part layer 2 had in the paper) and leaves fine detail to layer 3.

    Args:
        coarse: ``quant.layers[0] + quant.layers[1]``, ``(B, D, T')``.
        target_logmel: :class:`FrameLogMel` of the input, ``(B, 80, T')``.
        head: the trainable linear head.
    """
    pred = head(coarse)
    frames = min(pred.shape[-1], target_logmel.shape[-1])
    return F.l1_loss(pred[..., :frames], target_logmel[..., :frames])


def semantic_loss(pooled: torch.Tensor, text_emb: torch.Tensor, cb_proj: nn.Module) -> torch.Tensor:
    """Layer-1 semantic loss: ``1 - cos`` between the clip's pooled latent and its text.

    The text embedding (the mean of the frozen LLM input embeddings of the clip's target-text
    tokens) lives in the codebook space, so it goes through layer 1's learned ``cb_proj`` into
    the latent space, where it is compared with the time-mean of layer 1's pre-quantization
    residual. Gradients reach both the encoder and ``cb_proj``.

    Args:
        pooled: ``quant.pooled[0]``, ``(B, D, T1)``.
        text_emb: ``(B, E)``.
        cb_proj: ``quantizers[0].cb_proj`` (``Linear(E -> D)``).
    """
    target = cb_proj(text_emb)
    return (1.0 - F.cosine_similarity(pooled.mean(dim=-1), target, dim=-1)).mean()


def hinge_d_loss(real_logits: Sequence[torch.Tensor], fake_logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """Discriminator hinge loss, summed over sub-discriminators."""
    loss = real_logits[0].new_zeros(())
    for r, f in zip(real_logits, fake_logits, strict=True):
        loss = loss + F.relu(1.0 - r).mean() + F.relu(1.0 + f).mean()
    return loss


def hinge_g_loss(fake_logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """Generator hinge loss, summed over sub-discriminators."""
    loss = fake_logits[0].new_zeros(())
    for f in fake_logits:
        loss = loss + F.relu(1.0 - f).mean()
    return loss


def feature_matching_loss(
    real_feats: Sequence[Sequence[torch.Tensor]], fake_feats: Sequence[Sequence[torch.Tensor]]
) -> torch.Tensor:
    """L1 between discriminator feature maps of fake and (detached) real audio, averaged over
    the layers of each sub-discriminator and summed over sub-discriminators."""
    loss = fake_feats[0][0].new_zeros(())
    for rs, fs in zip(real_feats, fake_feats, strict=True):
        per = [F.l1_loss(f, r.detach()) for r, f in zip(rs, fs, strict=True)]
        loss = loss + torch.stack(per).mean()
    return loss


class PhaseLoss(nn.Module):
    """Anti-wrapped phase losses (APNet's instantaneous phase, group delay and instantaneous
    frequency) between the STFTs of ``(B, 1, T)`` waveforms, weighted by the target's magnitude.

    Spectrogram losses see no phase, and the decoder's head predicts one per frame: left free, the
    frames' phases do not line up and their overlap-add loses the periodicity of voiced speech.
    Each term is ``1 - cos`` of a phase difference (so wrapping costs nothing), computed from
    unit complex numbers rather than ``angle()``, whose gradient is unbounded near zero magnitude.
    Bins are weighted by the target's magnitude, so the harmonics count and the noise floor,
    whose phase nothing can predict, does not.
    """

    def __init__(self, n_fft: int = 640, hop: int = 160) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def _unit(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        spec = torch.stft(x.squeeze(1), self.n_fft, self.hop, window=self.window, center=True, return_complex=True)
        mag = torch.sqrt(spec.real.square() + spec.imag.square() + 1e-9)
        return spec / mag, mag

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean of the three terms, a scalar in [0, 2]."""
        up, _ = self._unit(pred)
        with torch.no_grad():
            ur, mag = self._unit(target)
            w = mag / mag.sum(dim=(1, 2), keepdim=True).clamp_min(1e-9)

        def dist(a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
            # 1 - cos(arg a - arg b) for unit a, b.
            return ((1.0 - (a * b.conj()).real) * weight).sum(dim=(1, 2)).mean()

        ip = dist(up, ur, w)
        # Instantaneous frequency: the phase advance from frame to frame.
        iff = dist(up[..., 1:] * up[..., :-1].conj(), ur[..., 1:] * ur[..., :-1].conj(), w[..., 1:])
        # Group delay: the phase difference between neighbouring bins.
        gd = dist(up[:, 1:] * up[:, :-1].conj(), ur[:, 1:] * ur[:, :-1].conj(), w[:, 1:])
        return (ip + iff + gd) / 3.0


class IntelligibilityLoss(nn.Module):
    """``1 -`` a differentiable short-time objective intelligibility (STOI, Taal et al. 2011)
    between ``(B, 1, T)`` waveforms, computed at their own sample rate (STOI resamples to 10 kHz;
    its bands all lie below 5 kHz, so nothing is lost at 16 kHz).

    The spectrogram losses weigh every mel band and frame alike in log magnitude; STOI, and the
    listeners it models, hear how each one-third-octave band's envelope (150 Hz to 4.3 kHz) follows
    the target's over 384 ms, which is where the held-out digits lose intelligibility (the 1-4 kHz
    formants). As in STOI the prediction's segment is scaled to the target's energy and clipped at
    15 dB above it, so one loud error cannot dominate; segments more than 40 dB below the loudest
    target frame (silence, which STOI drops) are left out. Frames are 25 ms, hop 12.5 ms.
    """

    def __init__(
        self, sample_rate: int, bands: int = 15, low_hz: float = 150.0, segment: int = 30, clip_db: float = 15.0
    ) -> None:
        super().__init__()
        self.win, self.hop, self.n_fft = int(0.025 * sample_rate), int(0.0125 * sample_rate), 512
        self.segment, self.clip = segment, 1.0 + 10 ** (clip_db / 20)
        freqs = torch.linspace(0, sample_rate / 2, self.n_fft // 2 + 1)
        centres = low_hz * 2 ** (torch.arange(bands) / 3)
        lo, hi = centres * 2 ** (-1 / 6), centres * 2 ** (1 / 6)
        bank = ((freqs[None] >= lo[:, None]) & (freqs[None] < hi[:, None])).float()
        self.register_buffer("bank", bank, persistent=False)  # (bands, bins)
        self.register_buffer("window", torch.hann_window(self.win), persistent=False)

    def _bands(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, T)`` -> band envelopes ``(B, bands, frames)``."""
        spec = torch.stft(x.squeeze(1), self.n_fft, self.hop, self.win, self.window, center=True, return_complex=True)
        power = spec.real.square() + spec.imag.square()
        return torch.sqrt(torch.einsum("kf,bft->bkt", self.bank, power) + 1e-10)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """A scalar in [0, 2]: 0 when every band envelope follows the target's exactly."""
        y = self._bands(pred.float())
        # A clip shorter than a segment is one segment.
        n = min(self.segment, y.shape[-1])
        y = y.unfold(-1, n, 1)  # (B, bands, segments, N)
        with torch.no_grad():
            x = self._bands(target.float()).unfold(-1, n, 1)
            energy = x.square().sum(dim=(1, 3))  # (B, segments)
            keep = energy > energy.amax(dim=1, keepdim=True) * 1e-4
        scale = x.norm(dim=-1, keepdim=True) / y.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        y = torch.minimum(y * scale, x * self.clip)
        xc, yc = x - x.mean(-1, keepdim=True), y - y.mean(-1, keepdim=True)
        corr = (xc * yc).sum(-1) / (xc.norm(dim=-1) * yc.norm(dim=-1)).clamp_min(1e-8)  # (B, bands, segments)
        per_segment = corr.mean(1)
        return 1.0 - (per_segment * keep).sum() / keep.sum().clamp_min(1)


class PerceptualQualityLoss(nn.Module):
    """A differentiable stand-in for PESQ's degradation (ITU-T P.862 / P.862.2) between ``(B, 1, T)``
    waveforms: what the mean opinion score loses, ``0.1 d_sym + 0.0309 d_asym``, so minimising it
    raises an estimate of PESQ. Written from the standard's published description, not from an
    implementation, and simplified (no time alignment: the codec's output is aligned).

    The spectrogram losses weigh every bin's log-magnitude error alike; PESQ hears something else:
    Bark-band powers on a compressive (Zwicker) loudness scale above each band's hearing threshold,
    after forgiving a fixed per-band gain (an equaliser, within +-20 dB) and a slowly varying frame
    gain; differences below a quarter of the smaller loudness are not heard at all; added energy
    counts up to 12 times (the asymmetry factor); and frames are pooled with an L6 norm over
    320 ms intervals, so the worst moments dominate.

    Both signals are first scaled to the same mean band power, so the loss ignores overall gain,
    as PESQ does. Where that level sits above the hearing threshold decides whether quiet added
    energy (noise between harmonics) counts: at 70 dB it fell under the threshold, and minimising
    the loss on a clip's latent through the decoder lowered PESQ-WB; at 100 dB the estimate
    follows ``pesq`` best on the codec's output of training clips (``bench/pesq_proxy.py``).

    Args:
        sample_rate: audio rate (the bands span 100 Hz to half of it).
        bands: Bark bands (P.862.2 uses 49 at 16 kHz), equally wide on the Bark scale.
        n_fft: frame and FFT length; frames overlap by half (32 ms / 16 ms at 16 kHz, as PESQ).
        level_db: mean band power both signals are scaled to, in dB re the threshold's reference.
        gamma: Zwicker's loudness exponent.
        loudness_scale: loudness units per sone-like unit; sets the scale of the degradation, and
            was fitted so that :meth:`mos` matches ``pesq``'s PESQ-WB on the codec's output.
        interval: frames per pooling interval (half-overlapping).
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        bands: int = 49,
        n_fft: int = 512,
        level_db: float = 100.0,
        gamma: float = 0.23,
        loudness_scale: float = 1.4,
        interval: int = 20,
    ) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, n_fft // 2
        self.level = 10.0 ** (level_db / 10.0)
        self.gamma, self.scale, self.interval = gamma, loudness_scale, interval
        freqs = torch.linspace(0.0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
        bark = 6.0 * torch.asinh(freqs / 600.0)
        edges = torch.linspace(float(6.0 * np.arcsinh(100.0 / 600.0)), float(bark[-1]) + 1e-6, bands + 1)
        bank = ((bark[None] >= edges[:-1, None]) & (bark[None] < edges[1:, None])).float()
        centres = 600.0 * torch.sinh((edges[:-1] + edges[1:]) / 12.0) / 1000.0  # kHz
        # Threshold in quiet (Terhardt), dB re the same reference as level_db.
        threshold_db = 3.64 * centres**-0.8 - 6.5 * torch.exp(-0.6 * (centres - 3.3) ** 2) + 1e-3 * centres**4
        self.register_buffer("bank", bank, persistent=False)  # (bands, bins)
        self.register_buffer("p0", (10.0 ** (threshold_db / 10.0)).float()[:, None], persistent=False)  # (bands, 1)
        self.register_buffer("window", torch.hamming_window(n_fft), persistent=False)
        smooth = 0.2 * 0.8 ** torch.arange(32, dtype=torch.float32)
        self.register_buffer("smooth", smooth.flip(0)[None, None], persistent=False)  # (1, 1, 32)

    def _bark_power(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, T)`` -> Bark-band power ``(B, bands, frames)`` at the common level."""
        spec = torch.stft(x.squeeze(1), self.n_fft, self.hop, window=self.window, center=True, return_complex=True)
        power = torch.einsum("kf,bft->bkt", self.bank, spec.real.square() + spec.imag.square())
        mean = power.sum(1).mean(-1).clamp_min(1e-12)[:, None, None]
        return power * (self.level / mean)

    def _loudness(self, p: torch.Tensor) -> torch.Tensor:
        # Zwicker's law: zero at the threshold, growing as power**gamma well above it.
        p0 = self.p0
        return self.scale * (p0 / 0.5) ** self.gamma * F.relu((0.5 + 0.5 * p / p0) ** self.gamma - 1.0)

    def degradation(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``(B,)``: the estimate of PESQ's raw score lost, ``4.5 -`` raw."""
        deg = self._bark_power(pred.float())
        with torch.no_grad():
            ref = self._bark_power(target.float())
            frame = ref.sum(1)  # (B, frames)
            active = (frame > frame.amax(-1, keepdim=True) * 1e-4).float()[:, None]
            # PESQ forgives a fixed equaliser: the reference takes the output's band gains over
            # the active frames, within +-20 dB.
            eq = ((deg * active).sum(-1, keepdim=True) + self.p0) / ((ref * active).sum(-1, keepdim=True) + self.p0)
            ref = ref * eq.clamp(0.01, 100.0)
            # ... and a slowly varying frame gain (first-order smoothing, as its 0.8 / 0.2 recursion).
            audible_ref = (ref * (ref > 100 * self.p0)).sum(1)
            audible_deg = (deg * (deg > 100 * self.p0)).sum(1)
            c = float(self.p0.sum()) * 100
            gain = ((audible_ref + c) / (audible_deg + c)).clamp(3e-4, 5.0)
            gain = F.conv1d(F.pad(gain[:, None], (self.smooth.shape[-1] - 1, 0), mode="replicate"), self.smooth)
            gain = gain / float(self.smooth.sum())
        deg = deg * gain
        loud_ref, loud_deg = self._loudness(ref), self._loudness(deg)
        # Differences under a quarter of the smaller loudness are masked.
        dz = F.relu((loud_deg - loud_ref).abs() - 0.25 * torch.minimum(loud_ref, loud_deg))
        with torch.no_grad():
            asym = ((deg + self.p0) / (ref + self.p0)) ** 1.2
            asym = torch.where(asym < 3.0, torch.zeros_like(asym), asym.clamp_max(12.0))
        d_sym = (dz.pow(3).mean(1) + 1e-12).pow(1.0 / 3.0).clamp_max(45.0)  # (B, frames)
        d_asym = (dz * asym).mean(1).clamp_max(45.0)

        def pool(d: torch.Tensor) -> torch.Tensor:
            n = min(self.interval, d.shape[-1])
            windows = d.unfold(-1, n, max(1, n // 2))  # (B, intervals, n)
            per_interval = (windows.pow(6).mean(-1) + 1e-12).pow(1.0 / 6.0)
            return (per_interval.square().mean(-1) + 1e-12).sqrt()

        return 0.1 * pool(d_sym) + 0.0309 * pool(d_asym)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The batch mean of :meth:`degradation`."""
        return self.degradation(pred, target).mean()

    @staticmethod
    def mos(degradation: torch.Tensor) -> torch.Tensor:
        """P.862.2's wide-band mapping of the raw score ``4.5 - degradation`` to MOS-LQO."""
        raw = 4.5 - degradation
        return 0.999 + 4.0 / (1.0 + torch.exp(-1.3669 * raw + 3.8224))
