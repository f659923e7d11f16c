"""The LLM-Codec: encoder -> multi-scale RVQ over frozen LLM codebooks -> decoder."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from uniaudio_cli.codec.config import CodecConfig
from uniaudio_cli.codec.quantizer import MultiScaleRVQ, QuantizerOutput


@dataclass
class CodecOutput:
    """``audio``: reconstruction ``(B, 1, T)`` cropped to the input length; ``quant``: see
    :class:`QuantizerOutput`."""

    audio: torch.Tensor
    quant: QuantizerOutput


class LLMCodec(nn.Module):
    """Audio codec whose codes are token ids of a frozen LLM.

    Call :meth:`set_codebooks` (or load a state dict that holds them) before use: tables start
    as zeros because our checkpoints rebuild them from the LLM rather than storing them.
    """

    def __init__(self, cfg: CodecConfig) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.backbone == "published":
            from uniaudio_cli.codec.published import PublishedDecoder, PublishedEncoder

            self.encoder: nn.Module = PublishedEncoder(cfg)
            self.decoder: nn.Module = PublishedDecoder(cfg)
        elif cfg.backbone == "small":
            from uniaudio_cli.codec.small import SmallDecoder, SmallEncoder

            self.encoder = SmallEncoder(cfg)
            self.decoder = SmallDecoder(cfg)
        else:
            raise ValueError(f"unknown backbone {cfg.backbone!r}: expected 'small' or 'published'")
        self.quantizer = MultiScaleRVQ(
            cfg.latent_dim,
            cfg.vq_strides,
            cfg.codebook_sizes,
            cfg.codebook_dims,
            reference_ties=cfg.backbone == "published",
            residual_search=cfg.residual_search,
            map_hidden=cfg.codebook_map_hidden,
        )

    @property
    def sample_rate(self) -> int:
        return self.cfg.sample_rate

    @property
    def num_layers(self) -> int:
        return len(self.cfg.vq_strides)

    def set_codebooks(self, tables: list[torch.Tensor], banned: list[torch.Tensor | None] | None = None) -> None:
        """Install the frozen tables, layer ``i`` getting ``tables[i]`` of shape ``(K_i, E_i)``.

        ``banned[i]`` (optional) lists codes layer ``i`` must never emit (an LLM's special tokens).
        """
        for i, (q, table) in enumerate(zip(self.quantizer.quantizers, tables, strict=True)):
            if tuple(table.shape) != tuple(q.codebook.weight.shape):
                raise ValueError(
                    f"codebook {i}: table {tuple(table.shape)} != expected {tuple(q.codebook.weight.shape)}"
                )
            q.codebook.weight.copy_(table.to(q.codebook.weight))
            q.banned.zero_()
            if banned is not None and banned[i] is not None:
                q.banned[banned[i].to(q.banned.device).long()] = True

    def codes_length(self, num_samples: int) -> list[int]:
        """Codes per layer for a clip of ``num_samples`` samples."""
        m = self.cfg.pad_multiple
        frames = -(-num_samples // m) * m // self.cfg.hop_length
        return [frames // s for s in self.cfg.vq_strides]

    def preprocess(self, wav: torch.Tensor) -> torch.Tensor:
        """Right-pad ``(B, 1, T)`` to a multiple of ``cfg.pad_multiple`` samples."""
        m = self.cfg.pad_multiple
        pad = -wav.shape[-1] % m
        return F.pad(wav, (0, pad)) if pad else wav

    def forward(self, wav: torch.Tensor) -> CodecOutput:
        """Training pass. ``wav``: ``(B, 1, T)`` in [-1, 1]."""
        length = wav.shape[-1]
        z = self.encoder(self.preprocess(wav))
        quant = self.quantizer(z)
        audio = self.decoder(quant.z_q)
        return CodecOutput(audio[..., :length], quant)

    @torch.no_grad()
    def encode(self, wav: torch.Tensor) -> list[torch.Tensor]:
        """``(B, 1, T)`` -> codebook indices per layer ``(B, T_i)``; see :meth:`codes_length`."""
        return self.quantizer.encode(self.encoder(self.preprocess(wav)))

    @torch.no_grad()
    def decode(self, codes: list[torch.Tensor], length: int | None = None) -> torch.Tensor:
        """Codebook indices per layer ``(B, T_i)`` -> waveform ``(B, 1, T)`` (cropped to ``length``)."""
        audio, _ = self.decode_with_phase(codes)
        frames = codes[-1].shape[-1] * self.cfg.vq_strides[-1]
        end = frames * self.cfg.hop_length if length is None else min(length, frames * self.cfg.hop_length)
        return audio[..., :end]

    @torch.no_grad()
    def decode_with_phase(
        self, codes: list[torch.Tensor], phase0: torch.Tensor | None = None, anchor: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`decode` (uncropped: whole padding units) for chunked decoding.

        With a harmonic decoder head (``small_harmonic``) its oscillator's phase is ``phase0``
        (cycles, ``(B,)``) at STFT frame ``anchor`` and is returned at every STFT frame
        ``(B, frames + 1)``; otherwise ``phase0`` is ignored and ``None`` returned.
        """
        frames = codes[-1].shape[-1] * self.cfg.vq_strides[-1]
        unit = self.cfg.pad_multiple // self.cfg.hop_length
        pad_frames = -frames % unit
        if pad_frames:
            # Codes written by an LLM need not fill whole attention windows; repeat the last
            # code of each layer to fill them and crop the padding off the audio.
            codes = [
                torch.cat([c, c[..., -1:].expand(*c.shape[:-1], pad_frames // s)], dim=-1)
                for c, s in zip(codes, self.cfg.vq_strides, strict=True)
            ]
        z = self.quantizer.decode(codes)
        synthesize = getattr(self.decoder, "synthesize", None)
        if synthesize is None:
            return self.decoder(z), None
        return synthesize(z, phase0, anchor)
