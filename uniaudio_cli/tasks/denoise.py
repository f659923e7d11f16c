"""Speech denoising by in-context learning: (noisy, clean) token pairs, then the noisy query.

The paper's protocol: demonstration pairs (repeated), then the noisy query, and the LLM writes
the clean tokens. Generation is constrained to the codec's layer structure with exactly the
query's code counts, so the output has the input's duration. Long inputs are cut into
segments that each reuse the cached demonstration prefix.

``default`` mode steers a small LLM: at each position it may keep the noisy token or replace it
with a token that occurs in that layer of the clean demonstrations, with a prior towards
keeping it (``copy_bias``, in nats). ``paper`` mode lets it write any token of the layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from uniaudio_cli.audio import load_audio
from uniaudio_cli.codec.api import Codec
from uniaudio_cli.decoding import PrefixCache, allowed_mask, generate_constrained
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
            llm.model, ids + b.text(t.block), llm.device, llm.context_length, source="denoising prompt"
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

    def denoise_wav(self, wav: np.ndarray) -> tuple[np.ndarray, list[list[int]]]:
        """Clean ``(T,)`` audio; returns ``(T,)`` audio and the written tokens of the last segment."""
        sr = self.codec.sample_rate
        unit = self.codec.model.cfg.pad_multiple
        seg = max(int(self.opts.segment_seconds * sr) // unit, 1) * unit
        out = []
        tokens: list[list[int]] = []
        for start in range(0, len(wav), seg):
            piece = wav[start : start + seg]
            noisy = self.codec.encode(piece)
            query = self.builder.render(self.builder.template.query, audio={"audio": flatten(noisy)})
            masks, bias = self._segment_schedule(noisy)
            flat = generate_constrained(self.prefix, query, masks, bias=bias)
            tokens = split(flat, [len(layer) for layer in noisy])
            out.append(self.codec.decode(tokens, length=len(piece)))
        return np.concatenate(out)[: len(wav)], tokens

    def denoise(self, path: str | Path) -> np.ndarray:
        """Clean one audio file; the output has its duration at the codec's rate."""
        wav = load_audio(path, self.codec.sample_rate, max_seconds=self.opts.max_seconds)
        return self.denoise_wav(wav)[0]
