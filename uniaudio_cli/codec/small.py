"""The small default backbone: frame-rate ConvNeXt encoder/decoder with an inverse-STFT head.

Everything heavy runs at the 33.3 Hz latent rate, and the decoder predicts an STFT (log
magnitude and phase) at 100 Hz that one ``istft`` turns into samples, as in Vocos. That keeps
a forward pass over a second of audio at a few tens of MFLOPs, so the codec trains and runs on
a laptop CPU.

With ``small_harmonic`` the head also predicts a pitch track and voicing at the STFT rate and
runs a band-limited harmonic oscillator at that pitch; each STFT bin then mixes (by a predicted
weight) the oscillator's phase with the freely predicted one. A free phase per 10 ms frame rarely
lines up from one frame to the next, so voiced speech comes out rough; the oscillator's phase
advances coherently by construction. The oscillator's phase accumulates over the whole signal, so
a chunked decode carries it from one window to the next (``phase0``).
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


# Pitch is classified into PITCH_BINS bins PITCH_BIN_CENTS apart from PITCH_MIN_HZ (55 Hz to about
# 1 kHz): a distribution over bins learns far faster than a regression, which an octave error in
# the targets or an ambiguous frame pulls to the middle (the CREPE recipe).
PITCH_BINS = 128
PITCH_BIN_CENTS = 40.0
PITCH_MIN_HZ = 55.0


def pitch_bin(f0: torch.Tensor) -> torch.Tensor:
    """Hz -> fractional bin index (any shape)."""
    return 1200 * torch.log2(f0.clamp_min(1e-3) / PITCH_MIN_HZ) / PITCH_BIN_CENTS


def pitch_hz(logits: torch.Tensor) -> torch.Tensor:
    """Bin logits ``(..., PITCH_BINS)`` -> Hz ``(...)``: the probability-weighted mean of the bins
    within two of the likeliest, so the pitch moves smoothly between bin centres."""
    prob = logits.float().softmax(-1)
    bins = torch.arange(logits.shape[-1], device=logits.device, dtype=prob.dtype)
    near = (bins - prob.argmax(-1, keepdim=True)).abs() <= 2
    w = torch.where(near, prob, torch.zeros_like(prob))
    index = (w * bins).sum(-1) / w.sum(-1).clamp_min(1e-9)
    return PITCH_MIN_HZ * torch.exp2(index * PITCH_BIN_CENTS / 1200)


def harmonic_excitation(
    f0: torch.Tensor,
    voiced: torch.Tensor,
    hop: int,
    sample_rate: int,
    phase0: torch.Tensor | None = None,
    anchor: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A band-limited harmonic oscillator.

    Args:
        f0: pitch in Hz ``(B, N)`` at frame centres ``n * hop`` (any value where unvoiced).
        voiced: amplitude in [0, 1] ``(B, N)`` (0 = silent).
        hop: samples per frame.
        sample_rate: samples per second.
        phase0: the oscillator's phase in cycles at frame ``anchor``'s centre, ``(B,)`` (default 0).
        anchor: the frame (``0 <= anchor <= N``) where the phase is ``phase0``.

    Returns:
        ``(excitation (B, N * hop), phase (B, N + 1))``: every harmonic below 0.95 * Nyquist with
        amplitude 1, and the phase in cycles (wrapped to [0, 1)) at each frame centre and at the
        end.
    """
    B, N = f0.shape
    t = torch.arange(N * hop, device=f0.device, dtype=torch.float64) / hop
    i0 = t.floor().long().clamp(max=N - 1)
    i1 = (i0 + 1).clamp(max=N - 1)
    frac = (t - i0).to(f0.dtype)
    f = f0[:, i0] * (1 - frac) + f0[:, i1] * frac
    amp = voiced[:, i0] * (1 - frac) + voiced[:, i1] * frac
    # Cumulate in float64: a float32 phase drifts audibly over a minute of audio.
    step = f.double() / sample_rate
    cycles = torch.cat([torch.zeros(B, 1, dtype=torch.float64, device=f0.device), step.cumsum(-1)], dim=-1)
    frame_phase = cycles[:, ::hop]
    offset = -frame_phase[:, anchor]
    if phase0 is not None:
        offset = offset + phase0.double()
    cycles = cycles[:, :-1] + offset[:, None]
    frame_phase = frame_phase + offset[:, None]
    theta = (2 * torch.pi * torch.remainder(cycles, 1.0)).to(f0.dtype)
    # sum_{k=1..K} sin(k theta) = sin(K theta / 2) sin((K + 1) theta / 2) / sin(theta / 2)
    k = torch.floor(0.95 * sample_rate / 2 / f.clamp_min(1.0)).clamp_min(1.0)
    den = torch.sin(theta / 2)
    safe = den.abs() > 1e-4
    ratio = torch.sin(k * theta / 2) * torch.sin((k + 1) * theta / 2) / torch.where(safe, den, 1.0)
    wave = torch.where(safe, ratio, 0.0)
    return wave * amp / k.sqrt(), torch.remainder(frame_phase, 1.0).to(f0.dtype)


def spectral_envelope(log_mag: torch.Tensor, width: int) -> torch.Tensor:
    """A log magnitude ``(B, bins, frames)`` averaged over ``width`` (odd) neighbouring bins in
    each frame, the edge bins repeated: its spectral envelope, the same shape."""
    b, bins, frames = log_mag.shape
    rows = F.pad(log_mag.transpose(1, 2).reshape(b * frames, 1, bins), (width // 2, width // 2), mode="replicate")
    kernel = torch.full((1, 1, width), 1.0 / width, dtype=log_mag.dtype, device=log_mag.device)
    return F.conv1d(rows, kernel).reshape(b, frames, bins).transpose(1, 2)


def spectral_contrast(mag: torch.Tensor, power: float, smooth: int = 0) -> torch.Tensor:
    """Raise an STFT magnitude ``(B, bins, frames)`` to ``power``, keeping each frame's energy.

    A post-filter for the decoder: a codec trained on spectral losses smooths its magnitudes
    (formants a little flat, valleys between them a little high), which PESQ hears as noise.
    ``power`` > 1 deepens the valleys relative to the peaks; rescaling every frame to its
    energy keeps loudness and the temporal envelope. Per frame, so a chunked decode is exact.

    ``smooth`` > 0 (odd, in bins) raises only the spectral envelope, the log magnitude averaged
    over ``smooth`` neighbouring bins, and keeps the fine structure around it (the harmonics'
    depth) as decoded: on training speech, deepening the gaps between harmonics costs PESQ-WB
    while deepening the envelope's gains it.
    """
    if power == 1.0:
        return mag
    if smooth > 0:
        log_mag = mag.clamp_min(1e-7).log()
        new = (log_mag + (power - 1.0) * spectral_envelope(log_mag, smooth)).exp()
    else:
        new = mag.clamp_min(1e-7).pow(power)
    gain = mag.pow(2).sum(1, keepdim=True) / new.pow(2).sum(1, keepdim=True).clamp_min(1e-30)
    return new * gain.sqrt()


class ISTFTHead(nn.Module):
    """``(B, C, frames)`` -> waveform ``(B, 1, frames * hop)`` via predicted log-magnitude and phase.

    ``contrast``, ``contrast_smooth``: the :func:`spectral_contrast` exponent and envelope width
    applied to the predicted magnitude (``contrast`` 1.0: none).
    """

    def __init__(self, dim: int, n_fft: int, hop: int, contrast: float = 1.0, contrast_smooth: int = 0) -> None:
        super().__init__()
        self.n_fft, self.hop, self.contrast, self.contrast_smooth = n_fft, hop, contrast, contrast_smooth
        self.proj = nn.Linear(dim, n_fft + 2)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def magnitude_phase(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, C, frames)`` -> predicted ``(magnitude, phase)``, each ``(B, n_fft // 2 + 1, frames)``."""
        # float32 whatever the autocast: polar() and istft() take no bfloat16, and CUDA's autocast
        # would run exp() in float32 beside a bfloat16 phase.
        x = self.proj(h.transpose(1, 2)).transpose(1, 2).float()
        log_mag, phase = x.chunk(2, dim=1)
        # Clamp so an untrained or diverging model cannot overflow exp().
        return spectral_contrast(torch.exp(log_mag.clamp(max=8.0)), self.contrast, self.contrast_smooth), phase

    def to_wave(self, spec: torch.Tensor) -> torch.Tensor:
        """Complex STFT ``(B, n_fft // 2 + 1, frames)`` -> waveform ``(B, 1, frames * hop)``."""
        frames = spec.shape[-1]
        wav = torch.istft(spec, self.n_fft, self.hop, window=self.window, center=True, length=frames * self.hop)
        return wav.unsqueeze(1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.to_wave(torch.polar(*self.magnitude_phase(h)))


class HarmonicISTFTHead(ISTFTHead):
    """:class:`ISTFTHead` whose phase is, per bin, a learned mix of the free phase and a harmonic
    oscillator's at a predicted pitch (see the module docstring).

    :meth:`pitch` gives ``(pitch-bin logits (B, frames, PITCH_BINS), voicing logit (B, frames))``,
    which training supervises with the target's pitch track.
    """

    def __init__(
        self, dim: int, n_fft: int, hop: int, sample_rate: int, contrast: float = 1.0, contrast_smooth: int = 0
    ) -> None:
        super().__init__(dim, n_fft, hop, contrast, contrast_smooth)
        self.sample_rate = sample_rate
        self.pitch_proj = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, PITCH_BINS + 1))
        self.mix = nn.Linear(dim, n_fft // 2 + 1)
        # A zero last layer: every bin equally likely, half voiced, for any input.
        nn.init.zeros_(self.pitch_proj[-1].weight)
        nn.init.zeros_(self.pitch_proj[-1].bias)
        # Start with the oscillator almost off, so a head grown from a trained ISTFTHead starts
        # where that head was.
        nn.init.zeros_(self.mix.weight)
        nn.init.constant_(self.mix.bias, -4.0)

    def pitch(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, C, frames)`` -> ``(pitch-bin logits (B, frames, PITCH_BINS), voicing logit (B, frames))``."""
        out = self.pitch_proj(h.transpose(1, 2)).float()
        return out[..., :PITCH_BINS], out[..., PITCH_BINS]

    def forward(self, h: torch.Tensor, phase0: torch.Tensor | None = None, anchor: int = 0) -> torch.Tensor:
        """``(B, C, frames)`` -> waveform ``(B, 1, frames * hop)``; ``phase0``, ``anchor``: see
        :func:`harmonic_excitation`."""
        return self.synthesize(h, phase0, anchor)[0]

    def synthesize(
        self,
        h: torch.Tensor,
        phase0: torch.Tensor | None = None,
        anchor: int = 0,
        pitch: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward` that also returns the oscillator's phase in cycles at each frame
        ``(B, frames + 1)``; ``pitch``: :meth:`pitch` of ``h`` when the caller has it already."""
        mag, phase = (x.float() for x in self.magnitude_phase(h))
        logits, voicing = self.pitch(h) if pitch is None else pitch
        with torch.no_grad():
            # The oscillator follows the pitch track; the track learns from its own loss only.
            f0 = pitch_hz(logits)
            excitation, osc_phase = harmonic_excitation(
                f0, torch.sigmoid(voicing), self.hop, self.sample_rate, phase0, anchor
            )
            spec = torch.stft(excitation, self.n_fft, self.hop, window=self.window, center=True, return_complex=True)
            spec = spec[..., : h.shape[-1]]
            unit = spec / spec.abs().clamp_min(1e-3)
        w = torch.sigmoid(self.mix(h.transpose(1, 2)).transpose(1, 2).float())
        spec = mag * (w * unit + (1 - w) * torch.polar(torch.ones_like(phase), phase))
        return self.to_wave(spec), osc_phase


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
        self.head: ISTFTHead = (
            HarmonicISTFTHead(
                cfg.small_dim,
                cfg.small_n_fft,
                cfg.small_stft_hop,
                cfg.sample_rate,
                cfg.small_contrast,
                cfg.small_contrast_smooth,
            )
            if cfg.small_harmonic
            else ISTFTHead(
                cfg.small_dim, cfg.small_n_fft, cfg.small_stft_hop, cfg.small_contrast, cfg.small_contrast_smooth
            )
        )

    def features(self, z: torch.Tensor) -> torch.Tensor:
        """Latent ``(B, latent_dim, T')`` -> the head's input ``(B, small_dim, T' * small_hop / small_stft_hop)``."""
        h = self.embed(z)
        h = self.blocks(self.norm(h.transpose(1, 2)).transpose(1, 2))
        h = self.fine(self.upsample(h))
        return self.final_norm(h.transpose(1, 2)).transpose(1, 2)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(z))

    def synthesize(
        self, z: torch.Tensor, phase0: torch.Tensor | None = None, anchor: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`forward` with the harmonic oscillator's phase: set to ``phase0`` (cycles,
        ``(B,)``) at STFT frame ``anchor``, and returned at every STFT frame ``(B, frames + 1)``
        (``None`` without ``small_harmonic``). A chunked decode chains windows with it."""
        h = self.features(z)
        if isinstance(self.head, HarmonicISTFTHead):
            return self.head.synthesize(h, phase0, anchor)
        return self.head(h), None
