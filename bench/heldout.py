"""Make folder views (symbolic links) of the clips kept out of codec training, for evaluation.

    python bench/heldout.py [--data ../shared/data] [--out .data/heldout]

* ``esc10/<label>/``    ESC-10 fold 3
* ``ravdess/<label>/``  RAVDESS actors 11-12
* ``speech/<source>/``  FSDD speaker nicolas + the LibriSpeech test-other excerpts
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path


def link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists():
        os.symlink(src.resolve(), dst)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data")
    ap.add_argument("--out", type=Path, default=Path(".data/heldout"))
    args = ap.parse_args()
    counts: dict[str, int] = {}

    def rows(name: str) -> list[dict[str, str]]:
        with open(args.data / name / "metadata.csv", newline="") as f:
            return list(csv.DictReader(f))

    for r in rows("esc10"):
        if r["fold"] == "3":
            link(args.data / "esc10" / r["path"], args.out / "esc10" / r["label"] / Path(r["path"]).name)
            counts["esc10"] = counts.get("esc10", 0) + 1
    for r in rows("ravdess"):
        if r["actor"] in {"11", "12"}:
            link(args.data / "ravdess" / r["path"], args.out / "ravdess" / r["label"] / Path(r["path"]).name)
            counts["ravdess"] = counts.get("ravdess", 0) + 1
    for r in rows("fsdd"):
        if r["speaker"] == "nicolas":
            link(args.data / "fsdd" / r["path"], args.out / "speech" / "fsdd" / Path(r["path"]).name)
            counts["speech"] = counts.get("speech", 0) + 1
    for r in rows("librispeech"):
        if r["split"].isdigit():
            link(args.data / "librispeech" / r["path"], args.out / "speech" / "librispeech" / Path(r["path"]).name)
            counts["speech"] = counts.get("speech", 0) + 1
    print(", ".join(f"{k}: {v} clips" for k, v in counts.items()), f"-> {args.out}")


if __name__ == "__main__":
    main()
