"""Few-shot audio classification on a frozen LLM.

``icl``, ``--mode paper``: instruction + (audio tokens, label) demonstrations + query, as in
the paper; every label is scored after the query, never parsed, and the most likely wins; clips
are cropped to their first second as in the reference release. With SmolLM2-135M this is at
chance (2-way 1-shot ESC-10 fold 3: 55 %; with contextual calibration 48 %; ESC-10 folds 1-2,
whole clips, both demonstration orders averaged and calibrated: 52 %), because a small LLM
cannot tie a whole clip to the label written after it.

``icl``, ``--mode default`` (channel scoring, after Min et al. 2022, "Noisy Channel Language
Model Prompting"): one prompt per label, holding only that label's demonstrations in the paper's
format and then the query's audio tokens. What a small LLM does do in context is copy: where the
query repeats a demonstration's token patterns, it predicts the query's tokens better. A label's
evidence is how much its demonstrations raise the log-probability of each query token over a
prompt with no demonstrations, summed over tokens where they help (positive pointwise mutual
information); probabilities are a softmax over the evidence (nats, scaled by
``channel_temperature``). Whole clips by default.
2-way 1-shot, SmolLM2-135M: ESC-10 fold 3 72.5 % (280 queries) against 67.5 % for the plain
query likelihood and 62.9 % for first-second crops.

``prototype``: nearest class centroid of the frozen LLM's hidden states (0.6 depth) averaged
over each clip's audio tokens, centred on a base-set mean (``tasks/prototype.py``). Neither
method updates a parameter.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from uniaudio_cli.audio import AudioReader, as_mono, load_audio, open_audio
from uniaudio_cli.codec.api import Codec
from uniaudio_cli.decoding import (
    PrefixBatch,
    PrefixCache,
    continuation_logprobs,
    continuation_logprobs_batch,
    token_logprobs,
    token_logprobs_batch,
)
from uniaudio_cli.errors import AudioError, UniaudioError, UsageError
from uniaudio_cli.limits import TOO_LONG_FIX, context_overflow
from uniaudio_cli.llm import LoadedLLM
from uniaudio_cli.prompts import PromptBuilder, PromptTemplate
from uniaudio_cli.tasks.demos import crop_or_pad
from uniaudio_cli.tasks.options import ClassifyOptions, Layers, Method, Mode, default_crop
from uniaudio_cli.tasks.prototype import (
    acoustic_statistics,
    center_features,
    clip_features,
    depth_index,
    fused_feature,
    fused_upto,
    load_center,
    load_fused_stats,
)

__all__ = ["Classifier", "ClassifyOptions", "Layers", "Method", "Mode", "Prediction", "default_crop"]


@dataclass
class Prediction:
    """One query's answer: ``label``, a probability for every candidate label, and ``warnings``
    about the query that make the answer less trustworthy (too short, far longer than the
    demonstrations)."""

    path: str
    label: str
    probabilities: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    abstained: bool = False  # the top probability is below ``ClassifyOptions.abstain``; ``label`` is the best guess

    @property
    def probability(self) -> float:
        return self.probabilities[self.label]


def demonstration_prefix(
    builder: PromptBuilder,
    demo_tokens: dict[str, list[list[int]]],
    opts: ClassifyOptions,
    labels: Sequence[str] | None = None,
) -> list[int]:
    """bos + instruction (naming every label) + the demonstrations of ``labels`` (default: all;
    ``opts.repeats`` times, label order interleaved shot by shot) + the block separator."""
    b, t = builder, builder.template
    every = list(demo_tokens)
    labels = every if labels is None else labels
    ids = b.bos()
    if opts.induction:
        ids += b.induction(every)
    shots = max(len(demo_tokens[label]) for label in labels)
    block = b.text(t.block)
    for _ in range(opts.repeats):
        for k in range(shots):
            for label in labels:
                clips = demo_tokens[label]
                if k < len(clips):
                    ids += block + b.render(t.demo, audio={"audio": clips[k]}, answer=label)
    return ids + block


def layer_tokens(ids: Sequence[Sequence[int]], layers: Layers) -> list[int]:
    """Token ids per layer as the LLM reads them: layer 1, or layers 1-3 one after another."""
    return list(ids[0]) if layers == "semantic" else [t for layer in ids for t in layer]


def audio_tokens(codec: Codec, wav: np.ndarray, layers: Layers) -> list[int]:
    """A clip as the LLM reads it: layer-1 ids, or layers 1-3 one after another."""
    return layer_tokens(codec.encode(wav), layers)


# Fewer layer-1 tokens than this (about 0.25 s at 8.3 tokens/s) carry too little to judge.
MIN_QUERY_TOKENS = 2
# A query this many times longer than the longest demonstration is flagged.
LONG_QUERY_FACTOR = 4.0


def queries_per_batch(device: torch.device) -> int:
    """How many icl queries :meth:`Classifier.classify_tokens_many` puts in one batch by default.

    On a CPU a forward pass is compute-bound, so several queries in one pass cost what they cost
    one after another, plus a copy of the prompt caches per query (5-way 1-shot ESC-10, 5 s,
    SmolLM2-135M, one thread on a busy 2-core machine: 0.44 queries/s one at a time, 0.35 four
    at a time). An accelerator runs a larger batch in about the time of a small one (not yet
    measured: ``bench/classify_throughput.py --device cuda --per-batch N``).
    """
    return 1 if device.type == "cpu" else 8


def load_clip(path: str | Path, sample_rate: int, opts: ClassifyOptions) -> np.ndarray:
    """A clip as the classifier reads it: ``(T,)`` at ``sample_rate``, cropped as ``opts`` say."""
    wav = load_audio(path, sample_rate, max_seconds=opts.max_seconds)
    if opts.crop_seconds:
        wav = crop_or_pad(wav, round(float(opts.crop_seconds) * sample_rate), opts.crop_anchor)
    return wav


class Classifier:
    """Holds the encoded demonstrations and the prompt prefix; classifies queries one by one or,
    with :meth:`classify_tokens_many` and :meth:`classify_many`, several in one batch.

    Args:
        llm: the frozen LLM.
        codec: the LLM-Codec built on its vocabulary.
        demo_tokens: label -> one token list per demonstration clip, as :func:`audio_tokens`
            makes them (layer 1, or layers 1-3 per ``opts.token_layers``). :meth:`from_files` reads
            and encodes audio files into this.
        opts: prompt and decoding choices.
        batch: icl scores every label prompt (``--mode default``) or candidate (``--mode
            paper``) of a query, and :meth:`classify_tokens_many` several queries, in one
            batched forward pass; ``False``: one pass per prompt and candidate, one query at a
            time (the reference the batched path is tested against).

    The constructor reads no audio (only the prompt template and, for prototype and fused, the
    centre stored beside the codec); it builds the prompt caches (icl) or the class centroids
    (prototype), which is the one-off cost of a run.
    """

    def __init__(
        self,
        llm: LoadedLLM,
        codec: Codec,
        demo_tokens: dict[str, list[list[int]]],
        opts: ClassifyOptions,
        batch: bool = True,
        demo_acoustic: dict[str, list[np.ndarray]] | None = None,
    ) -> None:
        if len(demo_tokens) < 2:
            raise UsageError("classification needs at least two labels", "add label folders to --demos")
        empty = [label for label, clips in demo_tokens.items() if not clips]
        if empty:
            raise UsageError(f"label {empty[0]!r} has no demonstration clips", "add clips to its folder")
        self.llm, self.codec, self.opts = llm, codec, opts
        self.labels = list(demo_tokens)
        self.builder = PromptBuilder(llm.tokenizer, PromptTemplate.load(opts.template))
        self._demo_tokens = {label: [list(t) for t in clips] for label, clips in demo_tokens.items()}
        self.batch = batch
        if opts.method == "icl":
            self._prepare_icl()
        elif opts.method == "prototype":
            self._prepare_prototypes()
        else:
            if demo_acoustic is None or any(len(demo_acoustic.get(lb, [])) != len(c) for lb, c in demo_tokens.items()):
                raise UsageError(
                    "the fused method needs the acoustic statistics of every demonstration clip",
                    "build the classifier with Classifier.from_files, or pass demo_acoustic",
                )
            self._prepare_fused(demo_acoustic)

    @classmethod
    def from_files(
        cls,
        llm: LoadedLLM,
        codec: Codec,
        demos: dict[str, list[Path]],
        opts: ClassifyOptions,
        batch: bool = True,
    ) -> Classifier:
        """Read and encode the demonstration files (``label -> paths``), then build the classifier."""
        tokens: dict[str, list[list[int]]] = {}
        acoustic: dict[str, list[np.ndarray]] = {}
        for label, paths in demos.items():
            wavs = [load_clip(p, codec.sample_rate, opts) for p in paths]
            tokens[label] = [audio_tokens(codec, w, opts.token_layers) for w in wavs]
            if opts.method == "fused":
                acoustic[label] = [acoustic_statistics(w, codec.sample_rate) for w in wavs]
        fused = opts.method == "fused"
        return cls(llm, codec, tokens, opts, batch=batch, demo_acoustic=acoustic if fused else None)

    def load_clip(self, path: str | Path) -> np.ndarray:
        if not self.opts.crop_seconds:
            self._check_fits(path, self._open(path))
        return load_clip(path, self.codec.sample_rate, self.opts)

    def _open(self, path: str | Path) -> AudioReader:
        return open_audio(path, self.codec.sample_rate, max_seconds=self.opts.max_seconds)

    def _check_fits(self, path: str | Path, reader: AudioReader) -> None:
        """Refuse, from its header and before encoding it, a whole clip whose tokens alone
        would not fit the LLM's context (the exact count is checked again when it is read)."""
        rate = self.codec.tokens_per_second if self.opts.token_layers == "all" else self._layer1_rate
        overflow = context_overflow(reader.seconds, rate, self.llm.context_length)
        if overflow is not None:
            raise AudioError(f"{path}: {overflow}", TOO_LONG_FIX)

    def clip_tokens(self, path: str | Path) -> list[int]:
        """A file's tokens as the LLM reads them. An uncropped clip is streamed through the codec
        (audio memory stays one window whatever its length; the tokens are the same)."""
        if self.opts.crop_seconds:
            return audio_tokens(self.codec, self.load_clip(path), self.opts.token_layers)
        reader = self._open(path)
        self._check_fits(path, reader)
        return layer_tokens(self.codec.encode_blocks(reader.blocks())[0], self.opts.token_layers)

    # -- icl ---------------------------------------------------------------------------------
    def prefix_ids(self, labels: Sequence[str] | None = None) -> list[int]:
        """See :func:`demonstration_prefix` (``labels``: default all)."""
        return demonstration_prefix(self.builder, self._demo_tokens, self.opts, labels)

    def query_ids(self, tokens: Sequence[int]) -> list[int]:
        return self.builder.render(self.builder.template.query, audio={"audio": tokens})

    def _prefix(self, ids: list[int], source: str) -> PrefixCache:
        # When batching, these serve only the unbatched path, so their cache waits for first use.
        return PrefixCache(
            self.llm.model,
            ids,
            self.llm.device,
            self.llm.context_length,
            reuse=self.opts.reuse_prefix,
            source=source,
            lazy=self.batch,
        )

    def _prefix_batch(self, prefixes: Sequence[PrefixCache]) -> PrefixBatch:
        return PrefixBatch(
            self.llm.model,
            [p.prefix for p in prefixes],
            self.llm.device,
            self.llm.context_length,
            reuse=self.opts.reuse_prefix,
            sources=[p.source for p in prefixes],
        )

    def _prepare_icl(self) -> None:
        if self.opts.mode == "paper":
            self.prefix = self._prefix(self.prefix_ids(), "classification prompt")
            self.candidates = [self.builder.answer(label) for label in self.labels]
            if self.batch:
                self.batch_prefix = self._prefix_batch([self.prefix])
            return
        head = self.builder.head(self.builder.template.query)
        self.label_prefixes = [
            self._prefix(self.prefix_ids([label]) + head, f"classification prompt for {label!r}")
            for label in self.labels
        ]
        self.reference = self._prefix(self.builder.bos() + head, "classification reference prompt")
        if self.batch:
            # The reference first, as the unbatched path checks it first: the same prompt is
            # named when a query does not fit.
            self.batch_prefix = self._prefix_batch([self.reference, *self.label_prefixes])

    def _scores_icl(self, tokens: Sequence[int]) -> torch.Tensor:
        if self.opts.mode == "paper":
            return continuation_logprobs(self.prefix, self.query_ids(tokens), self.candidates)
        if not tokens:
            raise UsageError("a query with no audio tokens", "pass a clip of at least 0.1 s")
        base = token_logprobs(self.reference, tokens)
        evidence = [(token_logprobs(p, tokens) - base).clamp(min=0).sum() for p in self.label_prefixes]
        return torch.stack(evidence) / self.opts.channel_temperature

    def _scores_icl_batch(self, queries: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        """:meth:`_scores_icl` of each query, ``(L,)``, with all of them in one batch: ``Q``
        queries x (``L`` label prompts + the reference) rows in default mode, ``Q`` query rows
        then ``Q`` x multi-token candidate rows in paper mode."""
        if self.opts.mode == "paper":
            query_ids = [self.query_ids(t) for t in queries]
            return list(continuation_logprobs_batch(self.batch_prefix, query_ids, self.candidates))
        if not all(queries):
            raise UsageError("a query with no audio tokens", "pass a clip of at least 0.1 s")
        out = []
        for base, *labels in token_logprobs_batch(self.batch_prefix, queries):
            evidence = [(lp - base).clamp(min=0).sum() for lp in labels]
            out.append(torch.stack(evidence) / self.opts.channel_temperature)
        return out

    # -- prototype ---------------------------------------------------------------------------
    def _embed(self, tokens: Sequence[int], source: str = "clip") -> torch.Tensor:
        d = depth_index(int(self.llm.model.config.num_hidden_layers) + 1, self.opts.depth)
        feats = clip_features(self.llm, tokens, source or "clip", upto=d)
        return center_features(feats[d], None if self._center is None else self._center[d])

    def _prepare_prototypes(self) -> None:
        self._center = load_center(self.llm, self.codec) if self.opts.center else None
        cents = [torch.stack([self._embed(t) for t in self._demo_tokens[lb]]).mean(0) for lb in self.labels]
        self.centroids = torch.nn.functional.normalize(torch.stack(cents), dim=1)

    def _scores_prototype(self, tokens: Sequence[int], source: str = "clip") -> torch.Tensor:
        return self.centroids @ self._embed(tokens, source) / self.opts.softmax_temperature

    # -- fused -------------------------------------------------------------------------------
    def _fused(self, tokens: Sequence[int], acoustic: np.ndarray, source: str = "clip") -> torch.Tensor:
        states = clip_features(self.llm, tokens, source or "clip", pooling="meanstd", upto=fused_upto(self.llm))
        return fused_feature(states, acoustic, self._fused_stats)

    def _prepare_fused(self, demo_acoustic: dict[str, list[np.ndarray]]) -> None:
        self._fused_stats = load_fused_stats(self.llm, self.codec) if self.opts.center else None
        # Every demonstration stays its own reference: a label's score is its nearest clip's
        # similarity. With several shots this beat the class mean on the development splits,
        # most where a label's clips differ by speaker (bench/classify_methods.py).
        self.demo_features = [
            torch.stack([self._fused(t, a) for t, a in zip(self._demo_tokens[lb], demo_acoustic[lb], strict=True)])
            for lb in self.labels
        ]

    def _scores_fused(self, tokens: Sequence[int], acoustic: np.ndarray | None, source: str = "clip") -> torch.Tensor:
        if acoustic is None:
            raise UsageError(
                "the fused method needs each query's audio, not only its tokens",
                "use classify(path) or classify_audio(wav), or --method prototype",
            )
        if not tokens:
            raise UsageError("a query with no audio tokens", "pass a clip of at least 0.1 s")
        q = self._fused(tokens, acoustic, source)
        return torch.stack([(f @ q).max() for f in self.demo_features]) / self.opts.softmax_temperature

    # ----------------------------------------------------------------------------------------
    def query_warnings(self, tokens: Sequence[int]) -> list[str]:
        """Why an answer for a query of these tokens deserves less trust, if it does."""
        rate = self.codec.tokens_per_second if self.opts.token_layers == "all" else self._layer1_rate
        seconds = len(tokens) / rate
        longest = max(len(t) for clips in self._demo_tokens.values() for t in clips) / rate
        out = []
        if len(tokens) < MIN_QUERY_TOKENS:
            out.append(f"too short to judge ({seconds:.2f} s of audio)")
        if seconds > LONG_QUERY_FACTOR * longest and seconds > 5.0:
            out.append(
                f"{seconds:.0f} s long, the demonstrations at most {longest:.1f} s: "
                "a long clip may hold more than one sound; cut it into clips like the demonstrations"
            )
        return out

    @property
    def _layer1_rate(self) -> float:
        cfg = self.codec.model.cfg
        return cfg.frame_rate / cfg.vq_strides[0]

    def _scores(self, queries: Sequence[Sequence[int]], names: Sequence[str] | None = None) -> list[torch.Tensor]:
        """Label scores ``(L,)`` of each query, the icl ones in one batch when batching
        (``names``: the queries' files, for errors)."""
        names = list(names) if names is not None else ["clip"] * len(queries)
        if self.opts.method == "fused":
            return [self._scores_fused(t, None, n) for t, n in zip(queries, names, strict=True)]
        if self.opts.method == "prototype":
            return [self._scores_prototype(t, n) for t, n in zip(queries, names, strict=True)]
        if self.batch:
            return self._scores_icl_batch(queries)
        return [self._scores_icl(t) for t in queries]

    def classify_tokens(self, tokens: Sequence[int], path: str = "", acoustic: np.ndarray | None = None) -> Prediction:
        """Classify a query given as tokens (``--method fused`` also needs its ``acoustic``
        statistics ``(ACOUSTIC_DIM,)``, see :func:`uniaudio_cli.tasks.prototype.acoustic_statistics`)."""
        if self.opts.method == "fused":
            return self._predict(tokens, self._scores_fused(tokens, acoustic, path), path)
        return self._predict(tokens, self._scores([tokens], [path])[0], path)

    def classify_tokens_many(
        self, queries: Sequence[Sequence[int]], paths: Sequence[str] | None = None, per_batch: int | None = None
    ) -> list[Prediction]:
        """:meth:`classify_tokens` of each query (``paths``: their names), ``per_batch`` at a time
        in one batch (default: :func:`queries_per_batch`). The answers are those of one query
        at a time, up to float rounding."""
        names = list(paths) if paths is not None else [""] * len(queries)
        per_batch = per_batch or queries_per_batch(self.llm.device)
        scores = [
            s
            for i in range(0, len(queries), per_batch)
            for s in self._scores(queries[i : i + per_batch], names[i : i + per_batch])
        ]
        return [self._predict(t, s, n) for t, s, n in zip(queries, scores, names, strict=True)]

    def classify_many(self, paths: Sequence[str | Path], per_batch: int | None = None) -> list[Prediction]:
        """Classify audio files, ``per_batch`` in one batch (see :meth:`classify_tokens_many`)."""
        if self.opts.method == "fused":
            return [self.classify(p) for p in paths]
        return self.classify_tokens_many([self.clip_tokens(p) for p in paths], [str(p) for p in paths], per_batch)

    def _predict(self, tokens: Sequence[int], scores: torch.Tensor, path: str) -> Prediction:
        probs = torch.softmax(scores.float(), dim=0).tolist()
        best = int(np.argmax(probs))
        warnings = self.query_warnings(tokens)
        abstained = self.opts.abstain is not None and probs[best] < self.opts.abstain
        if abstained:
            warnings.append(f"unsure: the best label has probability {probs[best]:.2f} < {self.opts.abstain:g}")
        return Prediction(
            path,
            self.labels[best],
            {lb: float(p) for lb, p in zip(self.labels, probs, strict=True)},
            warnings,
            abstained,
        )

    def classify(self, path: str | Path) -> Prediction:
        """Classify one audio file."""
        if self.opts.method == "fused":
            return self.classify_audio(self.load_clip(path), str(path))
        return self.classify_tokens(self.clip_tokens(path), str(path))

    def classify_audio(self, wav: np.ndarray, name: str = "") -> Prediction:
        """Classify a clip already in memory: ``(T,)`` float at the codec's sample rate (not cropped)."""
        wav = as_mono(wav, name or "audio")
        tokens = audio_tokens(self.codec, wav, self.opts.token_layers)
        acoustic = acoustic_statistics(wav, self.codec.sample_rate) if self.opts.method == "fused" else None
        return self.classify_tokens(tokens, name, acoustic)


def classify_files(
    llm: LoadedLLM, codec: Codec, demos: dict[str, list[Path]], queries: Sequence[Path], opts: ClassifyOptions
) -> Iterator[Prediction | tuple[Path, UniaudioError]]:
    """Classify every query, :func:`queries_per_batch` in one batch; a bad query yields
    ``(path, error)`` and the run goes on."""
    clf = Classifier.from_files(llm, codec, demos, opts)
    if opts.method == "fused":
        for q in queries:
            try:
                yield clf.classify(q)
            except UniaudioError as e:
                yield q, e
        return
    per_batch = queries_per_batch(llm.device)
    for start in range(0, len(queries), per_batch):
        group = queries[start : start + per_batch]
        results: dict[int, Prediction | tuple[Path, UniaudioError]] = {}
        tokens: dict[int, list[int]] = {}
        for i, q in enumerate(group):
            try:
                tokens[i] = clf.clip_tokens(q)
            except UniaudioError as e:
                results[i] = (q, e)
        try:
            preds = clf.classify_tokens_many(list(tokens.values()), [str(group[i]) for i in tokens])
            results.update(zip(tokens, preds, strict=True))
        except UniaudioError:
            # One query's error (no tokens, too long) fails its batch before the LLM runs; one
            # at a time, it is handed back with that query alone.
            for i, t in tokens.items():
                try:
                    results[i] = clf.classify_tokens(t, str(group[i]))
                except UniaudioError as e:
                    results[i] = (group[i], e)
        yield from (results[i] for i in range(len(group)))
