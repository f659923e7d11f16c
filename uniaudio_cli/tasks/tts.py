"""Simple text-to-speech by in-context learning: "an audio of k" -> codec tokens of a spoken k.

``paper`` mode is the paper's protocol: the demonstrations, then the question, and the LLM
writes the audio tokens (constrained to the codec's layer structure so that any output
decodes). ``default`` mode makes this work for small frozen LLMs: the LLM first answers the
question in text (one of the demonstration texts, scored, never parsed), then speaks the codes
of one demonstration clip of that answer: the output is a codec copy of that clip. Of an answer's
clips it takes the one whose codec copy stays closest to the answer's other clips
(:func:`copy_atypicality`), so that a clip the codec bends towards another word is not spoken.

The text step (:class:`TextAnswerer`) is an ensemble of few-shot prompts, one per ordering of the
text examples (a small LLM's answer depends on the order of its demonstrations), each
calibrated by its answer prior on content-free questions such as "N/A" (contextual
calibration): the answer's probability is the ensemble's average of the calibrated
distributions over the demonstration texts. A text that is no question gets a flat distribution;
a question whose answer is no demonstration text (7 times 8) may favour one (the 5 of 56), but
the LLM would not end its answer there. Either way, below ``TTSOptions.min_answer_probability``
or ``min_answer_complete`` the answer gets a warning on its :class:`Speech`, or is refused
with ``refuse_unsure``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from uniaudio_cli.audio import load_audio
from uniaudio_cli.codec.api import Codec
from uniaudio_cli.decoding import PrefixCache, continuation_logprobs, generate_constrained
from uniaudio_cli.errors import UsageError
from uniaudio_cli.features import dtw_cost, mfcc
from uniaudio_cli.llm import LoadedLLM
from uniaudio_cli.prompts import AnswerExamples, PromptBuilder, PromptTemplate
from uniaudio_cli.tasks.audio_gen import LayerMasks, flatten, split
from uniaudio_cli.tasks.options import Mode, TTSOptions, default_tts_demos

if TYPE_CHECKING:
    from uniaudio_cli.prompt_store import PromptStore

# Prompt-store tag of the answer step's calibration priors.
PRIOR_TAG = "tts-answer-prior"

__all__ = [
    "AnswerExamples",
    "Mode",
    "Speech",
    "Synthesizer",
    "TTSDemo",
    "TTSOptions",
    "TextAnswer",
    "TextAnswerer",
    "copy_atypicality",
    "default_tts_demos",
]


@dataclass
class Speech:
    """One synthesised answer: ``audio`` ``(T,)`` at ``sample_rate`` and how it was made."""

    text: str
    audio: np.ndarray
    sample_rate: int
    answer: str | None  # the text answer chosen in default mode
    follows: str | None  # the demonstration (file) the tokens follow, when that can be told
    tokens: list[list[int]]
    answer_probability: float | None = None  # the text step's probability of ``answer``
    warning: str | None = None  # set when the text step is unsure of its answer


@dataclass
class TTSDemo:
    """One spoken demonstration: its ``text``, where it came from, its codes per layer and,
    when read from a file, its ``audio`` ``(T,)`` at the codec's rate (the default mode compares
    codec copies with it, :func:`copy_atypicality`; without it the LLM's likelihood chooses).

    ``tokens`` is ``None`` until the :class:`Synthesizer` needs them (it encodes ``audio`` then):
    the default mode encodes only the clips of the answers it speaks.
    """

    text: str
    path: Path
    tokens: list[list[int]] | None
    audio: np.ndarray | None = field(default=None, repr=False, compare=False)


def _mfcc(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mean-normalised MFCCs 2-20 ``(19, frames)`` at a 10 ms hop (level and channel removed)."""
    m = mfcc(wav, sample_rate, n_mfcc=20, n_fft=512, hop_length=sample_rate // 100)[1:]
    return m - m.mean(axis=1, keepdims=True)


def copy_atypicality(originals: Sequence[np.ndarray], copies: Sequence[np.ndarray], sample_rate: int) -> list[float]:
    """For each clip of one text, the mean DTW distance (MFCCs, per aligned frame) from its codec
    copy ``copies[i]`` ``(T_i,)`` to every *other* original ``originals[j]`` ``(T_j,)``.

    The smallest picks the copy that still sounds most like what the other speakers say: a copy
    the codec has bent towards another word lies far from all of them, whatever its own voice.
    With a single clip there is nothing to compare, and every value is 0.
    """
    if len(originals) != len(copies):
        raise ValueError("one copy per original")
    if len(originals) < 2:
        return [0.0] * len(originals)
    fo = [_mfcc(x, sample_rate) for x in originals]
    fc = [_mfcc(y, sample_rate) for y in copies]
    out = []
    for i, c in enumerate(fc):
        ds = [dtw_cost(c, o) / (c.shape[1] + o.shape[1]) for j, o in enumerate(fo) if j != i]
        out.append(float(np.mean(ds)))
    return out


@dataclass
class TextAnswer:
    """The text step's answer to one question."""

    answer: str
    probability: float  # calibrated ensemble probability of ``answer`` among the demonstration texts
    probabilities: dict[str, float] = field(default_factory=dict)  # of every demonstration text
    # Probability that the answer ends after ``answer`` as the demonstrations' answers do (a
    # "1" that should go on to "18" does not); None when the template puts nothing after answers.
    complete: float | None = None
    warning: str | None = None  # set when either probability is below the answerer's threshold


def _shared_head(candidates: Sequence[Sequence[int]]) -> list[int]:
    """The leading ids every candidate shares (e.g. the space before a digit)."""
    head: list[int] = []
    for ids in zip(*candidates, strict=False):
        if len(set(ids)) != 1:
            break
        head.append(ids[0])
    return head


def candidate_logprobs(prefix: PrefixCache, query: Sequence[int], candidates: Sequence[Sequence[int]]) -> torch.Tensor:
    """Log-probabilities ``(C,)`` of ``candidates`` after ``prefix + query``, up to a constant.

    Ids every candidate starts with are run once with the query instead of once per candidate
    (" 0" .. " 9" share the space: one forward pass instead of eleven); their log-probability is
    the same for every candidate, so it is left out, and only differences between candidates mean
    anything.
    """
    head = _shared_head(candidates)
    if head and all(len(c) > len(head) for c in candidates):
        return continuation_logprobs(prefix, [*query, *head], [c[len(head) :] for c in candidates])
    return continuation_logprobs(prefix, query, candidates)


class TextAnswerer:
    """Answers a question with one of ``texts`` by scoring each as the continuation of few-shot
    prompts; nothing is parsed, neither from the question nor from generated text.

    There is one prompt per ordering of the examples (``orderings``: the file's order, then
    seeded shuffles) and their calibrated distributions are averaged. Calibration divides a
    prompt's distribution by its mean distribution on the content-free questions, so that an
    answer the prompt favours whatever the question (a recent or frequent example's) wins only
    when the question itself supports it; a text the LLM cannot tie to any answer therefore gets
    a flat distribution and a low probability. A question whose answer is longer than a
    demonstration text (7 times 8) can still favour one (the 5 of 56) with confidence; what tells
    it apart is that the LLM would not end the answer there, so the answer also gets the
    probability of the end the demonstrations put after their answers. Examples whose answer is
    not one of ``texts`` are left out.
    """

    def __init__(
        self,
        llm: LoadedLLM,
        texts: Sequence[str],
        template: PromptTemplate,
        examples: AnswerExamples,
        orderings: int = 1,
        calibrate: bool = True,
        min_probability: float = 0.0,
        min_complete: float = 0.0,
    ) -> None:
        if orderings < 1:
            raise UsageError(f"answer orderings must be at least 1, not {orderings}", "pass 1 or more")
        self.texts = list(dict.fromkeys(texts))
        self.builder = PromptBuilder(llm.tokenizer, template)
        self.min_probability, self.min_complete = min_probability, min_complete
        self.candidates = [self.builder.answer(t) for t in self.texts]
        self.endings = [self._ending(t, c) for t, c in zip(self.texts, self.candidates, strict=True)]
        kept = [(q, a) for q, a in examples.examples if a in self.texts]
        self.prefixes = [
            PrefixCache(
                llm.model,
                self._prefix_ids(order),
                llm.device,
                llm.context_length,
                source="TTS answer prompt",
                store=llm.prompt_store,
                fix="use a shorter text: the question must fit the LLM's context beside the answer examples",
            )
            for order in self._orderings(kept, orderings)
        ]
        content_free = examples.content_free if calibrate else ()
        # Log answer prior (C,) per prompt; without calibration a zero prior leaves it uncorrected.
        self.log_priors = [self._log_prior(p, content_free, llm.prompt_store) for p in self.prefixes]

    def _log_prior(self, prefix: PrefixCache, content_free: Sequence[str], store: PromptStore | None) -> torch.Tensor:
        """The prompt's mean distribution on the content-free questions, log, ``(C,)``; kept in
        the prompt store (keyed by the prompt, the questions and the candidates) because it is
        the same on every run and costs one LLM pass per question."""
        if not content_free:
            return torch.zeros(len(self.texts))
        queries = [self.builder.render(self.builder.template.query, text=c) for c in content_free]
        # -1 cannot be a token id: it keeps the parts of the key apart.
        key = [*prefix.prefix, -1]
        for part in (*queries, [-2], *self.candidates):
            key += [*part, -1]
        stored = store.load_values(PRIOR_TAG, key) if store is not None else None
        if stored is not None and stored.shape == (len(self.texts),):
            return stored
        prior = torch.stack([self._log_distribution(prefix, c) for c in content_free]).exp().mean(0).log()
        if store is not None:
            store.save_values(PRIOR_TAG, key, prior)
        return prior

    def _ending(self, text: str, candidate: list[int]) -> list[int]:
        """Ids of what follows ``text`` in a demonstration, tokenized as they follow it there."""
        demo = self.builder.template.demo
        tail = demo.split("{answer}", 1)[1].split("{", 1)[0] if "{answer}" in demo else ""
        if not tail:
            return []
        ids = self.builder.text(self.builder.template.answer_prefix + text + tail)
        return ids[len(candidate) :] if ids[: len(candidate)] == candidate else self.builder.text(tail)

    @staticmethod
    def _orderings(examples: list[tuple[str, str]], n: int) -> list[list[tuple[str, str]]]:
        orders = [list(examples)]
        for seed in range(1, n):
            order = list(examples)
            random.Random(seed).shuffle(order)
            orders.append(order)
        return orders

    def _prefix_ids(self, examples: Sequence[tuple[str, str]]) -> list[int]:
        return self.builder.text_demos(examples)

    def _log_distribution(self, prefix: PrefixCache, text: str) -> torch.Tensor:
        query = self.builder.render(self.builder.template.query, text=text)
        return torch.log_softmax(candidate_logprobs(prefix, query, self.candidates), dim=0)

    def distributions(self, text: str) -> torch.Tensor:
        """Each prompt's calibrated log-distribution over the texts, ``(orderings, C)``."""
        return torch.stack(
            [
                torch.log_softmax(self._log_distribution(p, text) - prior, dim=0)
                for p, prior in zip(self.prefixes, self.log_priors, strict=True)
            ]
        )

    def completeness(self, text: str, index: int) -> float | None:
        """Mean over the prompts of the probability that the answer to ``text`` ends after text
        ``index`` (``None`` when the demonstrations put nothing after their answers)."""
        ending = self.endings[index]
        if not ending:
            return None
        query = [*self.builder.render(self.builder.template.query, text=text), *self.candidates[index]]
        return float(torch.cat([continuation_logprobs(p, query, [ending]) for p in self.prefixes]).exp().mean())

    def __call__(self, text: str) -> TextAnswer:
        probs = self.distributions(text).exp().mean(0)
        best = int(torch.argmax(probs))
        answer, p = self.texts[best], float(probs[best])
        complete = self.completeness(text, best)
        doubts = []
        if p < self.min_probability:
            doubts.append(f"probability {p:.2f} < {self.min_probability:.2f}")
        if complete is not None and complete < self.min_complete:
            doubts.append(f"the answer ends there with probability {complete:.2f} < {self.min_complete:.2f}")
        warning = None
        if doubts:
            warning = (
                f"unsure answer {answer!r} ({'; '.join(doubts)}): {text!r} may not be a question whose answer "
                f"is one of the demonstration texts {', '.join(self.texts)}"
            )
        probabilities = {t: float(q) for t, q in zip(self.texts, probs, strict=True)}
        return TextAnswer(answer, p, probabilities, complete, warning)


class Synthesizer:
    """Builds the prompt prefixes from demonstrations; then speaks many texts.

    The constructor reads no audio (:meth:`from_files` reads a demonstration folder). Paper mode
    encodes every demonstration and builds the audio prompt at once (so a prompt too long for the
    LLM's context fails here). The default mode needs neither: it encodes the clips of an answer
    when it first speaks that answer, and builds the audio prompt only for demonstrations given
    as codes without audio.
    """

    def __init__(self, llm: LoadedLLM, codec: Codec, demos: Sequence[TTSDemo], opts: TTSOptions) -> None:
        self.llm, self.codec, self.opts = llm, codec, opts
        self.demos = list(demos)
        if not self.demos:
            raise UsageError("no TTS demonstrations", "pass --demos DIR with DIR/<text>/<clips>")
        if any(d.tokens is None and d.audio is None for d in self.demos):
            raise ValueError("a TTSDemo needs its tokens or its audio")
        self.texts = list(dict.fromkeys(d.text for d in self.demos))
        self.builder = PromptBuilder(llm.tokenizer, PromptTemplate.load(opts.template))
        self._clip_choice: dict[str, TTSDemo] = {}
        if opts.mode == "paper":
            self.audio_prefix  # noqa: B018 -- built now: paper mode needs it for every text
            self.masks  # noqa: B018
        if opts.mode == "default":
            self.answerer = TextAnswerer(
                llm,
                self.texts,
                PromptTemplate.load(opts.answer_template),
                AnswerExamples.load(opts.answer_examples),
                orderings=opts.answer_orderings,
                calibrate=opts.calibrate,
                min_probability=opts.min_answer_probability,
                min_complete=opts.min_answer_complete,
            )

    @classmethod
    def from_files(cls, llm: LoadedLLM, codec: Codec, demos: dict[str, list[Path]], opts: TTSOptions) -> Synthesizer:
        """Read up to ``opts.shots`` clips per text (``text -> paths``); every clip is read (and so
        checked) here, and encoded when first needed."""
        read = []
        for text, paths in demos.items():
            for p in paths[: opts.shots]:
                wav = load_audio(p, codec.sample_rate, max_seconds=opts.max_seconds)
                read.append(TTSDemo(text, p, None, wav))
        return cls(llm, codec, read, opts)

    def tokens(self, demo: TTSDemo) -> list[list[int]]:
        """``demo``'s LLM token ids per layer, encoding its audio on first use."""
        if demo.tokens is None:
            demo.tokens = self.codec.encode(demo.audio)  # type: ignore[arg-type]  # the constructor checked it
        return demo.tokens

    @cached_property
    def counts(self) -> list[int]:
        """Codes per layer of paper mode's output: the commonest layer structure of the
        demonstrations (those of equal duration share one)."""
        shapes = [tuple(len(layer) for layer in self.tokens(d)) for d in self.demos]
        return list(max(set(shapes), key=shapes.count))

    @cached_property
    def audio_prefix(self) -> PrefixCache:
        """The KV cache of the audio prompt (every demonstration's text and codes), built on first use."""
        return PrefixCache(
            self.llm.model,
            self._audio_prefix_ids(),
            self.llm.device,
            self.llm.context_length,
            source="TTS prompt",
            store=self.llm.prompt_store,
            fix="use fewer --shots, shorter demonstration clips, or a shorter text",
        )

    @cached_property
    def masks(self) -> LayerMasks:
        """Allowed tokens per position of paper mode's output, built on first use."""
        return LayerMasks(self.codec, self._logit_size(), self.llm.device)

    def _logit_size(self) -> int:
        return int(self.llm.model.get_output_embeddings().weight.shape[0])

    def _audio_prefix_ids(self) -> list[int]:
        b, t = self.builder, self.builder.template
        ids = b.bos() + (b.render(t.induction) if self.opts.induction and t.induction else [])
        for d in self.demos:
            ids += b.text(t.block) + b.render(t.demo, audio={"audio": flatten(self.tokens(d))}, text=d.text)
        return ids

    def answer(self, text: str) -> TextAnswer:
        """The demonstration text the LLM gives as the answer to ``text``, with its probability
        (default mode)."""
        return self.answerer(text)

    def clip_for(self, answer: str) -> TTSDemo:
        """The demonstration clip of ``answer`` spoken in default mode: the one whose codec copy is
        least atypical of the answer's clips (:func:`copy_atypicality`), or, where the clips' audio
        is not at hand, the one the LLM finds likeliest after the audio prompt. The choice depends
        on the answer alone and is made once per answer."""
        if answer not in self._clip_choice:
            cands = [d for d in self.demos if d.text == answer]
            best = 0
            originals = [d.audio for d in cands if d.audio is not None]
            if len(cands) > 1 and len(originals) == len(cands):
                copies = [self.codec.decode(self.tokens(d))[: len(a)] for d, a in zip(cands, originals, strict=True)]
                best = int(np.argmin(copy_atypicality(originals, copies, self.codec.sample_rate)))
            elif len(cands) > 1:
                query = self.builder.render(self.builder.template.query, text=answer)
                scores = continuation_logprobs(self.audio_prefix, query, [flatten(self.tokens(d)) for d in cands])
                best = int(torch.argmax(scores))
            self._clip_choice[answer] = cands[best]
        return self._clip_choice[answer]

    def speak(self, text: str) -> Speech:
        """Synthesise ``text`` (e.g. ``"1+1"``)."""
        if not text.strip():
            raise UsageError("empty text", 'pass a question or digit, e.g. uniaudio tts "1+1"')
        t = self.builder.template
        probability: float | None = None
        warning: str | None = None
        if self.opts.mode == "default":
            reply = self.answer(text)
            answer, probability, warning = reply.answer, reply.probability, reply.warning
            if warning is not None and self.opts.refuse_unsure:
                fix = "ask a question whose answer is one of the demonstration texts, e.g. uniaudio tts '1+1'"
                raise UsageError(f"refused: {warning}", fix)
            best = self.clip_for(answer)
            tokens, follows = self.tokens(best), f"{best.path} ({best.text!r})"
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
        return Speech(text, audio, self.codec.sample_rate, answer, follows, tokens, probability, warning)

    def _closest_demo(self, tokens: Sequence[Sequence[int]]) -> str | None:
        """The demonstration sharing most layer-1 tokens with ``tokens`` position by position,
        if it shares at least half of them."""
        best, best_score = None, 0.0
        for d in self.demos:
            a, b = self.tokens(d)[0], tokens[0]
            n = min(len(a), len(b))
            score = sum(x == y for x, y in zip(a[:n], b[:n], strict=True)) / max(len(b), 1)
            if score > best_score:
                best, best_score = d, score
        return f"{best.path} ({best.text!r})" if best is not None and best_score >= 0.5 else None
