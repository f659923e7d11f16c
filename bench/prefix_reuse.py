"""Queries per second of `classify --method icl` with and without reusing the prompt prefix's KV cache.

10-way 1-shot on a labelled folder (default: ../shared/data/esc10), 50 queries, the default
LLM and codec unless given. Demonstrations are encoded once per run either way; what differs is
whether the LLM recomputes the instruction + demonstrations for every query.

    python bench/prefix_reuse.py [--data DIR] [--queries 50] [--mode default|paper] [--layers semantic|all]

In the default (channel) mode there is one prefix per label plus a reference prompt; each is
cached once and reused.
"""

from __future__ import annotations

import argparse
import platform
import random
import time
from pathlib import Path

import torch

from uniaudio_cli.api import load_models
from uniaudio_cli.tasks.classify import Classifier, ClassifyOptions, default_crop
from uniaudio_cli.tasks.demos import load_demo_folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/esc10")
    ap.add_argument("--ways", type=int, default=10)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--layers", default="semantic", choices=["semantic", "all"])
    ap.add_argument("--mode", default="default", choices=["default", "paper"])
    ap.add_argument("--crop", type=float, default=None, help="seconds (default: as `uniaudio classify`)")
    ap.add_argument("--llm", default=None)
    ap.add_argument("--codec", default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    folder = load_demo_folder(args.data)
    labels = folder.labels[: args.ways]
    rng = random.Random(args.seed)
    demos = {lb: [rng.choice(folder.clips[lb])] for lb in labels}
    pool = [p for lb in labels for p in folder.clips[lb] if p not in demos[lb]]
    queries = rng.sample(pool, min(args.queries, len(pool)))

    llm, codec = load_models(args.llm, args.codec, args.device)
    rows = []
    preds: dict[bool, list[str]] = {}
    for reuse in (False, True):
        opts = ClassifyOptions(
            method="icl",
            mode=args.mode,
            layers=args.layers,
            crop=default_crop(args.crop, "icl", args.mode),
            reuse_prefix=reuse,
        )
        t0 = time.perf_counter()
        clf = Classifier.from_files(llm, codec, demos, opts)
        setup = time.perf_counter() - t0
        # Encoding is shared work; time it apart from the LLM.
        tokens = [clf.clip_tokens(q) for q in queries]
        t1 = time.perf_counter()
        preds[reuse] = [clf.classify_tokens(t, str(q)).label for t, q in zip(tokens, queries, strict=True)]
        llm_s = time.perf_counter() - t1
        prefixes = [clf.prefix] if args.mode == "paper" else [*clf.label_prefixes, clf.reference]
        rows.append((reuse, sum(len(p.prefix) for p in prefixes), setup, llm_s, len(queries) / llm_s))
    same = sum(a == b for a, b in zip(preds[False], preds[True], strict=True))
    print(
        f"# {args.ways}-way 1-shot, {len(queries)} queries, {args.mode} mode, layers={args.layers}, "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, threads {torch.get_num_threads()}"
    )
    print("| prefix cache | prefix tokens | setup s | LLM s (all queries) | queries/s |")
    print("|---|---|---|---|---|")
    for reuse, n, setup, llm_s, qps in rows:
        print(f"| {'reused' if reuse else 'recomputed'} | {n} | {setup:.2f} | {llm_s:.2f} | {qps:.2f} |")
    print(f"speed-up: {rows[1][4] / rows[0][4]:.1f}x; identical predictions: {same}/{len(queries)}")


if __name__ == "__main__":
    main()
