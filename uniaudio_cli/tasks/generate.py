"""Text-to-sound by in-context learning: captions paired with the codec tokens of their clips,
then the query caption, and the frozen LLM writes the audio tokens.

The prompt (``prompts/generate_paper.json``) follows the paper's generation prompts::

    Instruction: Learn which sound each caption describes, then generate the audio for the last caption
    ### Input: <dog bark>
    Output:<layer-1 tokens><layer-2 tokens><layer-3 tokens of a dog-bark clip>
    ### Input: <rain>
    Output:<...>
    ...
    ### Input: <dog bark>
    Output:

Demonstrations are interleaved caption by caption, shot by shot, and cropped to a common short
length (their loudest part) so that the prompt fits the LLM's context. Generation is constrained
to the codec's layer structure (:mod:`uniaudio_cli.tasks.audio_gen`): exactly as many layer-1
words, then layer-2 and layer-3 tokens, as the requested length needs, so any output decodes to a
waveform of exactly that length.

``paper`` mode lets the LLM write any code of each layer. ``default`` mode, for small LLMs, first
matches the query caption to a demonstration caption (the same words, else the one the frozen
LLM finds likeliest as a rewording of it, calibrated by each caption's prior) and then lets the
LLM write only the codes that that caption's demonstrations use in each layer: the LLM still
chooses, from the whole prompt, which of them to write and in which order, but cannot write the
codes of another class. Without that restriction SmolLM2-135M wrote clips that copied one
class's patterns whatever the caption.

What to expect: this is not a text-to-audio model. A small frozen LLM (SmolLM2-135M) does not
learn from a few demonstrations what a caption sounds like. In ``paper`` mode it mostly writes
runs of a few layer-1 words associated with the text it read (``ocean ocean ocean ...``), which
decode to a steady texture; in ``default`` mode it recombines the codes of the matched caption's
demonstrations. :class:`Sound` says which caption steered it, which demonstration it follows and
how much of its token patterns come from it; ``uniaudio eval generate`` measures whether the
outputs are heard as their class, beside copying a demonstration outright (figures:
``docs/generate.md``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch

from uniaudio_cli.audio import load_audio
from uniaudio_cli.codec.api import Codec
from uniaudio_cli.decoding import PrefixCache, allowed_mask, continuation_logprobs, generate_constrained
from uniaudio_cli.errors import PromptTooLongError, UsageError
from uniaudio_cli.llm import LoadedLLM
from uniaudio_cli.prompts import PromptBuilder, PromptTemplate
from uniaudio_cli.tasks.audio_gen import LayerMasks, flatten, split
from uniaudio_cli.tasks.demos import crop_or_pad, load_demo_folder
from uniaudio_cli.tasks.options import GenerateOptions, Mode, caption_of

_MATCH_LEAD = "A sound is described as: "

__all__ = ["GenerateOptions", "Mode", "Sound", "SoundDemo", "SoundGenerator", "caption_of", "code_counts"]


def code_counts(codec: Codec, num_samples: int) -> list[int]:
    """Codes per layer of ``num_samples`` of audio, as :meth:`Codec.encode` makes them (the input
    is padded to whole units of ``pad_multiple`` samples)."""
    cfg = codec.model.cfg
    units = max(1, math.ceil(num_samples / cfg.pad_multiple))
    return [units * cfg.pad_multiple // cfg.hop_length // s for s in cfg.vq_strides]


def load_demo_clip(path: str | Path, sample_rate: int, opts: GenerateOptions) -> np.ndarray:
    """A demonstration clip as the prompt holds it: ``(T,)`` at ``sample_rate``, its loudest
    ``opts.crop`` seconds (zero-padded when shorter)."""
    wav = load_audio(path, sample_rate, max_seconds=opts.max_seconds)
    if opts.crop:
        wav = crop_or_pad(wav, round(opts.crop * sample_rate), "loudest")
    return wav


@dataclass
class SoundDemo:
    """One demonstration: its ``caption``, its codes per layer, its length in samples (at the
    codec's rate), and the file it came from when known."""

    caption: str
    tokens: list[list[int]]
    num_samples: int
    path: Path | None = None

    @property
    def name(self) -> str:
        return f"{self.path} ({self.caption!r})" if self.path is not None else repr(self.caption)


@dataclass
class Sound:
    """One generated clip: ``audio`` ``(T,)`` float32 at ``sample_rate``, its codes per layer,
    and how it relates to the demonstrations: ``follows``, the demonstration it copies most, and
    ``copied``, the share of the clip's token pairs (two codes in a row within a layer, over all
    layers) that occur in that demonstration's same layer (1.0: every step of it is copied).
    In default mode ``steered_by`` is the demonstration caption whose codes it was written
    from, and ``match_probability`` the LLM's probability that the query caption means it
    (1.0: the same words)."""

    caption: str
    audio: np.ndarray
    sample_rate: int
    tokens: list[list[int]]
    follows: SoundDemo
    copied: float
    seed: int
    steered_by: str | None = None
    match_probability: float | None = None


class SoundGenerator:
    """Caches the prompt prefix of the encoded demonstrations once; then generates clips for
    many captions.

    Args:
        llm: the frozen LLM.
        codec: the LLM-Codec built on its vocabulary.
        demos: encoded demonstrations; the constructor reads no audio (:meth:`from_files` reads,
            crops and encodes a folder ``DIR/<caption>/<clips>``).
        opts: length, sampling and prompt choices.

    Raises :class:`PromptTooLongError` when the demonstrations plus the clip to write do not fit
    the LLM's context, before the LLM runs.
    """

    def __init__(self, llm: LoadedLLM, codec: Codec, demos: Sequence[SoundDemo], opts: GenerateOptions) -> None:
        self.llm, self.codec, self.opts = llm, codec, opts
        self.demos = list(demos)
        if not self.demos:
            raise UsageError("no text-to-sound demonstrations", "pass --demos DIR with DIR/<caption>/<clips>")
        empty = [d for d in self.demos if not d.tokens or not d.tokens[0]]
        if empty:
            raise UsageError(f"demonstration {empty[0].name} has no audio tokens", "use clips of at least 0.1 s")
        self.captions = list(dict.fromkeys(d.caption for d in self.demos))
        sr = codec.sample_rate
        if opts.seconds is None:
            self.num_samples = Counter(d.num_samples for d in self.demos).most_common(1)[0][0]
        else:
            self.num_samples = round(opts.seconds * sr)
        self.counts = code_counts(codec, self.num_samples)
        self.builder = PromptBuilder(llm.tokenizer, PromptTemplate.load(opts.template))
        ids = self.prefix_ids()
        # The longest query: the empty caption's, after the longest recall of one caption's demos.
        recall = max((len(self._recall_ids(c)) for c in self.captions), default=0)
        self._check_length(len(ids) + recall + len(self.builder.render(self.builder.template.query, text="")))
        self.prefix = PrefixCache(
            llm.model, ids, llm.device, llm.context_length, source="text-to-sound prompt", store=llm.prompt_store
        )
        vocab_size = int(llm.model.get_output_embeddings().weight.shape[0])
        masks = LayerMasks(codec, vocab_size, llm.device).masks
        self.schedule = [masks[layer] for layer, n in enumerate(self.counts) for _ in range(n)]
        # Default mode: per caption, the codes its demonstrations use in each layer (intersected
        # with the layer's codes: demonstrations made in memory may hold any id).
        self.caption_schedules: dict[str, list[torch.Tensor]] = {}
        for c in self.captions if opts.mode == "default" else []:
            own = [d for d in self.demos if d.caption == c]
            cmasks = [
                m & allowed_mask(vocab_size, sorted({t for d in own for t in d.tokens[layer]}), llm.device)
                for layer, m in enumerate(masks)
            ]
            self.caption_schedules[c] = [cmasks[layer] for layer, n in enumerate(self.counts) for _ in range(n)]
        self._match_prefix: PrefixCache | None = None
        self._caption_priors: torch.Tensor | None = None  # scores after an empty description

    @classmethod
    def from_files(
        cls,
        llm: LoadedLLM,
        codec: Codec,
        demos: str | Path | Mapping[str, Sequence[str | Path]],
        opts: GenerateOptions,
    ) -> SoundGenerator:
        """Read, crop and encode the first ``opts.shots`` clips of each caption: ``demos`` is a
        folder ``DIR/<caption>/<clips>`` or ``{caption: [paths]}``; ``_`` in a caption reads as
        a space (folder ``dog_bark`` -> caption ``dog bark``)."""
        clips = load_demo_folder(demos, min_labels=1).clips if isinstance(demos, str | Path) else demos
        encoded = []
        for name, paths in clips.items():
            for p in list(paths)[: opts.shots]:
                wav = load_demo_clip(p, codec.sample_rate, opts)
                encoded.append(SoundDemo(caption_of(name), codec.encode(wav), len(wav), Path(p)))
        return cls(llm, codec, encoded, opts)

    @property
    def seconds(self) -> float:
        """Length of every generated clip."""
        return self.num_samples / self.codec.sample_rate

    def ordered_demos(self) -> list[SoundDemo]:
        """The demonstrations in prompt order: one of each caption in turn, shot by shot, so that
        no caption has all the demonstrations nearest the query."""
        by_caption = {c: [d for d in self.demos if d.caption == c] for c in self.captions}
        shots = max(len(v) for v in by_caption.values())
        return [by_caption[c][k] for k in range(shots) for c in self.captions if k < len(by_caption[c])]

    def prefix_ids(self) -> list[int]:
        """bos + instruction + every demonstration + the block separator before the query."""
        b, t = self.builder, self.builder.template
        ids = b.bos() + (b.render(t.induction) if self.opts.induction and t.induction else [])
        for d in self.ordered_demos():
            ids += b.text(t.block) + self._demo_ids(d)
        return ids + b.text(t.block)

    def _demo_ids(self, d: SoundDemo) -> list[int]:
        """One demonstration as the prompt shows it: its caption and its audio tokens."""
        return self.builder.render(self.builder.template.demo, audio={"audio": flatten(d.tokens)}, text=d.caption)

    def _recall_ids(self, caption: str) -> list[int]:
        """Default mode with ``recall``: ``caption``'s demonstrations again, put before the query
        (where a small LLM looks most); empty otherwise."""
        if self.opts.mode != "default" or not self.opts.recall:
            return []
        block = self.builder.text(self.builder.template.block)
        return [i for d in self.demos if d.caption == caption for i in self._demo_ids(d) + block]

    def _check_length(self, prompt_tokens: int) -> None:
        """Refuse a prompt that, with the clip to write, does not fit the LLM's context."""
        n = prompt_tokens + sum(self.counts)
        ctx = self.llm.context_length
        if n > ctx:
            per_demo = sum(len(flatten(d.tokens)) for d in self.demos) / len(self.demos)
            raise PromptTooLongError(
                f"text-to-sound prompt: {len(self.demos)} demonstrations of {per_demo:.0f} tokens and "
                f"{sum(self.counts)} tokens to write ({self.seconds:g} s) make {n}, more than the LLM's "
                f"context of {ctx}",
                "use fewer --shots or captions in --demos, a shorter --crop or --seconds, "
                "or an LLM with a longer context",
            )

    def match_caption(self, caption: str) -> tuple[str, float]:
        """The demonstration caption ``caption`` names, and the LLM's probability of that match.

        The same words (case and ``_`` aside) match with probability 1.0. Otherwise the frozen
        LLM reads ``caption`` as the description of a sound and scores each demonstration caption
        as another description of it; each score is calibrated by the caption's own prior (the
        same prompt with an empty description), so that short or common captions do not win
        by default, and the softmax of the calibrated scores gives the probability.
        """
        wanted = caption_of(caption).lower()
        for c in self.captions:
            if caption_of(c).lower() == wanted:
                return c, 1.0
        if self._caption_priors is None:
            self._caption_priors = self._caption_scores("")
        scores = self._caption_scores(wanted) - self._caption_priors
        probs = torch.softmax(scores, dim=0)
        best = int(probs.argmax())
        return self.captions[best], float(probs[best])

    def _caption_scores(self, description: str) -> torch.Tensor:
        """``(C,)`` log-probability of each demonstration caption as a rewording of ``description``."""
        if self._match_prefix is None:
            self._match_prefix = PrefixCache(
                self.llm.model,
                self.builder.bos() + self.builder.text(_MATCH_LEAD),
                self.llm.device,
                self.llm.context_length,
                source="caption matching prompt",
                fix="use a shorter caption",
            )
        query = self.builder.text(f'"{description}"\nThe same sound in other words: "')
        candidates = [self.builder.text(f'{c}"') for c in self.captions]
        return continuation_logprobs(self._match_prefix, query, candidates)

    def generate(self, caption: str, seed: int | None = None) -> Sound:
        """Generate a clip of :attr:`seconds` for ``caption``; ``seed`` (default: the options')
        seeds the sampling, so a caption and a seed always give the same clip."""
        if not caption.strip():
            raise UsageError("empty caption", 'pass a caption, e.g. uniaudio generate "dog bark" --demos DIR')
        b, t = self.builder, self.builder.template
        query = b.render(t.query, text=caption)
        seed = self.opts.seed if seed is None else seed
        steered_by, probability, schedule = None, None, self.schedule
        if self.opts.mode == "default":
            steered_by, probability = self.match_caption(caption)
            schedule = self.caption_schedules[steered_by]
            query = self._recall_ids(steered_by) + query
        self._check_length(len(self.prefix.prefix) + len(query))
        flat = generate_constrained(
            self.prefix,
            query,
            schedule,
            temperature=self.opts.temperature,
            top_k=self.opts.top_k,
            generator=torch.Generator().manual_seed(seed),
        )
        tokens = split(flat, self.counts)
        audio = self.codec.decode(tokens, self.num_samples, source="generated tokens")
        follows, copied = self.closest_demo(tokens)
        return Sound(caption, audio, self.codec.sample_rate, tokens, follows, copied, seed, steered_by, probability)

    def closest_demo(self, tokens: Sequence[Sequence[int]]) -> tuple[SoundDemo, float]:
        """The demonstration whose token pairs ``tokens`` repeats most (see :class:`Sound`), and
        the share of ``tokens``' pairs found in it; ties go to the earlier demonstration."""
        made = [list(pairwise(layer)) for layer in tokens]
        total = max(sum(len(m) for m in made), 1)

        def shared(d: SoundDemo) -> float:
            own = [set(pairwise(layer)) for layer in d.tokens]
            return sum(p in own[i] for i, m in enumerate(made) for p in m) / total

        best = max(self.demos, key=shared)
        return best, shared(best)
