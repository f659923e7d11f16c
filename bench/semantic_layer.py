"""Does layer 1 carry class information? 2-way 1-shot accuracy of a layer-1 token-overlap
nearest neighbour (no LLM involved), over seeded episodes on a labelled folder.

Each clip is cropped/padded to ``--crop`` seconds (loudest window) and encoded; its layer-1
tokens form a bag of words. A query takes the label of the demonstration whose bag overlaps
most (Jaccard), ties broken at random.

    python bench/semantic_layer.py [--data ../shared/data/esc10] [--episodes 200] [--codec PATH]
"""

from __future__ import annotations

import argparse
import random
from collections import Counter
from pathlib import Path

from uniaudio_cli.audio import load_audio
from uniaudio_cli.codec.api import load_codec
from uniaudio_cli.tasks.demos import crop_or_pad, load_demo_folder


def jaccard(a: Counter, b: Counter) -> float:
    inter = sum((a & b).values())
    union = sum((a | b).values())
    return inter / union if union else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/esc10")
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--ways", type=int, default=2)
    ap.add_argument("--crop", type=float, default=1.0, help="seconds; 0 keeps whole clips")
    ap.add_argument("--codec", default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    codec = load_codec(args.codec, device="cpu")
    folder = load_demo_folder(args.data)
    cache: dict[Path, Counter] = {}

    def bag(p: Path) -> Counter:
        if p not in cache:
            wav = load_audio(p, codec.sample_rate, allow_silence=True)
            if args.crop:
                wav = crop_or_pad(wav, round(args.crop * codec.sample_rate), "loudest")
            cache[p] = Counter(codec.encode(wav)[0])
        return cache[p]

    rng = random.Random(args.seed)
    correct = 0
    for _ in range(args.episodes):
        labels = rng.sample(folder.labels, args.ways)
        demos = {lb: rng.choice(folder.clips[lb]) for lb in labels}
        truth = rng.choice(labels)
        query = rng.choice([p for p in folder.clips[truth] if p != demos[truth]])
        scores = {lb: (jaccard(bag(query), bag(d)), rng.random()) for lb, d in demos.items()}
        correct += max(scores, key=scores.__getitem__) == truth
    used = Counter(t for b in cache.values() for t in b)
    print(
        f"{args.ways}-way 1-shot layer-1 token-overlap NN on {args.data.name}: "
        f"{100 * correct / args.episodes:.1f} % over {args.episodes} episodes "
        f"(chance {100 / args.ways:.0f} %); {len(cache)} clips encoded, {len(used)} distinct layer-1 tokens"
    )


if __name__ == "__main__":
    main()
