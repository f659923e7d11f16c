"""Make the base-set centre that prototype classification subtracts (see uniaudio_cli/tasks/prototype.py).

The base set is the codec's training audio, kept apart from every evaluation split: ESC-10 folds
1-2 (environmental sound) and RAVDESS actors 1-10 (speech), at most ``--per-group`` clips each,
whole clips, layer-1 tokens. Each group weighs the same. Writes
``<codec>/prototype_center.safetensors`` for the codec and LLM given.

    python checkpoints/make_prototype_center.py [--data ../shared/data] [--codec checkpoints/llm-codec-smollm2]
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

import torch

from uniaudio_cli.audio import load_audio
from uniaudio_cli.codec.api import load_codec
from uniaudio_cli.llm import load_llm
from uniaudio_cli.tasks.prototype import CENTER_FILE, compute_center, manifest, save_center

ROOT = Path(__file__).resolve().parents[1]
HELD_OUT = {"esc10": ("fold", {"3"}), "ravdess": ("actor", {"11", "12"})}


def base_set(data: Path, per_group: int, seed: int) -> dict[str, list[Path]]:
    groups = {}
    for name, (column, held_out) in HELD_OUT.items():
        with open(data / name / "metadata.csv", newline="") as f:
            rows = [r for r in csv.DictReader(f) if r[column] not in held_out]
        paths = sorted(data / name / r["path"] for r in rows)
        random.Random(seed).shuffle(paths)
        groups[name] = sorted(paths[:per_group])
    return groups


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/data")
    ap.add_argument("--codec", type=Path, default=ROOT / "checkpoints/llm-codec-smollm2")
    ap.add_argument("--llm", default=None, help="default: the embedded SmolLM2")
    ap.add_argument("--per-group", type=int, default=160)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    llm = load_llm(args.llm, device="cpu", dtype="float32")
    codec = load_codec(args.codec, llm=args.llm, vocabulary=llm.vocabulary, device="cpu")
    groups = base_set(args.data, args.per_group, args.seed)
    tokens = {
        name: [codec.encode(load_audio(p, codec.sample_rate, allow_silence=True))[0] for p in paths]
        for name, paths in groups.items()
    }
    center = compute_center(llm, codec, tokens)
    out = save_center(args.codec / CENTER_FILE, center, llm, codec, manifest(groups))
    print(f"{out}: centre {tuple(center.shape)} from {manifest(groups)}")


if __name__ == "__main__":
    main()
