"""Choose the classification method by measurement: four labelled sets, each split into a
development part (where settings are chosen) and a held-out part (where they are reported).

    python bench/classify_methods.py extract            # features of every clip, cached in .data/features
    python bench/classify_methods.py grid [--episodes 100] [--markdown docs/classification.md]
    python bench/classify_methods.py views             # held-out folder views for `uniaudio eval classify`

| set | task | development split | held-out split |
|---|---|---|---|
| esc10 | sound events | ESC-10 folds 1-2 | fold 3 |
| digits | spoken digits | FSDD george, jackson, lucas | FSDD nicolas |
| emotion | acted emotion | RAVDESS actors 1-10 | actors 11-12 |
| speaker | who speaks | `speech_extra` speakers | LibriSpeech test-other (10 speakers) |

``extract`` encodes every clip with the codec, runs the frozen LLM once per clip and layer
setting, and stores the hidden states' mean and standard deviation over the clip's audio tokens
at every depth, plus the MFCC statistics of the nearest-neighbour baseline and the prosody
statistics of the ``fused`` method (a cache made before prosody existed gets them added without
running the LLM again). ``grid`` then
draws N-way K-shot episodes (the episode sampler of ``uniaudio eval classify``, so the same
seed gives the same episodes) and scores every prototype variant and the MFCC baseline on
exactly the same episodes (a label's score: similarity to its demonstrations' mean, or to its
nearest demonstration); it ranks the variants on the development splits only (mean accuracy
over sets and settings; the shipped ``fused`` variant was chosen so), fits the softmax
temperatures on development episodes (log-loss), and reports the shipped variants on the held-out
splits with Wilson intervals, their calibration (ECE, log-loss) before and after, and how well the
distance to the nearest class centroid flags out-of-set queries.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import platform
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from uniaudio_cli.tasks.options import ClassifyOptions
from uniaudio_cli.tasks.prototype import FUSED_DEPTHS

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared/data"
CACHE = ROOT / ".data/features"
DEPTHS = (0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0)
# Several depths joined (each half unit-normalised): what the early (token identity) and middle
# (context) layers carry together.
DEPTH_MIXES = ((0.0, 0.6), (0.0, 0.4, 0.8), (0.0, 0.2, 0.4, 0.6, 0.8, 1.0))
SETTINGS = [(n, k) for n in (2, 3, 5) for k in (1, 3)]
QUERIES = {2: 10, 3: 12, 5: 15}


@dataclass(frozen=True)
class Split:
    name: str  # e.g. "esc10/dev"
    clips: dict[str, list[Path]]  # label -> paths


def _rows(name: str) -> list[dict[str, str]]:
    with open(DATA / name / "metadata.csv", newline="") as f:
        return list(csv.DictReader(f))


def _group(rows: Iterable[dict[str, str]], root: Path, per_label: int | None, seed: int = 0) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for r in rows:
        out.setdefault(r["label"], []).append(root / r["path"])
    for label, paths in out.items():
        paths.sort()
        if per_label is not None and len(paths) > per_label:
            random.Random(f"{seed}:{label}").shuffle(paths)
            out[label] = sorted(paths[:per_label])
    return {k: out[k] for k in sorted(out)}


def splits() -> list[Split]:
    esc = _rows("esc10")
    fsdd = _rows("fsdd")
    rav = _rows("ravdess")
    extra = [r for r in _rows("speech_extra") if float(r["seconds"]) >= 3.0]
    libri = [r for r in _rows("librispeech") if r["split"].isdigit()]  # the test-other excerpts
    keep = {lb for lb, n in _count(extra).items() if n >= 6}
    return [
        Split("esc10/dev", _group((r for r in esc if r["fold"] != "3"), DATA / "esc10", None)),
        Split("esc10/test", _group((r for r in esc if r["fold"] == "3"), DATA / "esc10", None)),
        Split("digits/dev", _group((r for r in fsdd if r["speaker"] != "nicolas"), DATA / "fsdd", 24)),
        Split("digits/test", _group((r for r in fsdd if r["speaker"] == "nicolas"), DATA / "fsdd", 24)),
        Split("emotion/dev", _group((r for r in rav if int(r["actor"]) <= 10), DATA / "ravdess", 24)),
        Split("emotion/test", _group((r for r in rav if int(r["actor"]) > 10), DATA / "ravdess", None)),
        Split("speaker/dev", _group((r for r in extra if r["label"] in keep), DATA / "speech_extra", 8)),
        Split("speaker/test", _group(libri, DATA / "librispeech", None)),
    ]


def _count(rows: Iterable[dict[str, str]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        out[r["label"]] = out.get(r["label"], 0) + 1
    return out


def _cache_file(split: Split, tag: str = "") -> Path:
    return CACHE / tag / f"{split.name.replace('/', '_')}.pt"


# --------------------------------------------------------------------------- extract


def extract(args: argparse.Namespace) -> None:
    from uniaudio_cli.api import load_models
    from uniaudio_cli.audio import load_audio
    from uniaudio_cli.evaluate.classify_eval import mfcc_features
    from uniaudio_cli.tasks.prototype import clip_features, prosody_statistics

    torch.set_num_threads(args.threads)
    models = load_models(codec=args.codec, device="cpu")
    llm, codec = models.llm, models.codec
    (CACHE / args.tag).mkdir(parents=True, exist_ok=True)
    for split in splits():
        if args.only and split.name not in args.only:
            continue
        out = _cache_file(split, args.tag)
        feats: dict[str, dict[str, torch.Tensor]] = {}
        if out.is_file():
            feats = torch.load(out, weights_only=True)
        paths = [p for ps in split.clips.values() for p in ps]
        for p in paths:
            if str(p) in feats and "prosody" not in feats[str(p)]:
                wav = load_audio(p, codec.sample_rate, max_seconds=args.max_seconds, allow_silence=True)
                feats[str(p)]["prosody"] = torch.from_numpy(prosody_statistics(wav, codec.sample_rate))
        todo = [p for p in paths if str(p) not in feats]
        t0 = time.perf_counter()
        for i, p in enumerate(todo):
            wav = load_audio(p, codec.sample_rate, max_seconds=args.max_seconds, allow_silence=True)
            codes = codec.encode(wav)
            sem = list(codes[0])
            every = [t for layer in codes for t in layer]
            feats[str(p)] = {
                "semantic": clip_features(llm, sem, str(p), pooling="meanstd").half(),
                "all": clip_features(llm, every, str(p), pooling="meanstd").half(),
                "mfcc": torch.from_numpy(mfcc_features(wav, codec.sample_rate)),
                "prosody": torch.from_numpy(prosody_statistics(wav, codec.sample_rate)),
            }
            if (i + 1) % 50 == 0:
                torch.save(feats, out)
                rate = (i + 1) / (time.perf_counter() - t0)
                print(f"{split.name}: {i + 1}/{len(todo)} clips, {rate:.2f} clips/s", flush=True)
        torch.save(feats, out)
        print(f"{split.name}: {len(paths)} clips in {len(split.clips)} labels -> {out}", flush=True)


def extract_codec(args: argparse.Namespace) -> None:
    """The codec's own view of each clip, mean and std over frames: the encoder's latent ``z``
    and the quantized latent ``z_q`` (what the codes stand for; a function of the tokens)."""
    from uniaudio_cli.api import load_models
    from uniaudio_cli.audio import load_audio

    torch.set_num_threads(args.threads)
    codec = load_models(codec=args.codec, device="cpu").codec
    model = codec.model
    for split in splits():
        out = CACHE / args.tag / f"{split.name.replace('/', '_')}.codec.pt"
        feats = {}
        for p in (p for ps in split.clips.values() for p in ps):
            wav = load_audio(p, codec.sample_rate, max_seconds=args.max_seconds, allow_silence=True)
            x = torch.from_numpy(wav).float().view(1, 1, -1)
            with torch.no_grad():
                z = model.encoder(model.preprocess(x))
                z_q = model.quantizer.decode([torch.tensor([c]) for c in codec.encode_codes(wav)])
            feats[str(p)] = {
                k: torch.cat([v[0].mean(-1), v[0].std(-1, unbiased=False)]) for k, v in (("z", z), ("zq", z_q))
            }
        torch.save(feats, out)
        print(f"{split.name}: {len(feats)} clips -> {out}", flush=True)


def views(args: argparse.Namespace) -> None:
    """Folder views (symbolic links) of the held-out splits, for ``uniaudio eval classify``."""
    import os

    for split in splits():
        if not split.name.endswith("/test"):
            continue
        root = ROOT / ".data/heldout/classify" / split.name.split("/")[0]
        for label, paths in split.clips.items():
            (root / label).mkdir(parents=True, exist_ok=True)
            for p in paths:
                if not (root / label / p.name).exists():
                    os.symlink(p.resolve(), root / label / p.name)
        print(f"{root}: {sum(len(v) for v in split.clips.values())} clips", flush=True)


# --------------------------------------------------------------------------- grid


@dataclass(frozen=True)
class Variant:
    layers: str  # "semantic" or "all"
    pooling: str  # "mean" or "meanstd"
    depth: tuple[float, ...]
    center: bool
    # "", "z", "zq", "mfcc", "prosody" or "mfcc+prosody": joined (or, with layers "none", used
    # alone); each part standardised and unit-normalised, so every part weighs the same.
    extra: str = ""
    nearest: bool = False  # a label's score: its nearest demonstration, not the demonstrations' mean

    @property
    def name(self) -> str:
        agg = " (nearest demo)" if self.nearest else ""
        if self.layers == "none":
            return f"{self.extra} only{agg}"
        c = "centred" if self.center else "raw"
        base = f"{self.layers}/{self.pooling}/d{'+'.join(f'{d:g}' for d in self.depth)}/{c}"
        return (f"{base} + {self.extra}" if self.extra else base) + agg


# What the `fused` method ships (uniaudio_cli/tasks/prototype.py: its depths, meanstd, all layers,
# MFCC and prosody joined, nearest demonstration): the grid's pick on the development splits with
# the codes of v1, v2 and stage 29. The held-out tables report it, so that they describe what users
# run; the development ranking beside it says whether a new codec's codes favour another variant.
FUSED = Variant("all", "meanstd", FUSED_DEPTHS, True, "mfcc+prosody", nearest=True)
# What the `prototype` method ships: the semantic layer's mean state at ClassifyOptions' depth,
# centred as ClassifyOptions says.
PROTOTYPE = Variant("semantic", "mean", (ClassifyOptions().depth,), ClassifyOptions().center)


def variants() -> list[Variant]:
    llm_only = [
        Variant(la, po, d, c)
        for la in ("semantic", "all")
        for po in ("mean", "meanstd")
        for d in [(d,) for d in DEPTHS] + list(DEPTH_MIXES)
        for c in (True, False)
    ]
    joined_to = [
        Variant("semantic", "mean", (0.6,), True),
        Variant("semantic", "meanstd", (0.6,), True),
        Variant("all", "meanstd", (0.0, 0.6), True),
    ]
    extras = ("z", "zq", "mfcc", "prosody", "mfcc+prosody")
    alone = [Variant("none", "", (), False, e, n) for e in extras for n in (False, True)]
    joined = [
        Variant(v.layers, v.pooling, v.depth, v.center, e, n) for v in joined_to for e in extras for n in (False, True)
    ]
    return llm_only + alone + joined


class Features:
    """Per-clip feature matrices of one split: ``(clips, D)`` per (layers, pooling, depth)."""

    def __init__(self, split: Split, n_states: int, tag: str = "") -> None:
        raw = torch.load(_cache_file(split, tag), weights_only=True)
        self.split = split
        self.paths = [str(p) for ps in split.clips.values() for p in ps]
        self.index = {p: i for i, p in enumerate(self.paths)}
        self.labels = [lb for lb, ps in split.clips.items() for _ in ps]
        self.mfcc = np.stack([raw[p]["mfcc"].numpy() for p in self.paths])
        self._raw = {la: torch.stack([raw[p][la].float() for p in self.paths]).numpy() for la in ("semantic", "all")}
        self.n_states = n_states
        self.extra = {"mfcc": self.mfcc}
        if all("prosody" in raw[p] for p in self.paths):
            self.extra["prosody"] = np.stack([raw[p]["prosody"].numpy() for p in self.paths])
        codec_file = _cache_file(split, tag).with_suffix(".codec.pt")
        if codec_file.is_file():
            cf = torch.load(codec_file, weights_only=True)
            for k in ("z", "zq"):
                self.extra[k] = torch.stack([cf[p][k].float() for p in self.paths]).numpy()

    def matrix(self, layers: str, pooling: str, depth: tuple[float, ...]) -> np.ndarray:
        if len(depth) > 1:
            return np.concatenate([_unit(self.matrix(layers, pooling, (d,))) for d in depth], axis=1)
        x = self._raw[layers][:, round(depth[0] * (self.n_states - 1))]
        h = x.shape[-1] // 2
        if pooling == "mean":
            return x[:, :h]
        # Mean and std live on different scales: normalise each half before joining them.
        return np.concatenate([_unit(x[:, :h]), _unit(x[:, h:])], axis=1)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-12)


def episodes(split: Split, ways: int, shots: int, count: int, seed: int) -> list:
    from uniaudio_cli.evaluate.classify_eval import max_queries, sample_episode

    q = min(QUERIES[ways], max_queries(split.clips, ways, shots))
    return [sample_episode(split.clips, ways, shots, q, seed, i) for i in range(count)]


def label_scores(q: np.ndarray, x: np.ndarray, feats: Features, episode, nearest: bool) -> np.ndarray:
    """Cosine similarities ``(queries, ways)`` of unit queries ``q`` to each label's demonstrations:
    to their mean, or (``nearest``) to the nearest one."""
    out = []
    for lb in episode.labels:
        d = _unit(x[[feats.index[str(p)] for p in episode.demos[lb]]])
        out.append((q @ d.T).max(1) if nearest else q @ _unit(d.mean(0)))
    return np.stack(out, axis=1)


def prototype_scores(x: np.ndarray, feats: Features, episode, nearest: bool = False) -> tuple[np.ndarray, list[int]]:
    """:func:`label_scores` of the episode's queries, and their true indices."""
    q = _unit(x[[feats.index[str(p)] for p, _ in episode.queries]])
    truth = [episode.labels.index(lb) for _, lb in episode.queries]
    return label_scores(q, x, feats, episode, nearest), truth


def mfcc_correct(feats: Features, episode) -> list[bool]:
    from uniaudio_cli.evaluate.classify_eval import nearest_neighbour

    demos = {lb: [feats.mfcc[feats.index[str(p)]] for p in episode.demos[lb]] for lb in episode.labels}
    return [nearest_neighbour(demos, feats.mfcc[feats.index[str(p)]]) == lb for p, lb in episode.queries]


def calibration(scores: list[np.ndarray], truth: list[list[int]], temperature: float) -> tuple[float, float]:
    """(ECE over 10 confidence bins, mean log-loss) of softmax(scores / temperature)."""
    conf, correct, nll = [], [], []
    for s, t in zip(scores, truth, strict=True):
        z = s / temperature
        z = z - z.max(axis=1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        conf += list(p.max(axis=1))
        correct += list(p.argmax(axis=1) == np.asarray(t))
        nll += list(-np.log(np.clip(p[np.arange(len(t)), t], 1e-12, None)))
    conf_a, corr_a = np.asarray(conf), np.asarray(correct, dtype=float)
    bins = np.minimum((conf_a * 10).astype(int), 9)
    ece = sum(abs(corr_a[bins == b].mean() - conf_a[bins == b].mean()) * (bins == b).mean() for b in np.unique(bins))
    return float(ece), float(np.mean(nll))


def fit_temperature(scores: list[np.ndarray], truth: list[list[int]]) -> float:
    grid = np.exp(np.linspace(np.log(0.005), np.log(1.0), 60))
    return float(min(grid, key=lambda t: calibration(scores, truth, t)[1]))


def grid(args: argparse.Namespace) -> None:
    from uniaudio_cli.evaluate.classify_eval import sample_episode  # noqa: F401  (same sampler as eval)

    all_splits = {s.name: s for s in splits()}
    n_states = 31
    feats = {name: Features(s, n_states, args.tag) for name, s in all_splits.items()}
    sets = sorted({n.split("/")[0] for n in all_splits})
    base_center: dict[tuple[str, str, tuple[float, ...]], np.ndarray] = {}

    def center(layers: str, pooling: str, depth: tuple[float, ...]) -> np.ndarray:
        # The base set is development audio only: each dev split weighs the same.
        key = (layers, pooling, depth)
        if key not in base_center:
            means = [feats[f"{s}/dev"].matrix(layers, pooling, depth).mean(0) for s in sets]
            base_center[key] = np.mean(means, axis=0)
        return base_center[key]

    dev_extra = {k: np.concatenate([feats[f"{s}/dev"].extra[k] for s in sets]) for k in feats[f"{sets[0]}/dev"].extra}
    extra_norm = {k: (v.mean(0), v.std(0) + 1e-8) for k, v in dev_extra.items()}
    if "prosody" not in extra_norm:
        raise SystemExit("the feature cache has no prosody statistics: run `extract` again (it adds only them)")

    def features(f: Features, v: Variant) -> np.ndarray:
        parts = []
        if v.layers != "none":
            x = f.matrix(v.layers, v.pooling, v.depth)
            parts.append(_unit(x - center(v.layers, v.pooling, v.depth)) if v.center else _unit(x))
        for e in v.extra.split("+") if v.extra else []:
            # Standardised with development statistics so no one coefficient dominates.
            mu, sd = extra_norm[e]
            parts.append(_unit((f.extra[e] - mu) / sd))
        return np.concatenate(parts, axis=1)

    def run(split: str, v: Variant, eps: list) -> tuple[int, int, list[np.ndarray], list[list[int]]]:
        f = feats[split]
        x = features(f, v)
        k = n = 0
        scores, truths = [], []
        for ep in eps:
            s, t = prototype_scores(x, f, ep, v.nearest)
            k += int((s.argmax(1) == np.asarray(t)).sum())
            n += len(t)
            scores.append(s)
            truths.append(t)
        return k, n, scores, truths

    t0 = time.perf_counter()
    eps = {
        (split, w, sh): episodes(all_splits[split], w, sh, args.episodes, args.seed)
        for split in all_splits
        for w, sh in SETTINGS
    }
    dev_acc: dict[Variant, float] = {}
    for v in variants():
        accs = []
        for s in sets:
            for w, sh in SETTINGS:
                k, n, _, _ = run(f"{s}/dev", v, eps[(f"{s}/dev", w, sh)])
                accs.append(k / n)
        dev_acc[v] = float(np.mean(accs))
    ranked = sorted(dev_acc, key=dev_acc.get, reverse=True)
    llm_best = next(v for v in ranked if not v.extra)
    acoustic_best = next(v for v in ranked if v.layers == "none" and "mfcc" in v.extra)
    shipped = PROTOTYPE

    def fitted_temperature(v: Variant) -> float:
        """The softmax temperature of ``v`` fitted on development episodes of every set and setting."""
        scores, truth = [], []
        for s in sets:
            for w, sh in SETTINGS:
                _, _, sc, tr = run(f"{s}/dev", v, eps[(f"{s}/dev", w, sh)])
                scores += sc
                truth += tr
        return fit_temperature(scores, truth)

    temp = fitted_temperature(FUSED)
    proto_temp = fitted_temperature(shipped)

    lines = [
        f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}; "
        f"{args.episodes} episodes per set and setting, seed {args.seed}; {time.perf_counter() - t0:.0f} s.",
        "",
        "## Development splits: the ten best prototype variants (mean accuracy over sets and settings)",
        "",
        "| variant | mean dev accuracy |",
        "|---|---|",
    ]
    lines += [f"| {v.name} | {dev_acc[v]:.1%} |" for v in ranked[:10]]
    lines += [f"| shipped: {shipped.name} | {dev_acc[shipped]:.1%} |", ""]
    rank = ranked.index(FUSED) + 1
    lines += [
        f"The `fused` method ships `{FUSED.name}`: {dev_acc[FUSED]:.1%} on development, rank {rank}"
        + ("." if rank == 1 else f", {dev_acc[ranked[0]] - dev_acc[FUSED]:.1%} below the best (`{ranked[0].name}`)."),
        "",
    ]
    per_set = {s: max((v for v in variants()), key=lambda v: _set_dev(v, s, run, eps)) for s in sets}
    lines += ["Best variant per set on its development split (for reference, not used):", ""]
    lines += [f"- {s}: {v.name}" for s, v in per_set.items()]
    lines += [
        "",
        "## Held-out splits, the same episodes for every column",
        "",
        f"fused: `{FUSED.name}` (the `fused` method); best LLM-only: `{llm_best.name}`; "
        f"best without the LLM: `{acoustic_best.name}`; prototype: `{shipped.name}` (the `prototype` method); "
        "MFCC 1-NN: the baseline of `uniaudio eval classify` (raw MFCC statistics, cosine, nearest clip).",
        "",
        "| set | N | shots | queries | fused | best LLM-only | best without LLM | prototype | MFCC 1-NN |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    test_scores, test_truth, proto_test, proto_test_truth = [], [], [], []
    rows_json = []
    for s in sets:
        for w, sh in SETTINGS:
            ep = eps[(f"{s}/test", w, sh)]
            k, n, sc, tr = run(f"{s}/test", FUSED, ep)
            kl, _, _, _ = run(f"{s}/test", llm_best, ep)
            ka, _, _, _ = run(f"{s}/test", acoustic_best, ep)
            ks, _, ssc, _ = run(f"{s}/test", shipped, ep)
            km = sum(sum(mfcc_correct(feats[f"{s}/test"], e)) for e in ep)
            test_scores += sc
            test_truth += tr
            proto_test += ssc
            proto_test_truth += tr
            cells = [_cell(k, n), _cell(kl, n), _cell(ka, n), _cell(ks, n), _cell(km, n)]
            lines.append(f"| {s} | {w} | {sh} | {n} | " + " | ".join(cells) + " |")
            rows_json.append(
                {
                    "set": s,
                    "ways": w,
                    "shots": sh,
                    "n": n,
                    "fused": k,
                    "llm_best": kl,
                    "acoustic_best": ka,
                    "prototype": ks,
                    "mfcc": km,
                }
            )
    lines += [
        "",
        "## Calibration on the held-out episodes (temperatures fitted on development episodes)",
        "",
        "| method | softmax temperature | ECE | log-loss |",
        "|---|---|---|---|",
    ]
    for name, sc, tr, fitted in (
        ("fused", test_scores, test_truth, temp),
        ("prototype", proto_test, proto_test_truth, proto_temp),
    ):
        for t, how in ((0.05, "before (0.05)"), (fitted, "fitted")):
            e, ll = calibration(sc, tr, t)
            lines.append(f"| {name} | {how}: {t:.3f} | {e:.3f} | {ll:.3f} |")
    lines += _selective(test_scores, test_truth, temp)
    lines += _out_of_set(FUSED, feats, sets, features, args)
    lines += _cross_speaker(FUSED, feats, sets, features, args)
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "fused": FUSED.name,
                    "dev_best": ranked[0].name,
                    "temperature": temp,
                    "prototype_temperature": proto_temp,
                    "rows": rows_json,
                    "dev": {v.name: a for v, a in dev_acc.items()},
                },
                indent=1,
            )
        )


def _selective(scores: list[np.ndarray], truth: list[list[int]], temperature: float) -> list[str]:
    """Answering only when the calibrated top probability reaches a threshold (``--abstain``):
    the share of queries answered and the accuracy on those, per N."""
    lines = ["", "## Abstaining below a calibrated probability (fused, held-out episodes)", ""]
    lines += ["| N | threshold | answered | accuracy when answered | accuracy of all |", "|---|---|---|---|---|"]
    by_ways: dict[int, tuple[list[float], list[bool]]] = {}
    for s, t in zip(scores, truth, strict=True):
        z = s / temperature
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        conf, correct = by_ways.setdefault(s.shape[1], ([], []))
        conf += list(p.max(1))
        correct += list(p.argmax(1) == np.asarray(t))
    for ways, (conf, correct) in sorted(by_ways.items()):
        c, k = np.asarray(conf), np.asarray(correct)
        for thr in (0.6, 0.8, 0.9):
            keep = c >= thr
            acc = k[keep].mean() if keep.any() else float("nan")
            lines.append(f"| {ways} | {thr} | {keep.mean():.1%} | {acc:.1%} | {k.mean():.1%} |")
    return lines


def _set_dev(v: Variant, s: str, run, eps) -> float:
    return float(np.mean([(lambda r: r[0] / r[1])(run(f"{s}/dev", v, eps[(f"{s}/dev", w, sh)])) for w, sh in SETTINGS]))


def _cell(k: int, n: int) -> str:
    from uniaudio_cli.evaluate.store import wilson_interval

    lo, hi = wilson_interval(k, n) or (math.nan, math.nan)
    return f"{k / n:.1%} [{lo:.0%}, {hi:.0%}]"


def _out_of_set(variant: Variant, feats: dict[str, Features], sets: list[str], features, args) -> list[str]:
    """How well the best label's score (as ``variant`` scores) separates in-set queries from queries of
    labels outside the episode (5-way 1-shot); threshold at 5 % false alarms on development."""

    def sims(split: str) -> tuple[np.ndarray, np.ndarray]:
        f = feats[split]
        x = features(f, variant)
        ins, outs = [], []
        for ep in episodes(f.split, 5, 1, args.episodes, args.seed):
            s, _ = prototype_scores(x, f, ep, variant.nearest)
            ins += list(s.max(1))
            others = [i for i, (p, lb) in enumerate(zip(f.paths, f.labels, strict=True)) if lb not in ep.labels]
            pick = random.Random(f"oos:{split}:{ep.index}").sample(others, min(len(others), len(ep.queries)))
            outs += list(label_scores(_unit(x[pick]), x, f, ep, variant.nearest).max(1))
        return np.asarray(ins), np.asarray(outs)

    lines = ["", "## Out-of-set queries (5-way 1-shot; query from a label outside the episode)", ""]
    lines += [
        "| set | threshold (dev, 5 % false alarms) | held-out in-set flagged | held-out out-of-set flagged | AUROC |"
    ]
    lines += ["|---|---|---|---|---|"]
    dev_in, test = [], {}
    for s in sets:
        di, _ = sims(f"{s}/dev")
        dev_in.append(di)
        thr = float(np.quantile(di, 0.05))
        ti, to = sims(f"{s}/test")
        test[s] = (ti, to)
        auc = float((ti[:, None] > to[None, :]).mean())
        lines.append(f"| {s} | {thr:.3f} | {(ti < thr).mean():.1%} | {(to < thr).mean():.1%} | {auc:.3f} |")
    pooled = float(np.quantile(np.concatenate(dev_in), 0.05))
    lines += ["", f"One threshold for every set (5 % of all development in-set queries): {pooled:.3f}", ""]
    lines += ["| set | held-out in-set flagged | held-out out-of-set flagged |", "|---|---|---|"]
    lines += [f"| {s} | {(ti < pooled).mean():.1%} | {(to < pooled).mean():.1%} |" for s, (ti, to) in test.items()]
    return lines


def _cross_speaker(variant: Variant, feats: dict[str, Features], sets: list[str], features, args) -> list[str]:
    """Demonstrations from the development speakers (actors, folds), queries from the held-out ones:
    how a user's own recordings fare against demonstrations recorded by other people. The ``fused``
    variant and the MFCC baseline see the same episodes."""
    from uniaudio_cli.evaluate.classify_eval import Episode, nearest_neighbour, query_counts

    lines = ["", "## Demonstrations by other speakers: demos from the development split, queries held out", ""]
    lines += ["| set | N | shots | queries | fused | MFCC 1-NN |", "|---|---|---|---|---|---|"]
    for s in sets:
        dev, test = feats[f"{s}/dev"], feats[f"{s}/test"]
        labels = sorted(set(dev.split.clips) & set(test.split.clips))
        if len(labels) < max(w for w, _ in SETTINGS):
            continue  # the speaker set's held-out labels are other people
        xd, xt = features(dev, variant), features(test, variant)
        for ways, shots in SETTINGS:
            k = km = n = 0
            for i in range(args.episodes):
                rng = random.Random(f"cross:{args.seed}:{s}:{ways}:{i}")
                labs = rng.sample(labels, ways)
                counts = query_counts(ways, QUERIES[ways], labs)
                demos = {lb: rng.sample(dev.split.clips[lb], shots) for lb in labs}
                queries = [
                    (q, lb)
                    for lb in labs
                    for q in rng.sample(test.split.clips[lb], min(counts[lb], len(test.split.clips[lb])))
                ]
                ep = Episode(i, labs, demos, queries)
                q = _unit(xt[[test.index[str(p)] for p, _ in queries]])
                truth = np.asarray([labs.index(lb) for _, lb in queries])
                k += int((label_scores(q, xd, dev, ep, variant.nearest).argmax(1) == truth).sum())
                ref = {c: [dev.mfcc[dev.index[str(d)]] for d in demos[c]] for c in labs}
                km += sum(nearest_neighbour(ref, test.mfcc[test.index[str(p)]]) == lb for p, lb in queries)
                n += len(queries)
            lines.append(f"| {s} | {ways} | {shots} | {n} | {_cell(k, n)} | {_cell(km, n)} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("extract", help="cache the features of every clip")
    ex.add_argument("--codec", default=None, help="default: the shipped codec")
    ex.add_argument("--threads", type=int, default=1)
    ex.add_argument("--max-seconds", type=float, default=30.0)
    ex.add_argument("--only", nargs="*", default=None, help="splits to extract, e.g. esc10/test")
    sub.add_parser("views", help="folder views of the held-out splits")
    exc = sub.add_parser("extract-codec", help="cache the codec latents of every clip")
    exc.add_argument("--codec", default=None, help="default: the shipped codec")
    exc.add_argument("--threads", type=int, default=1)
    exc.add_argument("--max-seconds", type=float, default=30.0)
    for p in (ex, exc, gr := sub.add_parser("grid", help="choose and report")):
        p.add_argument("--tag", default="", help="cache sub-folder (one per codec)")
    gr.add_argument("--episodes", type=int, default=100)
    gr.add_argument("--seed", type=int, default=0)
    gr.add_argument("--markdown", type=Path, default=None)
    gr.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    {"extract": extract, "extract-codec": extract_codec, "grid": grid, "views": views}[args.cmd](args)


if __name__ == "__main__":
    main()
