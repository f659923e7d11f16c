"""Default-mode denoising: a spectral mask looked up in the (noisy, clean) demonstrations.

A small frozen LLM cannot write clean codec tokens for a noisy clip (asked to, SmolLM2-135M
turned held-out speech at 10 dB SNR from STOI 0.90 into 0.31), and any output that goes
through the codec is capped by its resynthesis (STOI 0.83 on clean speech). So this mode keeps
the noisy signal and learns from the demonstrations how much of it to keep: for every codec
frame (30 ms at hop 480) and mel band, the demonstrations give the ideal ratio mask
``sqrt(S / (S + N))`` of their known clean speech ``S`` and noise ``N``; a query frame takes
the similarity-weighted mean mask of its ``k`` nearest demonstration frames (non-parametric
few-shot learning: nothing is trained, the demonstrations are the model). The mask is floored,
softened and applied to the noisy STFT, whose phase is kept.

A frame is described by two parts, each standardised over the demonstration frames and
L2-normalised:

* its level above the clip's own noise floor per mel band (log band energy minus the band's
  10th percentile over the window): what tells speech from noise across noise kinds;
* the codec tokens covering it, as the frozen LLM embeds them (its input embedding of each
  layer's token), weighted by ``llm_weight``.

On development mixtures (LibriSpeech-like read speech from ``speech_extra`` with white, pink,
brown and babble noise; the shipped espeak-ng pairs as demonstrations) the first part does most
of the work; the LLM part adds about 0.003 STOI and 0.007 PESQ-WB (``docs/denoise.md``).
Long inputs are cut into windows of ``window_seconds`` (the noise floor is measured per
window) that overlap by ``overlap_seconds`` and are cross-faded.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch

from uniaudio_cli.codec.api import Codec
from uniaudio_cli.errors import UsageError
from uniaudio_cli.llm import LoadedLLM
from uniaudio_cli.tasks.options import MaskSettings

N_FFT = 512
HOP = 160  # 10 ms at 16 kHz: a codec frame of hop 480 spans three STFT frames
N_BANDS = 32
FLOOR_PERCENTILE = 10.0


class _Spectra:
    """STFT, mel band pooling per codec frame, and the band -> bin spreading of a mask."""

    def __init__(self, sample_rate: int, codec_hop: int) -> None:
        import librosa

        self.codec_hop = codec_hop
        fb = librosa.filters.mel(sr=sample_rate, n_fft=N_FFT, n_mels=N_BANDS)
        self.band_mean = fb / fb.sum(1, keepdims=True)  # (B, F): mean power over a band's bins
        cover = fb.sum(0)
        # Bins no band covers (DC, and near Nyquist) take the gain of the nearest covered bin.
        covered = np.flatnonzero(cover > 0)
        nearest = covered[np.abs(np.arange(len(cover))[:, None] - covered[None, :]).argmin(1)]
        self.to_bins = (fb[:, nearest] / cover[nearest]).T  # (F, B): each bin's gain from the bands

    def stft(self, x: np.ndarray) -> np.ndarray:
        import librosa

        return librosa.stft(np.asarray(x, dtype=np.float32), n_fft=N_FFT, hop_length=HOP, window="hann", center=True)

    def frame_of(self, n_stft: int, n_frames: int) -> np.ndarray:
        """The codec frame each STFT frame's centre falls in, ``(n_stft,)``."""
        return np.minimum(np.arange(n_stft) * HOP // self.codec_hop, n_frames - 1)

    def frame_position(self, n_stft: int, n_frames: int) -> np.ndarray:
        """Each STFT frame's centre in codec frames, counted from the first frame's centre."""
        return np.clip(np.arange(n_stft) * HOP / self.codec_hop - 0.5, 0, n_frames - 1)

    def band_power(self, spec: np.ndarray, n_frames: int) -> np.ndarray:
        """``(F, T)`` complex STFT -> mean power per mel band and codec frame, ``(n_frames, B)``."""
        pooled = np.full((n_frames, spec.shape[0]), 1e-10)
        np.add.at(pooled, self.frame_of(spec.shape[1], n_frames), (np.abs(spec) ** 2).T)
        return pooled @ self.band_mean.T

    def apply(self, noisy: np.ndarray, gain: np.ndarray, spec: np.ndarray | None = None) -> np.ndarray:
        """Multiply the STFT of ``(T,)`` ``noisy`` (``spec``, when already computed) by
        ``(n_frames, B)`` band gains, interpolated between frame centres; ``(T,)`` out."""
        import librosa

        spec = self.stft(noisy) if spec is None else spec.copy()
        per_bin = self.to_bins @ gain.T  # (F, n_frames)
        # Gains are interpolated between codec frames: steps at every 30 ms would be audible.
        pos = self.frame_position(spec.shape[1], gain.shape[0])
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, gain.shape[0] - 1)
        spec *= per_bin[:, lo] * (1 - (pos - lo)) + per_bin[:, hi] * (pos - lo)
        return librosa.istft(spec, hop_length=HOP, window="hann", length=len(noisy)).astype(np.float32)


def _level_above_floor(band_power: np.ndarray) -> np.ndarray:
    """``(n, B)`` band power -> log level above each band's noise floor over the window."""
    level = np.log(band_power + 1e-8)
    return level - np.percentile(level, FLOOR_PERCENTILE, axis=0, keepdims=True)


class _Standardise:
    """Z-scores with the demonstration frames' statistics, then L2 normalisation per frame."""

    def __init__(self, x: np.ndarray) -> None:
        self.mean, self.std = x.mean(0), x.std(0) + 1e-6

    def __call__(self, x: np.ndarray) -> np.ndarray:
        z = (x - self.mean) / self.std
        return z / (np.linalg.norm(z, axis=1, keepdims=True) + 1e-8)


class MaskEstimator:
    """Per-frame, per-band gains for noisy audio from encoded (noisy, clean) demonstrations.

    Args:
        llm: the frozen LLM whose input embeddings describe the codec tokens.
        codec: the LLM-Codec (its tokens and frame rate).
        demos: ``(noisy, clean)`` audio pairs ``(T,)`` at the codec's rate, equal lengths.
        settings: neighbours, softening and the weight of the LLM part.
    """

    def __init__(
        self,
        llm: LoadedLLM,
        codec: Codec,
        demos: Sequence[tuple[np.ndarray, np.ndarray]],
        settings: MaskSettings | None = None,
    ) -> None:
        if not demos:
            raise UsageError("no denoising demonstrations", "pass --demos DIR with DIR/<name>/clean.wav + noisy*.wav")
        self.llm, self.codec = llm, codec
        self.settings = settings or MaskSettings()
        self.strides = [int(s) for s in codec.model.cfg.vq_strides]
        self.spectra = _Spectra(codec.sample_rate, int(codec.model.cfg.hop_length))
        self.embedding = llm.model.get_input_embeddings().weight
        levels, tokens, masks = [], [], []
        for noisy, clean in demos:
            if len(noisy) != len(clean):
                raise UsageError(
                    f"a demonstration pair has {len(noisy)} noisy and {len(clean)} clean samples",
                    "make each noisy file a noisy copy of its clean.wav, of the same length",
                )
            level, tok = self._describe(noisy)
            n = len(level)
            speech = self.spectra.band_power(self.spectra.stft(clean), n)
            noise = self.spectra.band_power(self.spectra.stft(noisy - clean), n)
            levels.append(level)
            tokens.append(tok)
            masks.append(np.sqrt(speech / (speech + noise + 1e-10)))
        level_all, token_all = np.concatenate(levels), np.concatenate(tokens)
        self._level, self._tokens = _Standardise(level_all), _Standardise(token_all)
        self.keys = self._key(level_all, token_all)  # (N, D)
        self.values = np.concatenate(masks)  # (N, B)

    @property
    def num_frames(self) -> int:
        """Demonstration frames the masks are looked up in."""
        return len(self.values)

    @torch.no_grad()
    def _token_features(self, token_ids: list[list[int]]) -> np.ndarray:
        """Per-layer token ids -> ``(n_frames, layers * H)``: each frame's token of every layer,
        embedded by the frozen LLM."""
        n = len(token_ids[int(np.argmin(self.strides))])
        parts = []
        for ids, stride in zip(token_ids, self.strides, strict=True):
            index = np.minimum(np.arange(n) // stride, len(ids) - 1)
            rows = torch.tensor([ids[i] for i in index], dtype=torch.long, device=self.embedding.device)
            parts.append(self.embedding[rows].float().cpu().numpy())
        return np.concatenate(parts, axis=1)

    def _describe(self, noisy: np.ndarray, spec: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        tokens = self._token_features(self.codec.encode(noisy))
        spec = self.spectra.stft(noisy) if spec is None else spec
        level = _level_above_floor(self.spectra.band_power(spec, len(tokens)))
        return level, tokens

    def _key(self, level: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        return np.concatenate([self._level(level), self.settings.llm_weight * self._tokens(tokens)], axis=1)

    def gains(self, noisy: np.ndarray, spec: np.ndarray | None = None) -> np.ndarray:
        """``(T,)`` noisy audio (and its STFT ``spec``, when already computed) -> ``(n_frames, B)``
        gains in ``[floor ** power, 1]``."""
        s = self.settings
        query = self._key(*self._describe(noisy, spec))
        sim = query @ self.keys.T
        k = min(s.neighbours, sim.shape[1])
        idx = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(sim, idx, axis=1)
        w = np.exp((top - top.max(1, keepdims=True)) / s.temperature)
        w /= w.sum(1, keepdims=True)
        mask = np.einsum("qk,qkb->qb", w, self.values[idx])
        return np.maximum(mask, s.floor) ** s.power

    def clean(self, noisy: np.ndarray) -> np.ndarray:
        """One window: ``(T,)`` noisy -> ``(T,)`` with the looked-up mask applied."""
        spec = self.spectra.stft(noisy)  # once, for the description and for the mask
        return self.spectra.apply(noisy, self.gains(noisy, spec), spec)

    def clean_blocks(self, blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Clean audio arriving in ``(n,)`` blocks, window by window with cross-faded overlaps;
        yields as many samples as came in, the same whatever the block sizes."""
        sr = self.codec.sample_rate
        win = max(int(self.settings.window_seconds * sr), 1)
        ov = min(int(self.settings.overlap_seconds * sr), win // 2)
        buf = np.zeros(0, dtype=np.float32)
        tail: np.ndarray | None = None  # the processed overlap of the previous window
        total = 0

        def crossfaded(out: np.ndarray) -> np.ndarray:
            if tail is not None:
                n = min(len(tail), len(out))
                fade = np.linspace(0.0, 1.0, n + 2, dtype=np.float32)[1:-1]
                out[:n] = tail[:n] * (1 - fade) + out[:n] * fade
            return out

        # Invariant: ``buf`` starts where the output has got to; ``tail`` (when set) is the
        # processed, not yet written start of ``buf``.
        def full_windows() -> Iterator[np.ndarray]:
            nonlocal buf, tail
            while len(buf) >= win:
                out = crossfaded(self.clean(buf[:win]))
                yield out[: win - ov]
                tail, buf = out[win - ov :], buf[win - ov :]

        def last_window() -> Iterator[np.ndarray]:
            nonlocal buf, tail
            if len(buf) > (0 if tail is None else len(tail)):
                yield crossfaded(self.clean(buf))
            elif tail is not None:
                yield tail
            buf, tail = buf[:0], None

        for block in blocks:
            block = np.asarray(block, dtype=np.float32).reshape(-1)
            total += len(block)
            buf = np.concatenate([buf, block])
            yield from full_windows()
        if total == 0:
            raise UsageError("no audio to denoise", "pass a clip with audible sound")
        yield from last_window()
