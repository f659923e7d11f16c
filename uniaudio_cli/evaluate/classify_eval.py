"""Few-shot classification accuracy over seeded N-way K-shot episodes, with baselines.

An episode draws N labels of a labelled folder (``DIR/<label>/<clips>``), K demonstration clips
per label and Q query clips spread evenly over the N labels, disjoint from the demonstrations.
Draws depend only on ``(seed, N, episode index)``: per label the clips are shuffled once, the
demonstrations are taken from the front and the queries from the back, so the 1-shot demos
are among the 3-shot demos and every setting of a grid (induction, repeats, layers, shots)
sees the same queries. One :class:`~uniaudio_cli.tasks.classify.Classifier` is built per
episode (its demonstrations are encoded and its prompt prefix cached once for the episode's
queries); codec encodings of clips are shared across the settings of a run.

Baselines on the same episodes and the same crop: chance (1/N), an empirical random guess
(seeded, per query), and MFCC nearest neighbour (librosa MFCC 1-19 mean and standard deviation
over time, cosine 1-NN to the demonstrations). Accuracy is the mean over episodes with a 95 %
percentile-bootstrap interval, plus a Wilson interval over all queries pooled.

Each finished episode is appended to a JSON Lines file (see :mod:`uniaudio_cli.evaluate.store`)
so an interrupted run resumes where it stopped. Under a distributed launcher the episodes are
split over the processes (:mod:`uniaudio_cli.evaluate.parallel`), with the same results.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from uniaudio_cli.errors import UsageError
from uniaudio_cli.evaluate.codec_eval import Summary, bootstrap_interval
from uniaudio_cli.evaluate.report import Column, Report, Table, run_metadata
from uniaudio_cli.evaluate.store import (
    announce_resume,
    default_results_path,
    file_fingerprint,
    relative_name,
    wilson_interval,
)
from uniaudio_cli.tasks.options import ClassifyOptions, Layers, Method, Mode

if TYPE_CHECKING:
    from uniaudio_cli.codec.api import Codec
    from uniaudio_cli.evaluate.parallel import Workers
    from uniaudio_cli.llm import LoadedLLM
    from uniaudio_cli.tasks.demos import DemoFolder

PAPER_WAYS = (2, 3, 4, 5, 6)


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class EpisodeConfig:
    """One evaluated setting (the options of ``uniaudio classify`` plus the number of ways)."""

    ways: int = 2
    shots: int = 1
    repeats: int = 1
    induction: bool = True
    layers: Layers = "semantic"
    method: Method = "fused"
    mode: Mode = "default"
    crop: float | None = 1.0
    center: bool = True

    def __post_init__(self) -> None:
        if self.method == "fused" and self.layers != "all":
            object.__setattr__(self, "layers", "all")  # fused reads all three layers (frozen dataclass)
        if self.ways < 2:
            raise UsageError(f"--ways {self.ways}: at least 2 labels are needed", "use --ways 2 or more")
        if self.shots < 1 or self.repeats < 1:
            raise UsageError("--shots and --repeats must be at least 1", "use --shots 1 --repeats 1")

    @property
    def key(self) -> str:
        crop = "whole" if not self.crop else f"{self.crop:g}s"
        return (
            f"{self.ways}way-{self.shots}shot-x{self.repeats}-{'ind' if self.induction else 'noind'}-"
            f"{self.layers}-{self.method}-{self.mode}-crop{crop}"
            + ("-nocenter" if self.method != "icl" and not self.center else "")
        )

    @property
    def setting(self) -> str:
        """The paper's column names: "induction 1-shot x2 repeats"."""
        text = f"{'induction' if self.induction else 'no induction'} {self.shots}-shot"
        return text + (f" x{self.repeats} repeats" if self.repeats > 1 else "")

    @property
    def label(self) -> str:
        """Method, mode and crop in words: "icl (default mode, whole clips)"."""
        crop = "whole clips" if not self.crop else f"{self.crop:g} s crops"
        uncentred = ", uncentred" if self.method != "icl" and not self.center else ""
        return f"{self.method} ({self.mode} mode, {crop}{uncentred})"

    @property
    def crop_mode(self) -> str:
        return self.options().crop_anchor

    def options(self) -> ClassifyOptions:
        return ClassifyOptions(
            method=self.method,
            mode=self.mode,
            shots=self.shots,
            repeats=self.repeats,
            layers=self.layers,
            induction=self.induction,
            crop=self.crop or None,
            center=self.center,
        )


def paper_grid(base: EpisodeConfig) -> list[EpisodeConfig]:
    """Table 2 of the paper: for the semantic layer and for all layers, the columns no induction
    1-shot / induction 1-shot / induction 3-shot / induction 1-shot x2 / induction 1-shot x3."""
    from dataclasses import replace

    columns = [(False, 1, 1), (True, 1, 1), (True, 3, 1), (True, 1, 2), (True, 1, 3)]
    return [
        replace(base, layers=layers, induction=ind, shots=shots, repeats=rep)  # type: ignore[arg-type]
        for layers in ("semantic", "all")
        for ind, shots, rep in columns
    ]


def ways_grid(base: EpisodeConfig, ways: Sequence[int] = PAPER_WAYS) -> list[EpisodeConfig]:
    """Table 9 of the paper: N-way 1-shot (the base's other options) for N = 2..6."""
    from dataclasses import replace

    return [replace(base, ways=n) for n in ways]


# --------------------------------------------------------------------------- episodes


@dataclass
class Episode:
    """One draw: ``labels`` in prompt order, ``demos`` per label, ``queries`` as (path, label)."""

    index: int
    labels: list[str]
    demos: dict[str, list[Path]]
    queries: list[tuple[Path, str]]


def query_counts(ways: int, queries: int, labels: Sequence[str]) -> dict[str, int]:
    """``queries`` spread over ``labels`` as evenly as possible (the first labels get the rest)."""
    base, extra = divmod(queries, ways)
    return {label: base + (1 if i < extra else 0) for i, label in enumerate(labels)}


def sample_episode(clips: dict[str, list[Path]], ways: int, shots: int, queries: int, seed: int, index: int) -> Episode:
    """Episode ``index`` of a run seeded ``seed``; depends on nothing else than ``ways`` (not on
    ``shots``: demonstrations come from the front of each label's shuffled clips, queries from
    the back, so changing ``shots`` keeps the queries and extends the demonstrations)."""
    if len(clips) < ways:
        raise UsageError(f"{ways}-way episodes need {ways} labels, the folder has {len(clips)}", "lower --ways")
    if queries < 1:
        raise UsageError("--queries must be at least 1", "use --queries 20")
    rng = random.Random(f"uniaudio-episode:{seed}:{ways}:{index}")
    labels = rng.sample(sorted(clips), ways)
    counts = query_counts(ways, queries, labels)
    demos: dict[str, list[Path]] = {}
    picked: list[tuple[Path, str]] = []
    for label in labels:
        order = sorted(clips[label])
        rng.shuffle(order)
        need = shots + counts[label]
        if len(order) < need:
            raise UsageError(
                f"label {label!r} has {len(order)} clips; {shots} demonstration(s) + "
                f"{counts[label]} queries need {need}",
                "lower --shots or --queries",
            )
        demos[label] = order[:shots]
        picked += [(p, label) for p in order[len(order) - counts[label] :]]
    random.Random(f"uniaudio-query-order:{seed}:{ways}:{index}").shuffle(picked)
    return Episode(index, labels, demos, picked)


def max_queries(clips: dict[str, list[Path]], ways: int, shots: int) -> int:
    """The most queries per episode that any draw of ``ways`` labels can supply besides ``shots``
    demonstrations per label (queries are spread evenly, so the smallest labels decide)."""
    spare = sorted(len(c) - shots for c in clips.values())[:ways]
    return max(0, min(spare, default=0)) * ways


def random_guesses(labels: Sequence[str], n: int, seed: int, ways: int, index: int) -> list[str]:
    """The empirical random-guess baseline's answers for an episode (seeded like the episode)."""
    rng = random.Random(f"uniaudio-random-guess:{seed}:{ways}:{index}")
    return [rng.choice(list(labels)) for _ in range(n)]


# --------------------------------------------------------------------------- MFCC baseline


def mfcc_features(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    """The baseline's clip feature: :func:`uniaudio_cli.tasks.prototype.mfcc_statistics` ``(38,)``."""
    from uniaudio_cli.tasks.prototype import mfcc_statistics

    return mfcc_statistics(wav, sample_rate)


def nearest_neighbour(demos: dict[str, list[np.ndarray]], query: np.ndarray) -> str:
    """The label of the demonstration most cosine-similar to ``query``."""
    best, best_sim = next(iter(demos)), -np.inf
    qn = query / (np.linalg.norm(query) + 1e-12)
    for label, feats in demos.items():
        for f in feats:
            sim = float(f @ qn / (np.linalg.norm(f) + 1e-12))
            if sim > best_sim:
                best, best_sim = label, sim
    return best


# --------------------------------------------------------------------------- clip cache


class ClipCache:
    """Codec codes, MFCC and acoustic statistics of cropped clips, shared by all settings of a run (keyed by
    path and crop, so a clip is read and encoded once however many settings use it)."""

    def __init__(self, codec: Codec, max_seconds: float = 600.0) -> None:
        self.codec = codec
        self.max_seconds = max_seconds
        self._codes: dict[tuple[str, float | None, str], list[list[int]]] = {}
        self._mfcc: dict[tuple[str, float | None, str], np.ndarray] = {}
        self._prosody: dict[tuple[str, float | None, str], np.ndarray] = {}
        self.encode_seconds = 0.0

    def load(self, path: Path, crop: float | None, crop_mode: str) -> np.ndarray:
        from uniaudio_cli.audio import load_audio
        from uniaudio_cli.tasks.demos import crop_or_pad

        wav = load_audio(path, self.codec.sample_rate, max_seconds=self.max_seconds)
        if crop:
            wav = crop_or_pad(wav, round(crop * self.codec.sample_rate), crop_mode)
        return wav

    def codes(self, path: Path, crop: float | None, crop_mode: str) -> list[list[int]]:
        key = (str(path), crop or None, crop_mode)
        if key not in self._codes:
            wav = self.load(path, crop, crop_mode)
            t0 = time.perf_counter()
            self._codes[key] = self.codec.encode(wav)
            self.encode_seconds += time.perf_counter() - t0
        return self._codes[key]

    def mfcc(self, path: Path, crop: float | None, crop_mode: str) -> np.ndarray:
        key = (str(path), crop or None, crop_mode)
        if key not in self._mfcc:
            self._mfcc[key] = mfcc_features(self.load(path, crop, crop_mode), self.codec.sample_rate)
        return self._mfcc[key]

    def acoustic(self, path: Path, crop: float | None, crop_mode: str) -> np.ndarray:
        """The ``fused`` method's :func:`uniaudio_cli.tasks.prototype.acoustic_statistics`."""
        from uniaudio_cli.tasks.prototype import prosody_statistics

        key = (str(path), crop or None, crop_mode)
        if key not in self._prosody:
            wav = self.load(path, crop, crop_mode)  # read once for both statistics
            if key not in self._mfcc:
                self._mfcc[key] = mfcc_features(wav, self.codec.sample_rate)
            self._prosody[key] = prosody_statistics(wav, self.codec.sample_rate)
        return np.concatenate([self._mfcc[key], self._prosody[key]])


def _caching_classifier(
    llm: LoadedLLM, codec: Codec, demos: dict[str, list[Path]], cfg: EpisodeConfig, cache: ClipCache
) -> Any:
    """A :class:`Classifier` on demonstrations encoded through ``cache``."""
    from uniaudio_cli.tasks.classify import Classifier

    tokens = {label: [_layer_tokens(cache, p, cfg) for p in paths] for label, paths in demos.items()}
    acoustic = (
        {label: [cache.acoustic(p, cfg.crop, cfg.crop_mode) for p in paths] for label, paths in demos.items()}
        if cfg.method == "fused"
        else None
    )
    return Classifier(llm, codec, tokens, cfg.options(), demo_acoustic=acoustic)


def _layer_tokens(cache: ClipCache, path: Path, cfg: EpisodeConfig) -> list[int]:
    ids = cache.codes(Path(path), cfg.crop, cfg.crop_mode)
    return list(ids[0]) if cfg.layers == "semantic" else [t for layer in ids for t in layer]


# --------------------------------------------------------------------------- running


def run_episode(
    llm: LoadedLLM, codec: Codec, episode: Episode, cfg: EpisodeConfig, cache: ClipCache, seed: int, root: Path
) -> dict[str, Any]:
    """Classify one episode's queries with uniaudio and the baselines; returns its record."""
    enc0 = cache.encode_seconds
    t0 = time.perf_counter()
    clf = _caching_classifier(llm, codec, episode.demos, cfg, cache)
    preds = [
        clf.classify_tokens(
            _layer_tokens(cache, p, cfg),
            str(p),
            cache.acoustic(p, cfg.crop, cfg.crop_mode) if cfg.method == "fused" else None,
        )
        for p, _ in episode.queries
    ]
    seconds = time.perf_counter() - t0
    encode_seconds = cache.encode_seconds - enc0
    t1 = time.perf_counter()
    demo_feats = {lb: [cache.mfcc(p, cfg.crop, cfg.crop_mode) for p in ps] for lb, ps in episode.demos.items()}
    mfcc = [nearest_neighbour(demo_feats, cache.mfcc(p, cfg.crop, cfg.crop_mode)) for p, _ in episode.queries]
    mfcc_seconds = time.perf_counter() - t1
    guesses = random_guesses(episode.labels, len(episode.queries), seed, cfg.ways, episode.index)
    rows = [
        {
            "path": relative_name(p, root),
            "label": truth,
            "pred": pr.label,
            "prob": pr.probability,
            "mfcc": m,
            "random": g,
        }
        for (p, truth), pr, m, g in zip(episode.queries, preds, mfcc, guesses, strict=True)
    ]
    return {
        "config": cfg.key,
        "episode": episode.index,
        "labels": episode.labels,
        "demos": {lb: [relative_name(p, root) for p in ps] for lb, ps in episode.demos.items()},
        "queries": rows,
        "total": len(rows),
        "correct": sum(r["pred"] == r["label"] for r in rows),
        "mfcc_correct": sum(r["mfcc"] == r["label"] for r in rows),
        "random_correct": sum(r["random"] == r["label"] for r in rows),
        "seconds": seconds,
        "encode_seconds": encode_seconds,
        "mfcc_seconds": mfcc_seconds,
    }


@dataclass
class ConfigResult:
    """The episodes of one setting and their summaries."""

    config: EpisodeConfig
    episodes: list[dict[str, Any]]
    computed: int = 0  # episodes computed in this run (the rest were read back)

    def _acc(self, key: str) -> Summary:
        return bootstrap_interval([e[key] / e["total"] for e in self.episodes])

    @property
    def accuracy(self) -> Summary:
        return self._acc("correct")

    @property
    def mfcc(self) -> Summary:
        return self._acc("mfcc_correct")

    @property
    def random(self) -> Summary:
        return self._acc("random_correct")

    @property
    def queries(self) -> int:
        return sum(e["total"] for e in self.episodes)

    def wilson(self, key: str = "correct") -> tuple[float, float] | None:
        return wilson_interval(sum(e[key] for e in self.episodes), self.queries)

    @property
    def chance(self) -> float:
        return 1.0 / self.config.ways

    @property
    def seconds(self) -> float:
        """Wall seconds of the uniaudio runs of all episodes (as recorded when each ran)."""
        return float(sum(e["seconds"] for e in self.episodes))

    @property
    def ms_per_query(self) -> float | None:
        """LLM time per query (codec encoding excluded), in milliseconds."""
        if not self.queries:
            return None
        return 1000 * sum(e["seconds"] - e.get("encode_seconds", 0.0) for e in self.episodes) / self.queries

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.config.key,
            "config": asdict(self.config),
            "setting": self.config.setting,
            "episodes": len(self.episodes),
            "queries": self.queries,
            "accuracy": self.accuracy.to_dict(),
            "accuracy_wilson95": self.wilson(),
            "mfcc_nn": {**self.mfcc.to_dict(), "wilson95": self.wilson("mfcc_correct")},
            "random_guess": {**self.random.to_dict(), "wilson95": self.wilson("random_correct")},
            "chance": self.chance,
            "seconds": self.seconds,
            "ms_per_query": self.ms_per_query,
            "computed_episodes": self.computed,
        }


@dataclass
class ClassifyEvalResult:
    """Everything :func:`evaluate_classification` measured."""

    data: str
    grid: str | None
    configs: list[ConfigResult]
    results_path: str
    settings: dict[str, Any]
    device: str = "cpu"
    wall_seconds: float = 0.0
    records: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "grid": self.grid,
            "settings": self.settings,
            "results_file": self.results_path,
            "wall_seconds": self.wall_seconds,
            "configs": [c.to_dict() for c in self.configs],
            "episodes": [e for c in self.configs for e in c.episodes],
        }

    def to_report(
        self, title: str | None = None, metadata: dict[str, Any] | None = None, paper: dict[str, Any] | None = None
    ) -> Report:
        """Tables for the renderers. ``paper`` adds the paper's figures beside ours: for the
        paper grid ``{"semantic": [5 values], "all": [5 values], "random": value, "task": name}``,
        for the ways grid ``{"ways": {N: value}, "task": name}`` (values in percent)."""
        meta = (
            metadata
            if metadata is not None
            else run_metadata(
                self.device,
                data=self.data,
                seed=self.settings.get("seed"),
                results=self.results_path,
            )
        )
        title = title or f"Few-shot classification: {Path(self.data).name}"
        tables = []
        if self.grid == "paper":
            tables.append(self._paper_table(paper))
        elif self.grid == "ways":
            tables.append(self._ways_table(paper))
        if len(self.configs) == 1:
            tables.append(self._methods_table(self.configs[0]))
        else:
            tables.append(self._detail_table())
        return Report(title, tables, meta, self.to_dict())

    def _notes(self) -> list[str]:
        eps = sorted({len(c.episodes) for c in self.configs})
        q = self.settings.get("queries")
        return [
            f"{'/'.join(map(str, eps))} episodes per setting, {q} queries each, seed {self.settings.get('seed')}; "
            "every setting sees the same episodes (labels, queries; demos extend with shots).",
            "95 % CI: percentile bootstrap over episodes; Wilson: pooled over all queries.",
            "MFCC 1-NN: cosine nearest demonstration on MFCC 1-19 mean+std, same crop; random: a seeded guess "
            "per query; chance = 1/N.",
            f"Results file (resumable): {self.results_path}",
        ]

    def _methods_table(self, c: ConfigResult) -> Table:
        cfg = c.config
        rows = [
            {
                "method": f"uniaudio ({cfg.method}, {cfg.mode}, {cfg.layers})",
                "acc": c.accuracy.mean,
                "ci": c.accuracy.interval,
                "wilson": c.wilson(),
                "seconds": c.seconds,
                "ms": c.ms_per_query,
            },
            {
                "method": "MFCC nearest neighbour",
                "acc": c.mfcc.mean,
                "ci": c.mfcc.interval,
                "wilson": c.wilson("mfcc_correct"),
            },
            {
                "method": "random guess (empirical)",
                "acc": c.random.mean,
                "ci": c.random.interval,
                "wilson": c.wilson("random_correct"),
            },
            {"method": f"chance (1/{cfg.ways})", "acc": c.chance},
        ]
        for r in rows:
            r.update(episodes=len(c.episodes), queries=c.queries)
        return Table(
            f"{cfg.ways}-way {cfg.setting}, crop {cfg.crop or 'none'} s",
            [
                Column("method", "Method"),
                Column("acc", "Accuracy", ".1%"),
                Column("ci", "95 % CI (episodes)", ".1%"),
                Column("wilson", "95 % Wilson (queries)", ".1%"),
                Column("episodes", "Episodes", "d"),
                Column("queries", "Queries", "d"),
                Column("seconds", "Wall s", ".1f"),
                Column("ms", "ms / query", ".0f"),
            ],
            rows,
            self._notes(),
        )

    def _detail_table(self) -> Table:
        rows = []
        for c in self.configs:
            cfg = c.config
            rows.append(
                {
                    "method": cfg.label,
                    "ways": cfg.ways,
                    "setting": cfg.setting,
                    "layers": cfg.layers,
                    "acc": c.accuracy.mean,
                    "ci": c.accuracy.interval,
                    "wilson": c.wilson(),
                    "mfcc": c.mfcc.mean,
                    "random": c.random.mean,
                    "chance": c.chance,
                    "episodes": len(c.episodes),
                    "seconds": c.seconds,
                    "ms": c.ms_per_query,
                }
            )
        return Table(
            "Every setting",
            [
                Column("method", "Method"),
                Column("ways", "N", "d"),
                Column("setting", "Setting"),
                Column("layers", "Layers"),
                Column("acc", "uniaudio", ".1%"),
                Column("ci", "95 % CI", ".1%"),
                Column("wilson", "Wilson 95 %", ".1%"),
                Column("mfcc", "MFCC 1-NN", ".1%"),
                Column("random", "Random", ".1%"),
                Column("chance", "1/N", ".1%"),
                Column("episodes", "Episodes", "d"),
                Column("seconds", "Wall s", ".1f"),
                Column("ms", "ms / query", ".0f"),
            ],
            rows,
            self._notes(),
        )

    def _paper_table(self, paper: dict[str, Any] | None) -> Table:
        settings: list[str] = []
        for c in self.configs:
            if c.config.setting not in settings:
                settings.append(c.config.setting)
        cols = [Column("source", "Source"), Column("layers", "Layers")]
        cols += [Column(f"s{i}", s, ".1f") for i, s in enumerate(settings)]
        cols += [Column("random", "Random", ".1f"), Column("mfcc", "MFCC 1-NN", ".1f")]
        rows = []
        ways = self.configs[0].config.ways
        for layers, name in (("semantic", "semantic layer"), ("all", "all 3 layers")):
            row: dict[str, Any] = {"source": "ours", "layers": name}
            chosen = [c for c in self.configs if c.config.layers == layers]
            for c in chosen:
                row[f"s{settings.index(c.config.setting)}"] = _pct(c.accuracy.mean)
            if chosen:
                row["random"] = _pct(chosen[0].random.mean)
                row["mfcc"] = _pct(chosen[0].mfcc.mean)
                rows.append(row)
        if paper:
            for layers, name in (("semantic", "semantic layer"), ("all", "all 3 layers")):
                if layers in paper:
                    row = {
                        "source": f"paper ({paper.get('task', '')})".replace(" ()", ""),
                        "layers": name,
                        "random": paper.get("random"),
                    }
                    row.update({f"s{i}": v for i, v in enumerate(paper[layers])})
                    rows.append(row)
        return Table(f"Table 2 layout: {ways}-way accuracy %", cols, rows)

    def _ways_table(self, paper: dict[str, Any] | None) -> Table:
        ways = [c.config.ways for c in self.configs]
        cols = [Column("source", "Source")] + [Column(f"n{n}", f"{n}-way", ".1f") for n in ways]
        rows = [
            {"source": "ours", **{f"n{c.config.ways}": _pct(c.accuracy.mean) for c in self.configs}},
            {"source": "MFCC 1-NN", **{f"n{c.config.ways}": _pct(c.mfcc.mean) for c in self.configs}},
            {"source": "random guess", **{f"n{c.config.ways}": _pct(c.random.mean) for c in self.configs}},
            {"source": "chance 1/N", **{f"n{c.config.ways}": 100 / c.config.ways for c in self.configs}},
        ]
        if paper and "ways" in paper:
            label = f"paper ({paper.get('task', '')})".replace(" ()", "")
            rows.append({"source": label, **{f"n{int(n)}": v for n, v in paper["ways"].items()}})
        first = self.configs[0].config
        return Table(f"N-way {first.setting} accuracy % (Table 9 layout)", cols, rows)


def _pct(x: float | None) -> float | None:
    return None if x is None else 100 * x


def run_settings(llm: LoadedLLM, codec: Codec, data: Path, queries: int, seed: int) -> dict[str, Any]:
    """What a results file is tied to (the number of episodes and the settings evaluated are
    not: records are keyed by setting and episode, so a file grows as more are asked for)."""
    return {
        "task": "classify",
        "data": str(data.resolve()),
        "llm": llm.vocabulary.name,
        "codec": str(getattr(codec, "source", "")),
        "codec_files": file_fingerprint(getattr(codec, "source", None)),
        "queries": queries,
        "seed": seed,
    }


def check_classification_data(
    data: str | Path, configs: Sequence[EpisodeConfig], episodes: int, queries: int, seed: int = 0
) -> DemoFolder:
    """Refuse, before any model loads, a folder or settings whose episodes cannot be drawn: a
    missing or empty folder, too few labels for ``ways``, too few clips for ``shots`` plus
    ``queries`` (:class:`UsageError` naming the folder and the fix). Returns the folder."""
    from uniaudio_cli.tasks.demos import load_demo_folder

    if episodes < 1:
        raise UsageError("--episodes must be at least 1", "use --episodes 20")
    root = Path(data)
    folder = load_demo_folder(root)
    for cfg in configs:
        most = max_queries(folder.clips, cfg.ways, cfg.shots)
        if len(folder.clips) >= cfg.ways and queries > most:
            raise UsageError(
                f"{root}: {cfg.ways}-way {cfg.shots}-shot episodes can have at most {most} queries "
                f"(the smallest labels have {min(len(c) for c in folder.clips.values())} clips)",
                f"use --queries {most}" if most else "lower --shots or add clips",
            )
        sample_episode(folder.clips, cfg.ways, cfg.shots, queries, seed, 0)
    return folder


def evaluate_classification(
    llm: LoadedLLM,
    codec: Codec,
    data: str | Path,
    configs: Sequence[EpisodeConfig],
    episodes: int = 20,
    queries: int = 20,
    seed: int = 0,
    results: str | Path | None = None,
    grid: str | None = None,
    progress: bool = True,
    workers: Workers | None = None,
) -> ClassifyEvalResult:
    """Run ``episodes`` episodes of every setting in ``configs`` on the folder ``data``,
    skipping the episodes already in the results file (default under ``$UNIAUDIO_HOME/eval``).

    ``workers`` (default: the processes a launcher started, else one) splits the episodes over
    processes (:mod:`uniaudio_cli.evaluate.parallel`); every process returns the whole result."""
    from uniaudio_cli.batch import progress_bar
    from uniaudio_cli.evaluate.parallel import ShardedStore, current_workers

    workers = workers if workers is not None else current_workers(str(llm.device))

    folder = check_classification_data(data, configs, episodes, queries, seed)
    root = Path(data)
    settings = run_settings(llm, codec, root, queries, seed)
    path = Path(results) if results is not None else default_results_path("classify", settings)
    cache = ClipCache(codec)
    todo = [(cfg, i) for cfg in configs for i in range(episodes)]
    keys = [f"{cfg.key}/{i}" for cfg, i in todo]
    store = ShardedStore(path, settings, keys, workers)
    done_before = sum(key in store for key in keys)
    progress = progress and workers.is_main
    if progress:
        announce_resume(path, done_before, len(todo), "episodes")
    t0 = time.perf_counter()
    bar = progress_bar(progress)
    with bar:
        task = bar.add_task("episodes", total=len(todo))
        for n, ((cfg, i), key) in enumerate(zip(todo, keys, strict=True)):
            if key not in store and workers.mine(n):
                bar.update(task, description=f"{cfg.ways}-way {cfg.setting}, {cfg.layers} · episode {i + 1}")
                ep = sample_episode(folder.clips, cfg.ways, cfg.shots, queries, seed, i)
                store.add(key, run_episode(llm, codec, ep, cfg, cache, seed, root))
            bar.advance(task)
    store.finish()
    out = {cfg.key: ConfigResult(cfg, []) for cfg in configs}
    computed = set(store.computed)
    for (cfg, _), key in zip(todo, keys, strict=True):
        out[cfg.key].episodes.append(store[key])
        out[cfg.key].computed += key in computed
    return ClassifyEvalResult(
        data=str(root),
        grid=grid,
        configs=list(out.values()),
        results_path=str(path),
        settings=settings,
        device=str(llm.device),
        wall_seconds=time.perf_counter() - t0,
    )


# --------------------------------------------------------------------------- plots


def plot_classification(result: ClassifyEvalResult, out_dir: str | Path) -> list[Path]:
    """PNGs: accuracy against the number of ways and against shots (where the run varies them),
    and one bar per setting; with the baselines. Returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    cfgs = result.configs

    def err(s: Summary) -> list[float]:
        if s.interval is None or s.mean is None:
            return [0.0, 0.0]
        return [100 * (s.mean - s.interval[0]), 100 * (s.interval[1] - s.mean)]

    def line_plot(xkey: str, xlabel: str, groups: dict[str, list[ConfigResult]], name: str) -> None:
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, cs in groups.items():
            cs = sorted(cs, key=lambda c: getattr(c.config, xkey))
            xs = [getattr(c.config, xkey) for c in cs]
            ys = [_pct(c.accuracy.mean) for c in cs]
            ax.errorbar(
                xs,
                ys,
                yerr=np.array([err(c.accuracy) for c in cs]).T,
                marker="o",
                capsize=3,
                label=f"uniaudio {label}".strip(),
            )
        any_group = max(groups.values(), key=len)
        any_group = sorted(any_group, key=lambda c: getattr(c.config, xkey))
        xs = [getattr(c.config, xkey) for c in any_group]
        ax.plot(xs, [_pct(c.mfcc.mean) for c in any_group], "s--", label="MFCC 1-NN")
        ax.plot(xs, [_pct(c.random.mean) for c in any_group], "x:", label="random guess")
        ax.plot(xs, [100 * c.chance for c in any_group], "k-", lw=0.8, label="chance 1/N")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy %")
        ax.set_xticks(sorted(set(xs)))
        ax.set_ylim(0, 103)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(f"{Path(result.data).name}: accuracy against {xlabel}")
        fig.tight_layout()
        dest = out / name
        fig.savefig(dest, dpi=120)
        plt.close(fig)
        written.append(dest)

    def vary(attr: str) -> dict[str, list[ConfigResult]]:
        """Groups of settings that differ only in ``attr``, with at least two values."""
        groups: dict[tuple[Any, ...], list[ConfigResult]] = {}
        for c in cfgs:
            d = asdict(c.config)
            d.pop(attr)
            groups.setdefault(tuple(sorted(d.items())), []).append(c)
        keep = {}
        for k, cs in groups.items():
            if len({getattr(c.config, attr) for c in cs}) > 1:
                d = dict(k)
                keep[f"{d['layers']}" + ("" if d.get("induction", True) else ", no induction")] = cs
        return keep

    if g := vary("ways"):
        line_plot("ways", "ways (N)", g, "accuracy_vs_ways.png")
    if g := vary("shots"):
        line_plot("shots", "shots (K)", g, "accuracy_vs_shots.png")
    if cfgs:
        fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(cfgs) + 2), 4))
        labels = [f"{c.config.ways}w {c.config.setting}\n{c.config.layers}" for c in cfgs]
        x = np.arange(len(cfgs))
        ax.bar(
            x,
            [_pct(c.accuracy.mean) or 0 for c in cfgs],
            yerr=np.array([err(c.accuracy) for c in cfgs]).T,
            capsize=3,
            label="uniaudio",
        )
        ax.plot(x, [_pct(c.mfcc.mean) for c in cfgs], "s", color="C1", label="MFCC 1-NN")
        ax.plot(x, [_pct(c.random.mean) for c in cfgs], "x", color="C2", label="random guess")
        ax.plot(x, [100 * c.chance for c in cfgs], "_", color="k", markersize=20, label="chance")
        ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("accuracy %")
        ax.set_ylim(0, 103)
        ax.legend(fontsize=8)
        ax.set_title(f"{Path(result.data).name}: every setting")
        fig.tight_layout()
        dest = out / "accuracy_settings.png"
        fig.savefig(dest, dpi=120)
        plt.close(fig)
        written.append(dest)
    return written
