"""Make the base-set statistics that prototype and fused classification measure features from
(see uniaudio_cli/tasks/prototype.py).

The base set is the codec's training audio, kept apart from every evaluation split, at most
``--per-group`` clips per group, whole clips; each group weighs the same. The ``prototype``
centre (layer-1 tokens) comes from ESC-10 folds 1-2 (environmental sound) and RAVDESS actors
1-10 (speech); the ``fused`` method's centre (all layers' tokens) and acoustic statistics also from
FSDD speakers other than nicolas and ``speech_extra``, the development splits its settings were
chosen on (bench/classify_methods.py). Writes ``<codec>/prototype_center.safetensors`` (beside a
published ``.pth``: ``<stem>.prototype_center.safetensors``) for the codec and LLM given.

    python checkpoints/make_prototype_center.py [--data ../shared/data] [--codec checkpoints/llm-codec-smollm2]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from pathlib import Path

import torch

from uniaudio_cli.audio import load_audio
from uniaudio_cli.codec.api import load_codec
from uniaudio_cli.llm import load_llm
from uniaudio_cli.tasks.prototype import (
    acoustic_statistics,
    center_path,
    compute_center,
    compute_fused_stats,
    manifest,
    save_center,
)

ROOT = Path(__file__).resolve().parents[1]
HELD_OUT = {"esc10": ("fold", {"3"}), "ravdess": ("actor", {"11", "12"})}
FUSED_HELD_OUT = HELD_OUT | {"fsdd": ("speaker", {"nicolas"}), "speech_extra": ("source", set())}


def base_set(
    data: Path, per_group: int, seed: int, rules: dict[str, tuple[str, set[str]]] = HELD_OUT
) -> dict[str, list[Path]]:
    groups = {}
    for name, (column, held_out) in rules.items():
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
    fused_groups = base_set(args.data, args.per_group, args.seed, FUSED_HELD_OUT)
    clips = {}
    for name, paths in fused_groups.items():
        clips[name] = []
        for p in paths:
            wav = load_audio(p, codec.sample_rate, allow_silence=True)
            every = [t for layer in codec.encode(wav) for t in layer]
            clips[name].append((every, acoustic_statistics(wav, codec.sample_rate)))
    fused = compute_fused_stats(llm, clips)
    sources = json.dumps({"prototype": json.loads(manifest(groups)), "fused": json.loads(manifest(fused_groups))})
    out = save_center(center_path(codec), center, llm, codec, sources, fused)
    print(f"{out}: centre {tuple(center.shape)}, fused centre {tuple(fused.center.shape)} from {sources}")


if __name__ == "__main__":
    main()
