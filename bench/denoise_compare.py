"""Pair two ``uniaudio eval denoise`` results files mixture by mixture.

    python bench/denoise_compare.py OLD.jsonl NEW.jsonl

Both must hold the same mixtures (same clean files, noise folder, seed and SNRs; they may differ
in demonstrations, mode or codec). Prints per SNR, for PESQ-WB and STOI: each file's uniaudio
minus the noisy input, and NEW's uniaudio minus OLD's, as mean ± 95 % half-width (Student t) and
on how many mixtures it is above zero.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from uniaudio_cli.evaluate.codec_eval import mean_interval


def mixtures(path: Path) -> dict[str, dict]:
    out = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if row.get("type") == "record" and row["key"].startswith("mix/"):
            out[row["key"]] = row["record"]
    return out


def diffs(a: dict[str, dict], b: dict[str, dict], keys: list[str], ma: str, mb: str, fig: str) -> list[float]:
    """Per mixture, method ``ma`` of ``a`` minus method ``mb`` of ``b`` (where both are defined)."""
    vals = [(a[k]["metrics"][ma][fig], b[k]["metrics"][mb][fig]) for k in keys]
    return [x - y for x, y in vals if x is not None and y is not None]


def cell(values: list[float]) -> str:
    s = mean_interval(values)
    if s.mean is None or s.high is None:
        return "–"
    return f"{s.mean:+.3f} ± {s.high - s.mean:.3f} ({sum(v > 0 for v in values)} of {len(values)})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    args = ap.parse_args()
    old, new = mixtures(args.old), mixtures(args.new)
    keys = sorted(old.keys() & new.keys())
    if not keys:
        raise SystemExit("no mixture is in both files: were they run on the same clean files, noise and seed?")
    for k in keys:
        if (old[k]["noise"], old[k]["offset"]) != (new[k]["noise"], new[k]["offset"]):
            raise SystemExit(f"{k}: the two files mixed different noise; run both with the same noise folder and seed")
    print(f"{len(keys)} mixtures in both files")
    print("| SNR | figure | old minus noisy | new minus noisy | new minus old |")
    print("|---|---|---|---|---|")
    for snr in sorted({old[k]["snr"] for k in keys}):
        ks = [k for k in keys if old[k]["snr"] == snr]
        for fig in ("pesq", "stoi"):
            print(
                f"| {snr:g} dB | {fig} | {cell(diffs(old, old, ks, 'uniaudio', 'noisy', fig))} | "
                f"{cell(diffs(new, new, ks, 'uniaudio', 'noisy', fig))} | "
                f"{cell(diffs(new, old, ks, 'uniaudio', 'uniaudio', fig))} |"
            )


if __name__ == "__main__":
    main()
