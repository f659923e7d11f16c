"""Speech denoising learnt from (noisy, clean) demonstration pairs.

``default`` mode (:class:`MaskDenoiser`, :mod:`uniaudio_cli.tasks.denoise_mask`) keeps the noisy
signal and applies a spectral mask looked up, frame by frame, in the demonstrations' ideal masks:
few-shot and training-free, and not capped by the codec's resynthesis.

``paper`` mode (:class:`TokenDenoiser`) is the paper's protocol: demonstration pairs (repeated),
then the noisy query, and the LLM writes the clean tokens. Generation is constrained to the
codec's layer structure with exactly the query's code counts, so the output has the input's
duration. Long inputs are encoded as a whole (in windows, streaming from the file), their codes
cut into segments of ``segment_seconds`` that each reuse the cached demonstration prefix, and
the written codes decoded as a whole (in windows, streaming to the output): no seams at segment
boundaries, and memory does not grow with the input's length.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from uniaudio_cli.audio import as_mono, load_audio, open_audio
from uniaudio_cli.codec.api import Codec
from uniaudio_cli.decoding import LookupDraft, PrefixCache, generate_constrained
from uniaudio_cli.errors import UsageError
from uniaudio_cli.llm import LoadedLLM
from uniaudio_cli.prompts import PromptBuilder, PromptTemplate
from uniaudio_cli.tasks.audio_gen import LayerMasks, flatten, split
from uniaudio_cli.tasks.options import (
    DemoPair,
    DenoiseOptions,
    Mode,
    default_denoise_demos,
    load_pair_folder,
    spread_pairs,
)

__all__ = [
    "DemoPair",
    "DenoiseOptions",
    "Denoiser",
    "MaskDenoiser",
    "Mode",
    "TokenDenoiser",
    "default_denoise_demos",
    "load_pair_folder",
]


class Denoiser:
    """Cleans noisy speech at the codec's rate; :meth:`from_pairs` builds the mode's denoiser.

    Subclasses implement :meth:`denoise_blocks`; files and whole arrays go through it.
    """

    codec: Codec
    opts: DenoiseOptions

    @classmethod
    def from_pairs(cls, llm: LoadedLLM, codec: Codec, pairs: list[DemoPair], opts: DenoiseOptions) -> Denoiser:
        """Read ``opts.pair_count`` of ``pairs`` (spread over the utterances) and build the
        denoiser of ``opts.mode``."""
        if not pairs:
            raise UsageError("no denoising demonstrations", "pass --demos DIR with DIR/<name>/clean.wav + noisy*.wav")
        chosen = spread_pairs(pairs, opts.pair_count(len(pairs)))
        audio = {
            p: load_audio(p, codec.sample_rate, max_seconds=opts.max_seconds)
            for p in {q for pair in chosen for q in (pair.noisy, pair.clean)}
        }
        if opts.mode == "paper":
            enc = {p: codec.encode(wav) for p, wav in audio.items()}
            return TokenDenoiser(llm, codec, [(enc[p.noisy], enc[p.clean]) for p in chosen], opts)
        for p in chosen:
            if len(audio[p.noisy]) != len(audio[p.clean]):
                raise UsageError(
                    f"{p.noisy}: {len(audio[p.noisy])} samples but its {p.clean.name} has {len(audio[p.clean])}",
                    "make each noisy file a noisy copy of its clean file, of the same length",
                )
        return MaskDenoiser(llm, codec, [(audio[p.noisy], audio[p.clean]) for p in chosen], opts)

    def denoise_blocks(self, blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Clean audio that arrives in consecutive ``(n,)`` blocks at the codec's rate; yields the
        clean audio in blocks (as many samples in all). Memory holds a window of audio and the
        tokens, never the whole signal."""
        raise NotImplementedError

    def denoise_wav(self, wav: np.ndarray) -> np.ndarray:
        """Clean ``(T,)`` float audio at the codec's rate; returns ``(T,)`` audio."""
        return np.concatenate(list(self.denoise_blocks([as_mono(wav)])))

    def stream(self, path: str | Path) -> Iterator[np.ndarray]:
        """Clean one audio file block by block: yields ``(n,)`` float32 blocks at the codec's rate
        that together are :meth:`denoise` of it. The file is checked at the call (missing,
        unreadable, too long) and read as the blocks are taken."""
        reader = open_audio(path, self.codec.sample_rate, max_seconds=self.opts.max_seconds)
        return self.denoise_blocks(reader.blocks())

    def denoise(self, path: str | Path) -> np.ndarray:
        """Clean one audio file; the output has its duration at the codec's rate."""
        return np.concatenate(list(self.stream(path)))


class MaskDenoiser(Denoiser):
    """Default mode: the noisy signal under a mask looked up in the demonstrations.

    Args:
        demos: ``(noisy, clean)`` audio pairs ``(T,)`` at the codec's rate; the constructor
            reads no audio (:meth:`Denoiser.from_pairs` does).
    """

    def __init__(
        self, llm: LoadedLLM, codec: Codec, demos: Sequence[tuple[np.ndarray, np.ndarray]], opts: DenoiseOptions
    ) -> None:
        from uniaudio_cli.tasks.denoise_mask import MaskEstimator

        self.llm, self.codec, self.opts = llm, codec, opts
        self.estimator = MaskEstimator(llm, codec, demos, opts.mask)

    def denoise_blocks(self, blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        return self.estimator.clean_blocks(blocks)


class TokenDenoiser(Denoiser):
    """Paper mode: caches the prompt prefix of encoded (noisy, clean) pairs once; then the LLM
    writes the clean tokens of each noisy input.

    Args:
        demos: ``(noisy token ids, clean token ids)`` per demonstration pair, per layer. The
            constructor reads no audio; :meth:`Denoiser.from_pairs` reads and encodes a pair folder.
    """

    def __init__(
        self,
        llm: LoadedLLM,
        codec: Codec,
        demos: Sequence[tuple[list[list[int]], list[list[int]]]],
        opts: DenoiseOptions,
    ) -> None:
        self.llm, self.codec, self.opts = llm, codec, opts
        self.builder = PromptBuilder(llm.tokenizer, PromptTemplate.load(opts.template))
        self.demos = list(demos)
        if not self.demos:
            raise UsageError("no denoising demonstrations", "pass --demos DIR with DIR/<name>/clean.wav + noisy*.wav")
        b, t = self.builder, self.builder.template
        ids = b.bos() + (b.render(t.induction) if opts.induction and t.induction else [])
        for _ in range(opts.repeats):
            for noisy, clean in self.demos:
                ids += b.text(t.block) + b.render(
                    t.demo, audio={"audio": flatten(noisy), "answer_audio": flatten(clean)}
                )
        self.prefix = PrefixCache(
            llm.model,
            ids + b.text(t.block),
            llm.device,
            llm.context_length,
            source="denoising prompt",
            store=llm.prompt_store,
            fix="use fewer --repeats or demonstration pairs, or shorter demonstration clips",
        )
        self.masks = LayerMasks(codec, int(llm.model.get_output_embeddings().weight.shape[0]), llm.device)
        self.last_tokens: list[list[int]] = []  # the written token ids of the last segment

    def _clean_segment(self, noisy: list[list[int]]) -> list[list[int]]:
        """Noisy token ids of one segment, per layer -> the clean token ids the LLM writes."""
        query = self.builder.render(self.builder.template.query, audio={"audio": flatten(noisy)})
        masks = self.masks.schedule([len(layer) for layer in noisy])
        # The model mostly repeats itself or copies runs of the demonstrations, so guesses looked
        # up in the prompt and the written tokens save most of the one-token passes.
        draft = LookupDraft(self.prefix.prefix + query)
        flat = generate_constrained(self.prefix, query, masks, draft=draft, draft_block=self.opts.draft_block)
        return split(flat, [len(layer) for layer in noisy])

    def denoise_blocks(self, blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Encode the blocks (streaming), write clean codes segment by segment, decode (streaming).

        Yields the cleaned audio block by block; :attr:`last_tokens` holds the written tokens of
        the last segment."""
        codec = self.codec
        cfg = codec.model.cfg
        strides = list(cfg.vq_strides)
        unit = cfg.pad_multiple
        seg = max(int(self.opts.segment_seconds * codec.sample_rate) // unit, 1) * unit // cfg.hop_length
        enc, dec = codec.stream_encoder(), codec.stream_decoder()
        pending: list[list[int]] = [[] for _ in strides]

        def segments(final: bool) -> Iterator[np.ndarray]:
            nonlocal pending
            while pending[0] and (final or len(pending[0]) * strides[0] >= seg):
                noisy = [layer[: seg // s] for layer, s in zip(pending, strides, strict=True)]
                pending = [layer[seg // s :] for layer, s in zip(pending, strides, strict=True)]
                self.last_tokens = self._clean_segment(codec.bridge.to_token_ids(noisy))
                yield from dec.push(codec.bridge.from_token_ids(self.last_tokens, "denoised tokens"))

        for block in blocks:
            for layer, new in zip(pending, enc.push(block), strict=True):
                layer += new
            yield from segments(final=False)
        if enc.num_samples == 0:
            raise UsageError("no audio to denoise", "pass a clip with audible sound")
        for layer, new in zip(pending, enc.finish(), strict=True):
            layer += new
        yield from segments(final=True)
        dec.length = enc.num_samples
        yield from dec.finish()
