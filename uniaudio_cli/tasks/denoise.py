"""Speech denoising by in-context learning: (noisy, clean) token pairs, then the noisy query.

The paper's protocol: demonstration pairs (repeated), then the noisy query, and the LLM writes
the clean tokens. Generation is constrained to the codec's layer structure with exactly the
query's code counts, so the output has the input's duration. Long inputs are encoded as a
whole (in windows, streaming from the file), their codes cut into segments of
``segment_seconds`` that each reuse the cached demonstration prefix, and the written codes
decoded as a whole (in windows, streaming to the output): no seams at segment boundaries, and
memory does not grow with the input's length.

``default`` mode steers a small LLM: at each position it may keep the noisy token or replace it
with a token that occurs in that layer of the clean demonstrations, with a prior towards
keeping it (``copy_bias``, in nats). ``paper`` mode lets it write any token of the layer.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from uniaudio_cli.audio import load_audio, open_audio
from uniaudio_cli.codec.api import Codec
from uniaudio_cli.decoding import LookupDraft, PrefixCache, allowed_mask, generate_constrained
from uniaudio_cli.errors import UsageError
from uniaudio_cli.llm import LoadedLLM
from uniaudio_cli.prompts import PromptBuilder, PromptTemplate
from uniaudio_cli.tasks.audio_gen import LayerMasks, flatten, split
from uniaudio_cli.tasks.options import DemoPair, DenoiseOptions, Mode, default_denoise_demos, load_pair_folder

__all__ = ["DemoPair", "DenoiseOptions", "Denoiser", "Mode", "default_denoise_demos", "load_pair_folder"]


def _spread(pairs: list[DemoPair], n: int) -> list[DemoPair]:
    """``n`` pairs, taking each clean utterance in turn so the demonstrations vary."""
    by_clean: dict[Path, list[DemoPair]] = {}
    for p in pairs:
        by_clean.setdefault(p.clean, []).append(p)
    groups = list(by_clean.values())
    out: list[DemoPair] = []
    i = 0
    while len(out) < min(n, len(pairs)):
        g = groups[i % len(groups)]
        k = i // len(groups)
        if k < len(g):
            out.append(g[k])
        i += 1
    return out


class Denoiser:
    """Caches the prompt prefix of encoded (noisy, clean) pairs once; then cleans many files.

    Args:
        demos: ``(noisy codes, clean codes)`` per demonstration pair, codes per layer. The
            constructor reads no files; :meth:`from_pairs` reads and encodes a pair folder.
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
        )
        vocab_size = int(llm.model.get_output_embeddings().weight.shape[0])
        self.vocab_size = vocab_size
        self.masks = LayerMasks(codec, vocab_size, llm.device)
        # Tokens each layer of the clean demonstrations uses: the default mode's replacements.
        self.clean_masks = [
            allowed_mask(vocab_size, sorted({tok for _, clean in self.demos for tok in clean[layer]}), llm.device)
            for layer in range(codec.bridge.num_layers)
        ]

    @classmethod
    def from_pairs(cls, llm: LoadedLLM, codec: Codec, pairs: list[DemoPair], opts: DenoiseOptions) -> Denoiser:
        """Read and encode ``opts.pairs`` of ``pairs`` (spread over the list)."""
        chosen = _spread(pairs, opts.pairs)
        enc = {}
        for p in {q for pair in chosen for q in (pair.noisy, pair.clean)}:
            enc[p] = codec.encode(load_audio(p, codec.sample_rate, max_seconds=opts.max_seconds))
        return cls(llm, codec, [(enc[p.noisy], enc[p.clean]) for p in chosen], opts)

    def _segment_schedule(self, noisy: list[list[int]]) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
        counts = [len(layer) for layer in noisy]
        if self.opts.mode == "paper":
            return self.masks.schedule(counts), [None] * sum(counts)
        masks, bias = [], []
        for layer, toks in enumerate(noisy):
            for tok in toks:
                m = self.clean_masks[layer].clone()
                m[tok] = True
                masks.append(m)
                b = torch.zeros(self.vocab_size, device=m.device)
                b[tok] = self.opts.copy_bias
                bias.append(b)
        return masks, bias

    def _clean_segment(self, noisy: list[list[int]]) -> list[list[int]]:
        """Noisy token ids of one segment, per layer -> the clean token ids the LLM writes."""
        query = self.builder.render(self.builder.template.query, audio={"audio": flatten(noisy)})
        masks, bias = self._segment_schedule(noisy)
        # The model mostly repeats itself or copies runs of the demonstrations, so guesses looked
        # up in the prompt and the written tokens save most of the one-token passes.
        draft = LookupDraft(self.prefix.prefix + query)
        flat = generate_constrained(
            self.prefix, query, masks, bias=bias, draft=draft, draft_block=self.opts.draft_block
        )
        return split(flat, [len(layer) for layer in noisy])

    def _clean(self, blocks: Iterable[np.ndarray]) -> Generator[np.ndarray, None, list[list[int]]]:
        """Encode the blocks (streaming), clean the codes segment by segment, decode (streaming).

        Yields the cleaned audio block by block; returns the written tokens of the last segment.
        """
        codec = self.codec
        cfg = codec.model.cfg
        strides = list(cfg.vq_strides)
        unit = cfg.pad_multiple
        seg = max(int(self.opts.segment_seconds * codec.sample_rate) // unit, 1) * unit // cfg.hop_length
        enc, dec = codec.stream_encoder(), codec.stream_decoder()
        pending: list[list[int]] = [[] for _ in strides]
        tokens: list[list[int]] = []

        def segments(final: bool) -> Iterator[np.ndarray]:
            nonlocal pending, tokens
            while pending[0] and (final or len(pending[0]) * strides[0] >= seg):
                noisy = [layer[: seg // s] for layer, s in zip(pending, strides, strict=True)]
                pending = [layer[seg // s :] for layer, s in zip(pending, strides, strict=True)]
                tokens = self._clean_segment(codec.bridge.to_token_ids(noisy))
                yield from dec.push(codec.bridge.from_token_ids(tokens, "denoised tokens"))

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
        return tokens

    def denoise_blocks(self, blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Clean audio that arrives in consecutive ``(n,)`` blocks at the codec's rate; yields the
        clean audio in blocks (as many samples in all). Memory holds a window of audio and the
        tokens, never the whole signal."""
        return self._clean(blocks)

    def denoise_wav(self, wav: np.ndarray) -> tuple[np.ndarray, list[list[int]]]:
        """Clean ``(T,)`` audio; returns ``(T,)`` audio and the written tokens of the last segment."""
        out: list[np.ndarray] = []
        gen = self._clean([np.asarray(wav, dtype=np.float32)])
        while True:
            try:
                out.append(next(gen))
            except StopIteration as stop:
                return np.concatenate(out), stop.value

    def stream(self, path: str | Path) -> Iterator[np.ndarray]:
        """Clean one audio file block by block: yields ``(n,)`` float32 blocks at the codec's rate
        that together are :meth:`denoise` of it. The file is checked at the call (missing,
        unreadable, too long) and read as the blocks are taken."""
        reader = open_audio(path, self.codec.sample_rate, max_seconds=self.opts.max_seconds)
        return self.denoise_blocks(reader.blocks())

    def denoise(self, path: str | Path) -> np.ndarray:
        """Clean one audio file; the output has its duration at the codec's rate."""
        return np.concatenate(list(self.stream(path)))
