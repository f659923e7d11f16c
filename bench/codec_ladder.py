"""Compare codec training recipes on short runs of equal budget, scored on held-out speech.

    python bench/codec_ladder.py --budget 250 --out runs/ladder [--recipes continue,mag,fine4]
        [--data ../shared/data] [--heldout .data/heldout/speech] [--clips 16]

Each recipe trains for the same budget of audio seen (``--budget`` steps of 16 segments; a
recipe with batch 8 gets twice the steps) into ``OUT/<recipe>``; its latest checkpoint is then
round-tripped over the held-out clips (``bench/heldout.py`` makes them) for PESQ-WB, STOI and
the log-mel distance. The budget is counted in audio rather than wall time because other work
on a shared CPU makes wall time noisy; each recipe's measured step rate is reported with it, so
an equal-wall-time comparison can be read off. One JSON line per recipe is appended to
``OUT/ladder.jsonl`` (a recipe already there is not run again) and a table is printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "checkpoints" / "llm-codec-smollm2-v1"

#: name -> (TrainConfig overrides, CodecConfig overrides, what it tests)
RECIPES: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {
    "shipped": ({"init_from": str(SHIPPED), "steps": 0}, {}, "the committed codec, not trained further (reference)"),
    "continue": (
        {"init_from": str(SHIPPED), "lr_schedule": "constant", "lr": 2e-4},
        {},
        "the shipped recipe, continued from the committed weights at a constant lr",
    ),
    "lr4": (
        {"init_from": str(SHIPPED), "lr_schedule": "constant", "lr": 4e-4},
        {},
        "continued, twice the lr",
    ),
    "mag": (
        {"init_from": str(SHIPPED), "lr_schedule": "constant", "lr": 4e-4, "w_stft": 5.0},
        {},
        "continued, lr 4e-4, log-magnitude loss weight 5 (the measured gap is in magnitudes)",
    ),
    "fine4": (
        {"init_from": str(SHIPPED), "lr_schedule": "constant", "lr": 4e-4, "w_stft": 5.0},
        {"small_fine_layers": 4},
        "as mag, with 3 more decoder blocks at the 100 Hz STFT rate (grown from the shipped weights)",
    ),
    "batch8": (
        {"init_from": str(SHIPPED), "lr_schedule": "constant", "lr": 4e-4, "w_stft": 5.0, "batch_size": 8},
        {},
        "as mag, half the batch (twice the steps per minute)",
    ),
    "scratch": (
        {"lr_schedule": "constant", "lr": 4e-4, "w_stft": 5.0},
        {"small_fine_layers": 4},
        "fine4 from a random initialisation",
    ),
}


def heldout_files(folder: Path, clips: int) -> list[Path]:
    """``clips`` files, alternating over the sub-folders (LibriSpeech and FSDD), sorted by name."""
    groups = [sorted(p for p in sub.rglob("*") if p.is_file()) for sub in sorted(folder.iterdir()) if sub.is_dir()]
    out: list[Path] = []
    while len(out) < clips and any(groups):
        for g in groups:
            if g and len(out) < clips:
                out.append(g.pop(0))
    return out


def run_recipe(name: str, args: argparse.Namespace, vocab: Any, files: list[Path]) -> dict[str, Any]:
    import dataclasses

    from uniaudio_cli.codec.api import load_codec
    from uniaudio_cli.codec.checkpoint import load_codec_weights
    from uniaudio_cli.codec.config import CodecConfig
    from uniaudio_cli.evaluate.codec_eval import evaluate_codec
    from uniaudio_cli.train.trainer import TrainConfig, build_trainer

    train_over, codec_over, _ = RECIPES[name]
    batch = int(train_over.get("batch_size", 16))
    cfg = TrainConfig(**{"steps": args.budget * 16 // batch, "checkpoint_every": 10**6, "gan": False, **train_over})
    base = load_codec_weights(cfg.init_from)[0] if cfg.init_from else CodecConfig()
    codec_cfg = dataclasses.replace(base, **codec_over)
    run = args.out / name
    trainer = build_trainer(args.data, run, cfg, codec_cfg, resume=False, progress=False, vocab=vocab)
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    codec = load_codec(run / "codec", vocabulary=vocab, device="cpu")
    summary = evaluate_codec(codec, files, progress=False).summary()
    return {
        "recipe": name,
        "budget": args.budget,
        "steps": trainer.step,
        "steps_per_s": round(trainer.step / wall, 3),
        "train_wall_s": round(wall, 1),
        "val_mel": trainer.best_val,
        **{k: summary[k].mean for k in ("pesq", "stoi", "mel_distance") if k in summary},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=int, default=250, help="Steps of 16 segments per recipe.")
    ap.add_argument("--out", type=Path, default=Path("runs/ladder"))
    ap.add_argument("--recipes", default="continue,mag,fine4,batch8")
    ap.add_argument("--data", type=Path, nargs="+", default=[ROOT.parent / "shared" / "data"])
    ap.add_argument("--heldout", type=Path, default=Path(".data/heldout/speech"))
    ap.add_argument("--clips", type=int, default=16)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)

    from uniaudio_cli.llm import load_vocabulary

    names = [n.strip() for n in args.recipes.split(",") if n.strip()]
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        ap.error(f"unknown recipes {unknown}; known: {', '.join(RECIPES)}")
    files = heldout_files(args.heldout, args.clips)
    if not files:
        ap.error(f"{args.heldout}: no held-out clips; run python bench/heldout.py first")
    args.out.mkdir(parents=True, exist_ok=True)
    results_file = args.out / "ladder.jsonl"
    done = {}
    if results_file.exists():
        done = {r["recipe"]: r for r in map(json.loads, results_file.read_text().splitlines()) if r}
    vocab = load_vocabulary(None)
    for name in names:
        if name in done:
            continue
        row = run_recipe(name, args, vocab, files)
        with open(results_file, "a") as f:
            f.write(json.dumps(row) + "\n")
        done[name] = row
    print(f"{'recipe':<10} {'steps':>6} {'step/s':>6} {'val mel':>8} {'PESQ-WB':>8} {'STOI':>6} {'mel dist':>8}  what")
    for name in names:
        r = done[name]
        print(
            f"{name:<10} {r['steps']:>6} {r['steps_per_s']:>6.2f} {r['val_mel']:>8.3f} "
            f"{r.get('pesq') or float('nan'):>8.3f} "
            f"{r.get('stoi') or float('nan'):>6.3f} {r.get('mel_distance') or float('nan'):>8.3f}  {RECIPES[name][2]}"
        )


if __name__ == "__main__":
    main()
