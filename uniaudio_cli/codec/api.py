"""The public codec object: audio in, LLM token ids out, and back."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from uniaudio_cli.audio import as_mono, open_audio
from uniaudio_cli.bridge import TokenBridge, codebook_tables
from uniaudio_cli.codec.checkpoint import WEIGHTS_FILE, build_codec, load_codec_weights, trainable_state_dict
from uniaudio_cli.codec.chunked import (
    DECODE_WINDOW_SECONDS,
    ENCODE_WINDOW_SECONDS,
    StreamingDecoder,
    StreamingEncoder,
)
from uniaudio_cli.codec.io import CodecIdentity, EncodedClip
from uniaudio_cli.codec.model import LLMCodec
from uniaudio_cli.errors import CheckpointError, CodecMismatchError, CodesFormatError
from uniaudio_cli.llm import load_vocabulary
from uniaudio_cli.paths import default_codec_path, file_sha256
from uniaudio_cli.runtime import resolve_device
from uniaudio_cli.vocab import Vocabulary

log = logging.getLogger(__name__)


def _state_sha256(model: LLMCodec, prefixes: tuple[str, ...] = ("",), salt: str = "") -> str:
    """SHA-256 over ``salt`` and a model's trainable tensors (names, dtypes, shapes, bytes) whose
    names start with one of ``prefixes``: the identity of a codec that was not loaded from a file."""
    h = hashlib.sha256(salt.encode())
    for name, t in sorted(trainable_state_dict(model).items()):
        if not name.startswith(prefixes):
            continue
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def codes_sha256(model: LLMCodec) -> str:
    """SHA-256 over the weights that decide a model's codes (encoder and quantizer), and the
    search rule when it is not the default: equal for two codecs exactly when they write the same
    codes (see :attr:`Codec.codes_sha256`)."""
    search = model.cfg.residual_search
    return _state_sha256(model, ("encoder.", "quantizer."), "" if search == "cosine" else f"residual_search:{search};")


@dataclass
class Codec:
    """A loaded LLM-Codec with its token bridge.

    ``encode`` returns, per layer, the LLM token ids of a clip (layer ``i`` has
    ``ceil(T / pad_multiple) * pad_multiple / hop / stride_i`` codes); ``decode`` inverts it.
    Both run in windows with context (:mod:`uniaudio_cli.codec.chunked`), so memory does not grow
    with the length and the result equals one whole pass; ``encode_file``/``encode_blocks`` and
    ``decode_blocks``/``decode_clip_blocks`` stream from and to files.
    """

    model: LLMCodec
    bridge: TokenBridge
    device: torch.device
    source: str
    vocabulary: Vocabulary | None = None
    weights_sha256: str | None = None
    """SHA-256 of the weights file, hashed at load (``None``: hashed on first use of :attr:`identity`)."""
    encode_window_seconds: float = ENCODE_WINDOW_SECONDS
    """Audio per encoding window (memory grows with it, not with the input's length)."""
    decode_window_seconds: float = DECODE_WINDOW_SECONDS
    """Audio per decoding window."""

    @cached_property
    def identity(self) -> CodecIdentity:
        """What encoded-codes files record to name this codec: the SHA-256 of its weights file
        (``model.safetensors`` or the published ``.pth``; of its tensors when not loaded from a
        file) and the fingerprint of the vocabulary it was built for. Computed once."""
        sha = self.weights_sha256
        if sha is None:
            src = Path(self.source)
            if src.is_file():
                sha = file_sha256(src)
            elif (src / WEIGHTS_FILE).is_file():
                sha = file_sha256(src / WEIGHTS_FILE)
            else:
                sha = _state_sha256(self.model)
            self.weights_sha256 = sha
        vocab = self.model.cfg.vocab.embedding_sha256 if self.model.cfg.vocab is not None else None
        return CodecIdentity(source=self.source, weights_sha256=sha, vocabulary=vocab)

    @cached_property
    def codes_sha256(self) -> str:
        """SHA-256 over the weights that decide the codes (encoder and quantizer), not the
        decoder's: what anything computed from codes alone, such as a prototype centre, depends
        on. A codec whose decoder alone was retrained keeps it."""
        return codes_sha256(self.model)

    @property
    def sample_rate(self) -> int:
        return self.model.sample_rate

    @property
    def tokens_per_second(self) -> float:
        return self.model.cfg.tokens_per_second

    def stream_encoder(self) -> StreamingEncoder:
        """A :class:`~uniaudio_cli.codec.chunked.StreamingEncoder` on this codec: push audio in
        blocks, get codebook indices window by window (``encode_window_seconds``)."""
        return StreamingEncoder(self.model, self.device, self.encode_window_seconds)

    def stream_decoder(self, length: int | None = None) -> StreamingDecoder:
        """A :class:`~uniaudio_cli.codec.chunked.StreamingDecoder` on this codec: push codebook
        indices, get samples window by window (``decode_window_seconds``), cropped to ``length``."""
        return StreamingDecoder(self.model, self.device, length, self.decode_window_seconds)

    def encode_codes(self, wav: np.ndarray | torch.Tensor) -> list[list[int]]:
        """Mono ``(T,)`` at ``sample_rate`` -> codebook indices per layer.

        Encoded in windows of ``encode_window_seconds`` with context (constant memory, equal to
        one whole pass; a shorter clip is one whole pass).
        """
        return self._encode_blocks([as_mono(wav)])[0]

    def _encode_blocks(self, blocks: Iterable[np.ndarray]) -> tuple[list[list[int]], int]:
        enc = self.stream_encoder()
        codes: list[list[int]] = [[] for _ in self.model.cfg.vq_strides]
        for block in blocks:
            for layer, new in zip(codes, enc.push(block), strict=True):
                layer += new
        for layer, new in zip(codes, enc.finish(), strict=True):
            layer += new
        return codes, enc.num_samples

    def encode(self, wav: np.ndarray | torch.Tensor) -> list[list[int]]:
        """Mono ``(T,)`` at ``sample_rate`` -> LLM token ids per layer."""
        return self.bridge.to_token_ids(self.encode_codes(wav))

    def encode_blocks(self, blocks: Iterable[np.ndarray]) -> tuple[list[list[int]], int]:
        """Mono audio at ``sample_rate`` in consecutive ``(n,)`` blocks -> (LLM token ids per layer,
        number of samples). Memory holds one window, never the whole signal; the ids equal
        :meth:`encode` of the concatenated blocks."""
        codes, n = self._encode_blocks(blocks)
        return self.bridge.to_token_ids(codes), n

    def _checked_codes(self, token_ids: list[list[int]], source: str) -> list[list[int]]:
        """Token ids -> codebook indices, refusing ids that are not codes and inconsistent layer lengths."""
        codes = self.bridge.from_token_ids(token_ids, source)
        strides = self.model.cfg.vq_strides
        frames = {len(c) * s for c, s in zip(codes, strides, strict=True)}
        if len(frames) != 1 or 0 in frames:
            counts = ", ".join(f"layer {i + 1}: {len(c)}" for i, c in enumerate(codes))
            raise CodesFormatError(
                f"{source}: code layers have inconsistent lengths ({counts}; strides {strides})",
                "pass codes written by `uniaudio encode --json` unchanged",
            )
        return codes

    def _decode_stream(self, codes: list[list[int]], length: int | None) -> Iterator[np.ndarray]:
        dec = self.stream_decoder(length)
        yield from dec.push(codes)
        yield from dec.finish()

    def decode_blocks(
        self, token_ids: list[list[int]], length: int | None = None, source: str = "codes"
    ) -> Iterator[np.ndarray]:
        """:meth:`decode`, as consecutive ``(n,)`` float32 blocks of ``decode_window_seconds``
        (constant memory: write them out as they come, e.g. with
        :func:`~uniaudio_cli.audio.write_audio_blocks`). The codes are checked at the call,
        before the first block."""
        return self._decode_stream(self._checked_codes(token_ids, source), length)

    def decode(self, token_ids: list[list[int]], length: int | None = None, source: str = "codes") -> np.ndarray:
        """LLM token ids per layer -> mono waveform ``(T,)``, cropped to ``length`` samples if given.

        Layers must have consistent lengths: layer ``i`` holds ``n * stride_0 / stride_i`` codes;
        ids that are not codes of their layer, or inconsistent lengths, raise :class:`CodesFormatError`.
        Long codes are decoded in windows (see :meth:`decode_blocks`) and equal one whole pass.
        """
        return np.concatenate(list(self.decode_blocks(token_ids, length, source)))

    def encode_file(self, path: str | Path, max_seconds: float | None = None) -> EncodedClip:
        """Read an audio file (any rate/channels soundfile reads) and encode it, recording this codec's identity.

        The file is read, resampled and encoded block by block: memory does not grow with its length.
        """
        reader = open_audio(path, self.sample_rate, max_seconds=max_seconds)
        ids, n = self.encode_blocks(reader.blocks())
        return EncodedClip(str(path), self.sample_rate, ids, n, self.identity)

    def check_codec(self, clip: EncodedClip, source: str = "codes") -> None:
        """Raise :class:`CodecMismatchError` unless this codec wrote ``clip`` (same weights and
        vocabulary, when the clip records its codec: every file :func:`~uniaudio_cli.codec.io.read_encoded`
        returns does) at this codec's sample rate."""
        theirs = clip.codec
        if theirs is not None and not theirs.same_codec(self.identity):
            mine = self.identity
            fix = f"decode with --codec {theirs.source} that encoded it, or re-encode the audio with this codec"
            if theirs.weights_sha256 != mine.weights_sha256:
                raise CodecMismatchError(
                    f"{source}: encoded by the codec {theirs.source} (weights {theirs.weights_sha256[:12]}), "
                    f"not by {self.source} (weights {mine.weights_sha256[:12]})",
                    fix,
                )
            raise CodecMismatchError(
                f"{source}: encoded by {theirs.source} for another LLM vocabulary "
                f"(fingerprint {str(theirs.vocabulary)[:12]}, this codec's: {str(mine.vocabulary)[:12]})",
                fix,
            )
        if clip.sample_rate != self.sample_rate:
            raise CodecMismatchError(
                f"{source}: codes are for {clip.sample_rate} Hz, this codec runs at {self.sample_rate} Hz",
                "decode with the codec that encoded them, or re-encode the audio with this codec",
            )

    def decode_clip_blocks(self, clip: EncodedClip, source: str = "codes") -> Iterator[np.ndarray]:
        """:meth:`decode_clip` as consecutive ``(n,)`` float32 blocks (constant memory); every
        check is made at the call, before the first block."""
        self.check_codec(clip, source)
        codes = self._checked_codes(clip.codes, source)
        if clip.num_samples is not None:
            cfg = self.model.cfg
            held = len(codes[0]) * cfg.vq_strides[0] * cfg.hop_length
            if not held - cfg.pad_multiple < clip.num_samples <= held:
                raise CodesFormatError(
                    f"{source}: num_samples {clip.num_samples} does not match its codes "
                    f"(they hold {held} samples, padded to a multiple of {cfg.pad_multiple})",
                    "pass codes written by `uniaudio encode --json` unchanged, or re-encode the audio",
                )
        return self._decode_stream(codes, clip.num_samples)

    def decode_clip(self, clip: EncodedClip, source: str = "codes") -> np.ndarray:
        """Decode an :class:`EncodedClip` to ``(T,)`` (cropped to its ``num_samples`` when known).

        Refuses (naming ``source``) codes of another codec (:meth:`check_codec`), token ids that
        are not codes of their layer, inconsistent layer lengths, and a ``num_samples`` its codes
        cannot have come from (:class:`CodesFormatError`).
        """
        return np.concatenate(list(self.decode_clip_blocks(clip, source)))

    def token_text(self, token_ids: list[list[int]]) -> list[str]:
        """One line of LLM text per layer (the "foreign language" view of a clip)."""
        return [" ".join(self.bridge.token_text(ids, layer)) for layer, ids in enumerate(token_ids)]


def load_codec(
    path: str | Path | None = None,
    llm: str | None = None,
    vocabulary: Vocabulary | None = None,
    device: str | torch.device | None = None,
) -> Codec:
    """Load a codec: ``None`` = the shipped default, a checkpoint folder, or a published ``.pth``.

    Our checkpoints rebuild their frozen codebooks from the LLM (``vocabulary``, else loaded
    from ``llm``, else the embedded default) and refuse a mismatched one.
    """
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    p = Path(path) if path is not None else default_codec_path()
    if path is None and not p.exists():
        raise CheckpointError(
            f"{p}: the default codec checkpoint is missing",
            "reinstall uniaudio, or pass --codec FOLDER or a published .pth file",
        )
    if p.suffix in (".pth", ".pt", ".ckpt"):
        return _load_published(p, llm, vocabulary, dev)
    cfg, sd = load_codec_weights(p)
    if cfg.vocab is None:
        raise CheckpointError(f"{p}: config.json records no vocabulary", "re-export the checkpoint with uniaudio")
    vocab = vocabulary or load_vocabulary(llm, full_tokenizer=False)
    tables, banned = codebook_tables(cfg.vocab, vocab, str(p))
    model = build_codec(cfg, sd, str(p))
    model.set_codebooks(tables, banned)
    bridge = TokenBridge(
        layer_token_ids=[list(cfg.vocab.layer1_token_ids), None, None],
        codebook_sizes=list(cfg.codebook_sizes),
        tokenizer=vocab.tokenizer,
        excluded=frozenset(cfg.vocab.excluded_token_ids),
    )
    model = model.to(dev)
    from uniaudio_cli.codec import table_cache

    if table_cache.enabled():
        from uniaudio_cli.paths import home_dir

        table_cache.load_tables(list(model.quantizer.quantizers), home_dir() / "codebook-cache")
    return Codec(model, bridge, dev, str(p), vocab, weights_sha256=file_sha256(p / WEIGHTS_FILE))


def _load_published(path: Path, llm: str | None, vocabulary: Vocabulary | None, dev: torch.device) -> Codec:
    from uniaudio_cli.codec.published_ckpt import load_published_state_dict

    cfg, sd = load_published_state_dict(path)
    model = LLMCodec(cfg)
    model.load_state_dict(sd, strict=True)
    model.eval()
    from uniaudio_cli.codec.published import set_noise

    # The decoder's NoiseBlocks draw Gaussian noise; a seeded generator keeps decoding repeatable.
    set_noise(model, enabled=True, generator=torch.Generator(device=dev).manual_seed(0))
    vocab = vocabulary
    if vocab is None and llm is not None:
        vocab = load_vocabulary(llm, full_tokenizer=False)
    if vocab is not None and (vocab.size, int(vocab.embeddings.shape[1])) != (
        cfg.codebook_sizes[1],
        cfg.codebook_dims[1],
    ):
        raise CheckpointError(
            f"{path}: codebooks are {cfg.codebook_sizes[1]} x {cfg.codebook_dims[1]}, "
            f"the LLM {vocab.name} has {vocab.size} x {vocab.embeddings.shape[1]}",
            "the published codec pairs with LLaMA 2 (e.g. --llm meta-llama/Llama-2-7b-hf)",
        )
    # Layer 1 is either the full LLaMA table (codes are token ids) or a 3,248-word list whose
    # words may span several tokens; then its codes stay word indices.
    full_layer1 = cfg.codebook_sizes[0] == cfg.codebook_sizes[1]
    bridge = TokenBridge(
        layer_token_ids=[None, None, None],
        codebook_sizes=list(cfg.codebook_sizes),
        tokenizer=vocab.tokenizer if vocab is not None else None,
        word_list_layer1=not full_layer1,
    )
    return Codec(model.to(dev), bridge, dev, str(path), vocab)
