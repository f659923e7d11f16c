"""Chunked encoding and decoding: audio of any length in constant memory.

Both backbones have a finite receptive field: a latent frame depends on the audio of a few
dozen frames around it, and an output sample on the codes of a few dozen frames around it.
:class:`StreamingEncoder` therefore encodes a window of ``W`` latent frames together with
``C`` frames of audio on each side and keeps only the window's codes; :class:`StreamingDecoder`
decodes a window of codes with ``C`` frames of codes on each side and keeps only the window's
samples. With ``C`` at least the receptive field, every kept code and sample is computed from
exactly the inputs the whole-signal pass uses, so the concatenated output equals the whole
pass up to float rounding (no cross-fades are needed, the seams are exact). Window starts
fall on multiples of :func:`unit_frames` (the quantizer's largest stride and the published
backbone's attention window), so pooling groups and attention windows line up with the whole
pass. A clip no longer than ``W + C`` frames is one window: the whole pass, bit for bit.

Memory is ``O(W + 2C)`` frames of activations whatever the input length: the largest tensor is
the quantizer's ``(frames, codebook size)`` similarity matrix of one window.

The published backbone's decoder draws Gaussian noise (NoiseBlocks): its chunked decode draws
different noise than a whole decode, as two whole decodes with different seeds do. With the
noise off (:func:`~uniaudio_cli.codec.published.noise_disabled`) it equals the whole decode.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from uniaudio_cli.codec.config import CodecConfig
from uniaudio_cli.codec.model import LLMCodec

# Seconds of audio per window. Encoding: the quantizer's (frames x 49152) similarity matrices
# dominate, about 0.6 MB per latent frame, so 10 s (333 frames) peaks near 200 MB; decoding
# holds (frames x 768)-channel activations at the 100 Hz STFT rate, far less per second.
ENCODE_WINDOW_SECONDS = 10.0
DECODE_WINDOW_SECONDS = 30.0

# ConvNeXt blocks use depthwise convolutions of kernel 7: 3 frames of reach on each side.
_CONVNEXT_REACH = 3
# Published residual units: three dilated kernel-7 convolutions (dilations 1, 3, 9).
_RESIDUAL_REACH = 3 * (1 + 3 + 9)


def unit_frames(cfg: CodecConfig) -> int:
    """Latent frames that window starts must be a multiple of: the encoder's padding unit
    (``pad_multiple``: the largest quantizer stride, and the published attention window) and
    every quantizer stride."""
    return math.lcm(cfg.pad_multiple // cfg.hop_length, *cfg.vq_strides)


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def encoder_context_frames(cfg: CodecConfig) -> int:
    """Latent frames of audio on each side that a latent frame depends on (an upper bound on
    the encoder's receptive field, in frames of ``hop_length`` samples; see the tests, which
    measure it with autograd)."""
    hop = cfg.hop_length
    if cfg.backbone == "small":
        s, blocks = cfg.small_stft_hop, max(cfg.small_encoder_layers - 1, 0)
        # STFT frames reach n_fft / 2 samples; embed conv + one ConvNeXt block at the STFT
        # rate reach 2 * 3 STFT frames; the blocks at the latent rate 3 latent frames each.
        reach = _CONVNEXT_REACH * blocks * hop + 2 * _CONVNEXT_REACH * s + cfg.small_n_fft // 2
        return -(-reach // hop) + 1
    # published: conv k7, then per down block three residual units and a strided conv of
    # kernel 2 * stride (reach <= stride input samples), then windowed attention (a frame sees
    # its whole window) and a depthwise conv k7 at the latent rate.
    reach, jump = 3, 1
    for stride in cfg.encoder_rates:
        reach += (_RESIDUAL_REACH + stride) * jump
        jump *= stride
    reach += (max(cfg.attn_window_size - 1, 0) + 3) * jump
    return -(-reach // hop) + 1


def decoder_context_frames(cfg: CodecConfig) -> int:
    """Latent frames of codes on each side that the samples of a latent frame depend on (an
    upper bound on the decoder's receptive field)."""
    if cfg.backbone == "small":
        up = cfg.small_hop // cfg.small_stft_hop
        blocks = max(cfg.small_decoder_layers - 1, 0)
        # embed conv k7 + blocks at the latent rate; after upsampling, the fine blocks and the
        # inverse STFT (a sample overlaps frames within n_fft / 2) at the STFT rate.
        fine = _CONVNEXT_REACH * cfg.small_fine_layers + -(-cfg.small_n_fft // (2 * cfg.small_stft_hop)) + 1
        return _CONVNEXT_REACH * (1 + blocks) + -(-fine // up) + 1
    # published: (depthwise) conv k7 and windowed attention at the latent rate, then per up
    # block a transposed conv (reach <= 2 input steps) and three residual units, then conv k7.
    reach, up = 3.0 + max(cfg.attn_window_size - 1, 0), 1
    for stride in cfg.decoder_rates:
        reach += 2 / up
        up *= stride
        reach += _RESIDUAL_REACH / up
    reach += 3 / up
    return math.ceil(reach) + 1


def _window_frames(cfg: CodecConfig, seconds: float, unit: int) -> int:
    return max(_round_up(round(seconds * cfg.frame_rate), unit), unit)


class StreamingEncoder:
    """Encode audio fed in blocks of any size, one window of latent frames at a time.

    ``push`` mono ``(n,)`` float samples at the codec's rate as they arrive; it returns the
    codebook indices (one list per layer) of every window whose right context has arrived.
    ``finish`` encodes the rest (right-padded to ``cfg.pad_multiple`` as the whole pass does)
    and returns its codes. The concatenated codes equal :meth:`LLMCodec.encode` of the whole
    signal (see the module docstring); memory is one window plus its context.

    Args:
        model: the codec.
        device: where the model runs.
        window_seconds: audio per window (rounded to whole :func:`unit_frames`).
        context_frames: latent frames of context each side (default: the receptive field).
    """

    def __init__(
        self,
        model: LLMCodec,
        device: torch.device,
        window_seconds: float = ENCODE_WINDOW_SECONDS,
        context_frames: int | None = None,
    ) -> None:
        cfg = model.cfg
        self.model, self.device = model, device
        self.strides = list(cfg.vq_strides)
        self.hop = cfg.hop_length
        unit = unit_frames(cfg)
        ctx = encoder_context_frames(cfg) if context_frames is None else context_frames
        self.window = _window_frames(cfg, window_seconds, unit) * self.hop
        self.context = _round_up(ctx, unit) * self.hop
        self._buf = np.zeros(0, dtype=np.float32)
        self._buf_start = 0  # absolute sample index of _buf[0]
        self._pos = 0  # absolute sample where the next window's kept codes begin
        self.num_samples = 0
        self._finished = False

    def _empty(self) -> list[list[int]]:
        return [[] for _ in self.strides]

    def _encode(self, start: int, end: int | None) -> list[list[int]]:
        """Encode ``_buf`` from absolute ``start`` to ``end`` (``None``: the end) and keep the
        codes of frames from ``_pos`` on (to ``_pos + window`` when ``end`` is given)."""
        seg = self._buf[start - self._buf_start : None if end is None else end - self._buf_start]
        wav = torch.from_numpy(np.ascontiguousarray(seg)).view(1, 1, -1).to(self.device)
        codes = self.model.encode(wav)
        first = (self._pos - start) // self.hop
        last = None if end is None else first + self.window // self.hop
        return [
            c[0, first // s : None if last is None else last // s].tolist()
            for c, s in zip(codes, self.strides, strict=True)
        ]

    def push(self, samples: np.ndarray | Sequence[float]) -> list[list[int]]:
        """Add samples ``(n,)``; returns the codes per layer of the windows completed (maybe none)."""
        if self._finished:
            raise RuntimeError("StreamingEncoder: push after finish")
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        out = self._empty()
        # Take large inputs a window at a time so that the buffer never holds more than about
        # one window plus its context (an in-memory hour is not copied).
        for i in range(0, len(x), self.window):
            piece = x[i : i + self.window]
            self._buf = np.concatenate([self._buf, piece]) if len(self._buf) else piece
            self.num_samples += len(piece)
            while self.num_samples >= self._pos + self.window + self.context:
                start = max(self._pos - self.context, 0)
                for layer, codes in zip(out, self._encode(start, self._pos + self.window + self.context), strict=True):
                    layer += codes
                self._pos += self.window
                drop = self._pos - self.context - self._buf_start
                if drop > 0:
                    self._buf = self._buf[drop:]
                    self._buf_start += drop
        return out

    def finish(self) -> list[list[int]]:
        """Encode what is left; returns its codes per layer. The encoder cannot be pushed to after."""
        if self._finished:
            raise RuntimeError("StreamingEncoder: finish called twice")
        self._finished = True
        if self.num_samples == 0:
            raise ValueError("StreamingEncoder: no samples were pushed")
        if self._pos >= self.num_samples:
            return self._empty()
        codes = self._encode(max(self._pos - self.context, 0), None)
        self._buf = np.zeros(0, dtype=np.float32)
        return codes


class StreamingDecoder:
    """Decode codes fed in pieces of any size, one window of latent frames at a time.

    ``push`` codebook indices per layer (layer ``i`` holding ``frames / stride_i`` codes, as
    encoder output does); iterate what it returns to get the ``(n,)`` float32 samples of every
    window whose right context has arrived. ``finish`` decodes the rest (codes whose frames do
    not fill a whole unit are padded by repeating the last code, as :meth:`LLMCodec.decode`
    does) and crops the total to ``length`` samples. The concatenated samples equal
    :meth:`LLMCodec.decode` of all the codes (see the module docstring).

    Args:
        model: the codec.
        device: where the model runs.
        length: crop the output to this many samples (``None``: every frame's samples); may be
            set as an attribute until :meth:`finish` (the crop falls in the last window, which
            only ``finish`` decodes).
        window_seconds: audio per window (rounded to whole :func:`unit_frames`).
        context_frames: latent frames of context each side (default: the receptive field).
    """

    def __init__(
        self,
        model: LLMCodec,
        device: torch.device,
        length: int | None = None,
        window_seconds: float = DECODE_WINDOW_SECONDS,
        context_frames: int | None = None,
    ) -> None:
        cfg = model.cfg
        self.model, self.device, self.length = model, device, length
        self.strides = list(cfg.vq_strides)
        self.hop = cfg.hop_length
        unit = unit_frames(cfg)
        ctx = decoder_context_frames(cfg) if context_frames is None else context_frames
        self.window = _window_frames(cfg, window_seconds, unit)
        self.context = _round_up(ctx, unit)
        self._codes: list[list[int]] = [[] for _ in self.strides]
        self._start = 0  # absolute frame of _codes[i][0] * stride_i
        self._pos = 0  # absolute frame where the next window's kept samples begin
        self.frames = 0  # frames pushed so far
        self.emitted = 0  # samples yielded so far
        self._finished = False
        # A harmonic decoder head's oscillator accumulates phase over the whole signal: each
        # window is anchored to the phase the previous window computed at its first kept frame.
        self._stft_per_frame = cfg.small_hop // cfg.small_stft_hop if cfg.backbone == "small" else 1
        self._phase: torch.Tensor | None = None

    def push(self, codes: Sequence[Sequence[int]]) -> Iterator[np.ndarray]:
        """Add codes per layer (stored at once); iterate the result for the completed windows' samples."""
        if self._finished:
            raise RuntimeError("StreamingDecoder: push after finish")
        frames = {len(c) * s for c, s in zip(codes, self.strides, strict=True)}
        if len(frames) != 1:
            raise ValueError(f"StreamingDecoder: layer lengths {[len(c) for c in codes]} differ in frames")
        for layer, c in zip(self._codes, codes, strict=True):
            layer += [int(x) for x in c]
        self.frames += frames.pop()
        return self._drain()

    def _drain(self) -> Iterator[np.ndarray]:
        while self.frames >= self._pos + self.window + self.context:
            start = max(self._pos - self.context, 0)
            yield self._emit(self._decode(start, self._pos + self.window + self.context)[: self.window * self.hop])
            self._pos += self.window
            drop = self._pos - self.context - self._start
            if drop > 0:
                self._codes = [c[drop // s :] for c, s in zip(self._codes, self.strides, strict=True)]
                self._start += drop

    def _decode(self, start: int, end: int | None) -> np.ndarray:
        """Decode frames ``start .. end`` (``None``: the end) and return the samples from ``_pos`` on."""
        lo = start - self._start
        hi = None if end is None else end - self._start
        seg = [
            torch.tensor(c[lo // s : None if hi is None else hi // s], dtype=torch.long, device=self.device)[None]
            for c, s in zip(self._codes, self.strides, strict=True)
        ]
        anchor = (self._pos - start) * self._stft_per_frame
        audio, phase = self.model.decode_with_phase(seg, self._phase, anchor)
        if phase is not None and end is not None:
            self._phase = phase[:, anchor + self.window * self._stft_per_frame]
        frames = seg[-1].shape[-1] * self.strides[-1]
        return audio[0, 0, (self._pos - start) * self.hop : frames * self.hop].float().cpu().numpy()

    def _emit(self, wav: np.ndarray) -> np.ndarray:
        if self.length is not None:
            wav = wav[: max(self.length - self.emitted, 0)]
        self.emitted += len(wav)
        return wav

    def finish(self) -> Iterator[np.ndarray]:
        """Iterate the result for the samples of the windows still pending (the decoder cannot
        be pushed to after)."""
        if self._finished:
            raise RuntimeError("StreamingDecoder: finish called twice")
        self._finished = True
        return self._rest()

    def _rest(self) -> Iterator[np.ndarray]:
        yield from self._drain()
        if self._pos < self.frames:
            yield self._emit(self._decode(max(self._pos - self.context, 0), None))
        self._codes = [[] for _ in self.strides]
