"""Queries per second of `classify` before (one LLM pass per label prompt or candidate, one
query at a time) and after batching (a query's prompts, and several queries, in one pass).

N-way 1-shot on a labelled folder (default: ESC-10 fold 3, `.data/heldout/esc10`, never seen by
the codec, else ../shared/data/esc10), clips cropped to 5 s, the default LLM and codec unless
given. Rows: icl default (channel) mode, icl paper mode, prototype, fused (the default method:
all three layers' tokens, and its acoustic statistics computed inside the timings), and icl
default mode re-prompting without the prefix cache (`reuse_prefix=False`). Clips are encoded once,
outside the timings; set-up (prompt caches, centroids, demonstration features) is timed apart
from the queries.

    python bench/classify_throughput.py [--ways 2,5,10] [--queries 20] [--per-batch 4] [--threads N]
        [--rows default,paper,prototype,fused,no-cache] [--data DIR] [--seconds 5]

Prototype and fused scoring are not batched: their before and after run the same code (a
control for noise).
"identical" counts the queries whose label is the same both ways; max |dp| is the largest
difference of any label's probability.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import time
from pathlib import Path
from typing import Any

import torch

from uniaudio_cli.api import load_models
from uniaudio_cli.tasks.classify import (
    Classifier,
    ClassifyOptions,
    Prediction,
    audio_tokens,
    load_clip,
    queries_per_batch,
)
from uniaudio_cli.tasks.demos import load_demo_folder
from uniaudio_cli.tasks.prototype import acoustic_statistics

ROOT = Path(__file__).resolve().parents[1]
# --rows key: (name in the table, ClassifyOptions fields)
CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "default": ("icl default", {"method": "icl", "mode": "default"}),
    "paper": ("icl paper", {"method": "icl", "mode": "paper"}),
    "prototype": ("prototype", {"method": "prototype"}),
    "fused": ("fused", {"method": "fused", "layers": "all"}),
    "no-cache": ("icl default, no prefix cache", {"method": "icl", "mode": "default", "reuse_prefix": False}),
}

COLUMNS = [
    "ways",
    "method",
    "set-up s before / after",
    "queries/s before",
    "queries/s after",
    "speed-up",
    "identical",
    "max \\|dp\\|",
]


def default_data() -> Path:
    heldout = ROOT / ".data" / "heldout" / "esc10"
    return heldout if heldout.is_dir() else ROOT.parent / "shared" / "data" / "esc10"


class TokenCache:
    """Each clip's tokens per crop anchor, encoded once for every row of the table."""

    def __init__(self, codec: Any) -> None:
        self.codec = codec
        self._tokens: dict[tuple[Path, str, str], list[int]] = {}
        self._wavs: dict[tuple[Path, str], Any] = {}

    def wav(self, path: Path, opts: ClassifyOptions) -> Any:
        key = (path, opts.crop_anchor)
        if key not in self._wavs:
            self._wavs[key] = load_clip(path, self.codec.sample_rate, opts)
        return self._wavs[key]

    def __call__(self, path: Path, opts: ClassifyOptions) -> list[int]:
        key = (path, opts.crop_anchor, opts.token_layers)
        if key not in self._tokens:
            self._tokens[key] = audio_tokens(self.codec, self.wav(path, opts), opts.token_layers)
        return self._tokens[key]


def run(
    llm: Any,
    codec: Any,
    demos: dict[str, list[list[int]]],
    queries: list[list[int]],
    opts: ClassifyOptions,
    batch: bool,
    per_batch: int,
    demo_wavs: dict[str, list[Any]],
    query_wavs: list[Any],
) -> tuple[float, float, list[Prediction]]:
    """Set-up seconds, query seconds and the predictions of one way of classifying."""
    if opts.method == "fused":
        t0 = time.perf_counter()
        sr = codec.sample_rate
        acoustic = {lb: [acoustic_statistics(w, sr) for w in ws] for lb, ws in demo_wavs.items()}
        clf = Classifier(llm, codec, demos, opts, demo_acoustic=acoustic)
        t1 = time.perf_counter()
        preds = [
            clf.classify_tokens(t, acoustic=acoustic_statistics(w, sr))
            for t, w in zip(queries, query_wavs, strict=True)
        ]
        return t1 - t0, time.perf_counter() - t1, preds
    t0 = time.perf_counter()
    clf = Classifier(llm, codec, demos, opts, batch=batch)
    t1 = time.perf_counter()
    if batch:
        preds = clf.classify_tokens_many(queries, per_batch=per_batch)
    else:
        preds = [clf.classify_tokens(t) for t in queries]
    return t1 - t0, time.perf_counter() - t1, preds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None, help="DIR/<label>/<clips> (default: see above)")
    ap.add_argument("--ways", default="2,5,10", help="comma-separated")
    ap.add_argument("--queries", type=int, default=20, help="per way count")
    ap.add_argument("--per-batch", type=int, default=None, help="queries per batch after (default: as classify)")
    ap.add_argument("--seconds", type=float, default=5.0, help="clip crop (demonstrations and queries)")
    ap.add_argument("--layers", default="semantic", choices=["semantic", "all"])
    ap.add_argument("--rows", default=",".join(CONFIGS), help=f"comma-separated, of {', '.join(CONFIGS)}")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--llm", default=None)
    ap.add_argument("--codec", default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [CONFIGS[key] for key in args.rows.split(",")]

    data = args.data or default_data()
    folder = load_demo_folder(data)
    llm, codec = load_models(args.llm, args.codec, args.device)
    per_batch = args.per_batch or queries_per_batch(llm.device)
    tokens = TokenCache(codec)
    table = []
    for ways in (int(w) for w in args.ways.split(",")):
        rng = random.Random(args.seed)
        labels = sorted(rng.sample(folder.labels, ways))
        demo_paths = {lb: [rng.choice(folder.clips[lb])] for lb in labels}
        pool = [p for lb in labels for p in folder.clips[lb] if p not in demo_paths[lb]]
        query_paths = rng.sample(pool, min(args.queries, len(pool)))
        for name, fields in rows:
            opts = ClassifyOptions(crop=args.seconds, **({"layers": args.layers} | fields))
            demos = {lb: [tokens(p, opts) for p in ps] for lb, ps in demo_paths.items()}
            queries = [tokens(p, opts) for p in query_paths]
            wavs = (
                {lb: [tokens.wav(p, opts) for p in ps] for lb, ps in demo_paths.items()},
                [tokens.wav(p, opts) for p in query_paths],
            )
            before = run(llm, codec, demos, queries, opts, False, per_batch, *wavs)
            after = run(llm, codec, demos, queries, opts, True, per_batch, *wavs)
            same = sum(a.label == b.label for a, b in zip(before[2], after[2], strict=True))
            dp = max(
                abs(a.probabilities[lb] - b.probabilities[lb])
                for a, b in zip(before[2], after[2], strict=True)
                for lb in labels
            )
            table.append((ways, name, len(queries), before, after, same, dp))

    print(
        f"# {args.seconds:g} s clips, 1-shot, {data}, layers={args.layers}, {per_batch} queries per batch; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, device {llm.device}, "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}"
    )
    print("| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS))
    for ways, name, n, before, after, same, dp in table:
        qps_before, qps_after = n / before[1], n / after[1]
        print(
            f"| {ways} | {name} | {before[0]:.2f} / {after[0]:.2f} | {qps_before:.2f} | {qps_after:.2f} "
            f"| {qps_after / qps_before:.2f}x | {same}/{n} | {dp:.1e} |"
        )


if __name__ == "__main__":
    main()
