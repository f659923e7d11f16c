"""Simple text-to-speech by in-context learning: "an audio of k" -> codec tokens of a spoken k.

``paper`` mode is the paper's protocol: the demonstrations, then the question, and the LLM
writes the audio tokens (constrained to the codec's layer structure so that any output
decodes). ``default`` mode makes this work for small frozen LLMs: the LLM first answers the
question in text (one of the demonstration texts, scored, never parsed), then writes the audio
of that answer with decoding steered by the demonstrations: it picks, by likelihood, the
demonstration token sequence of that answer that it finds most probable.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from uniaudio_cli.audio import load_audio
from uniaudio_cli.codec.api import Codec
from uniaudio_cli.decoding import PrefixCache, continuation_logprobs, generate_constrained
from uniaudio_cli.errors import UsageError
from uniaudio_cli.llm import LoadedLLM
from uniaudio_cli.prompts import PromptBuilder, PromptTemplate, prompts_dir
from uniaudio_cli.tasks.audio_gen import LayerMasks, flatten, split
from uniaudio_cli.tasks.options import Mode, TTSOptions, default_tts_demos

__all__ = ["Mode", "Speech", "Synthesizer", "TTSDemo", "TTSOptions", "default_tts_demos"]


@dataclass
class Speech:
    """One synthesised answer: ``audio`` ``(T,)`` at ``sample_rate`` and how it was made."""

    text: str
    audio: np.ndarray
    sample_rate: int
    answer: str | None  # the text answer chosen in default mode
    follows: str | None  # the demonstration (file) the tokens follow, when that can be told
    tokens: list[list[int]]


@dataclass
class TTSDemo:
    """One spoken demonstration: its ``text``, where it came from, and its codes per layer."""

    text: str
    path: Path
    tokens: list[list[int]]


class Synthesizer:
    """Builds both prompt prefixes once from encoded demonstrations; then speaks many texts.

    The constructor reads no files (:meth:`from_files` reads and encodes a demonstration folder).
    """

    def __init__(self, llm: LoadedLLM, codec: Codec, demos: Sequence[TTSDemo], opts: TTSOptions) -> None:
        self.llm, self.codec, self.opts = llm, codec, opts
        self.demos = list(demos)
        if not self.demos:
            raise UsageError("no TTS demonstrations", "pass --demos DIR with DIR/<text>/<clips>")
        self.texts = list(dict.fromkeys(d.text for d in self.demos))
        # Demonstrations of equal duration share one layer structure; the output uses the commonest.
        shapes = [tuple(len(layer) for layer in d.tokens) for d in self.demos]
        self.counts = list(max(set(shapes), key=shapes.count))
        self.builder = PromptBuilder(llm.tokenizer, PromptTemplate.load(opts.template))
        self.audio_prefix = PrefixCache(
            llm.model, self._audio_prefix_ids(), llm.device, llm.context_length, source="TTS prompt"
        )
        self.masks = LayerMasks(codec, self._logit_size(), llm.device)
        if opts.mode == "default":
            self.answer_builder = PromptBuilder(llm.tokenizer, PromptTemplate.load(opts.answer_template))
            self.answer_prefix = PrefixCache(
                llm.model, self._answer_prefix_ids(), llm.device, llm.context_length, source="TTS answer prompt"
            )
            self.answer_candidates = [self.answer_builder.answer(t) for t in self.texts]

    @classmethod
    def from_files(cls, llm: LoadedLLM, codec: Codec, demos: dict[str, list[Path]], opts: TTSOptions) -> Synthesizer:
        """Read and encode up to ``opts.shots`` clips per text (``text -> paths``)."""
        encoded = [
            TTSDemo(text, p, codec.encode(load_audio(p, codec.sample_rate, max_seconds=opts.max_seconds)))
            for text, paths in demos.items()
            for p in paths[: opts.shots]
        ]
        return cls(llm, codec, encoded, opts)

    def _logit_size(self) -> int:
        return int(self.llm.model.get_output_embeddings().weight.shape[0])

    def _audio_prefix_ids(self) -> list[int]:
        b, t = self.builder, self.builder.template
        ids = b.bos() + (b.render(t.induction) if self.opts.induction and t.induction else [])
        for d in self.demos:
            ids += b.text(t.block) + b.render(t.demo, audio={"audio": flatten(d.tokens)}, text=d.text)
        return ids

    def _answer_prefix_ids(self) -> list[int]:
        b, t = self.answer_builder, self.answer_builder.template
        examples = json.loads((prompts_dir() / "tts_answer_examples.json").read_text())["examples"]
        ids = b.bos() + b.render(t.induction)
        for question, answer in examples:
            if answer in self.texts:
                ids += b.render(t.demo, text=question, answer=answer)
        return ids

    def answer(self, text: str) -> str:
        """The demonstration text the LLM gives as the answer to ``text`` (default mode)."""
        query = self.answer_builder.render(self.answer_builder.template.query, text=text)
        scores = continuation_logprobs(self.answer_prefix, query, self.answer_candidates)
        return self.texts[int(torch.argmax(scores))]

    def speak(self, text: str) -> Speech:
        """Synthesise ``text`` (e.g. ``"1+1"``)."""
        if not text.strip():
            raise UsageError("empty text", 'pass a question or digit, e.g. uniaudio tts "1+1"')
        t = self.builder.template
        if self.opts.mode == "default":
            answer = self.answer(text)
            query = self.builder.render(t.query, text=answer)
            cands = [d for d in self.demos if d.text == answer]
            scores = continuation_logprobs(self.audio_prefix, query, [flatten(d.tokens) for d in cands])
            best = cands[int(torch.argmax(scores))]
            tokens, follows = best.tokens, f"{best.path} ({best.text!r})"
        else:
            answer = None
            query = self.builder.render(t.query, text=text)
            gen = torch.Generator().manual_seed(self.opts.seed)
            flat = generate_constrained(
                self.audio_prefix,
                query,
                self.masks.schedule(self.counts),
                temperature=self.opts.temperature,
                top_k=self.opts.top_k,
                generator=gen,
            )
            tokens = split(flat, self.counts)
            follows = self._closest_demo(tokens)
        audio = self.codec.decode(tokens)
        return Speech(text, audio, self.codec.sample_rate, answer, follows, tokens)

    def _closest_demo(self, tokens: Sequence[Sequence[int]]) -> str | None:
        """The demonstration sharing most layer-1 tokens with ``tokens`` position by position,
        if it shares at least half of them."""
        best, best_score = None, 0.0
        for d in self.demos:
            a, b = d.tokens[0], tokens[0]
            n = min(len(a), len(b))
            score = sum(x == y for x, y in zip(a[:n], b[:n], strict=True)) / max(len(b), 1)
            if score > best_score:
                best, best_score = d, score
        return f"{best.path} ({best.text!r})" if best is not None and best_score >= 0.5 else None
