"""Compare codec checkpoints on the held-out sets, clip by clip.

    python bench/codec_compare.py checkpoints/llm-codec-smollm2 runs/s13 [runs/s13b ...]
        [--sets librispeech,fsdd,esc10] [--max-files N] [--jobs 2] [--out runs/compare]

Each codec round-trips every clip of each held-out set (``python bench/heldout.py`` makes them;
none is used for training; 100 LibriSpeech, 500 FSDD, 80 ESC-10 clips), or ``--max-files`` of
them evenly spaced, through ``uniaudio eval codec --json``, one thread per job. (Until the fifth
session of 2026-12-04 it took the first 100 of each: on FSDD that is the digits 0 and 1 alone.)
The reports are kept as ``OUT/<weights sha256>-<set>-<all|spreadN>.json``, so a codec
already measured (by any path) is not measured again and a retrained one is. Printed per set:
each codec's mean PESQ-WB / STOI / log-mel distance and codebook usage, and for each codec after
the first its paired change against the first (same clips): mean, 95 % half-width (Student t,
as ``uniaudio eval`` reports) and on how many clips it is better. PESQ or STOI undefined for a clip in either
report leaves that clip out of that figure's pair. A kept report keeps the timing of the run
that made it, under whatever else the machine was doing then, so the RTF column names when each
was taken; compare speeds only between reports made side by side on an idle machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from uniaudio_cli.evaluate.codec_eval import mean_interval

ROOT = Path(__file__).resolve().parents[1]
SETS = {
    "librispeech": ROOT / ".data/heldout/speech/librispeech",
    "fsdd": ROOT / ".data/heldout/speech/fsdd",
    "esc10": ROOT / ".data/heldout/esc10",
}
# (report key, label, higher is better)
FIGURES = (("pesq", "PESQ-WB", True), ("stoi", "STOI", True), ("mel_distance", "mel", False))


def weights_digest(codec: Path) -> str:
    """Of the weights, and of the config when it sets anything that changes the codes or the
    audio of the same weights (``residual_search``, ``small_contrast``, ``small_contrast_smooth``),
    so that two such codecs keep separate reports."""
    h = hashlib.sha256()
    with open(codec / "model.safetensors", "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    config = json.loads((codec / "config.json").read_text())
    search = config.get("residual_search", "cosine")
    if search != "cosine":
        h.update(f"residual_search:{search}".encode())
    contrast = config.get("small_contrast", 1.0)
    if contrast != 1.0:
        h.update(f"small_contrast:{contrast}".encode())
        smooth = config.get("small_contrast_smooth", 0)
        if smooth:
            h.update(f"small_contrast_smooth:{smooth}".encode())
    return h.hexdigest()[:16]


def measure(codec: Path, folder: Path, max_files: int | None, out: Path) -> dict[str, Any]:
    """The ``eval codec --json`` report of ``codec`` on ``folder``, from ``out`` when kept, with
    ``measured_at``: when it was made (the file's time)."""
    subset = f"spread{max_files}" if max_files else "all"
    path = out / f"{weights_digest(codec)}-{folder.name}-{subset}.json"
    if not path.is_file():
        cmd = [sys.executable, "-m", "uniaudio_cli", "eval", "codec", str(folder), "--codec", str(codec)]
        cmd += [*(["--max-files", str(max_files)] if max_files else []), "--json", "-q"]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"{codec} on {folder}: {done.stderr.strip().splitlines()[-1:]}")
        tmp = path.with_suffix(".tmp")
        tmp.write_text(done.stdout)
        tmp.replace(path)
    report = json.loads(path.read_text())
    report["measured_at"] = time.strftime("%Y-%m-%d %H:%M", time.localtime(path.stat().st_mtime))
    return report


def paired(base: list[dict[str, Any]], new: list[dict[str, Any]], key: str, higher: bool) -> str:
    """``mean ± half-width (better on k of n)`` of ``new - base`` over clips both measured."""
    old = {c["path"]: c[key] for c in base}
    diffs = [c[key] - old[c["path"]] for c in new if c[key] is not None and old.get(c["path"]) is not None]
    summary = mean_interval(diffs)
    if summary.low is None or summary.mean is None:
        return "n/a"
    better = sum((d > 0) if higher else (d < 0) for d in diffs)
    half = summary.mean - summary.low
    return f"{summary.mean:+.4f} ± {half:.4f} (better on {better} of {summary.n})"


def mean(clips: list[dict[str, Any]], key: str) -> str:
    values = [c[key] for c in clips if c[key] is not None]
    return f"{sum(values) / len(values):.4f} ({len(values)})" if values else "n/a"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("codecs", nargs="+", type=Path, help="codec checkpoint folders; the first is the baseline")
    ap.add_argument("--sets", default=",".join(SETS), help=f"held-out sets among {', '.join(SETS)}")
    ap.add_argument("--max-files", type=int, default=None, help="N clips of each set, evenly spaced (default: all)")
    ap.add_argument("--jobs", type=int, default=2, help="evaluations run at once (one thread each)")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "compare", help="where the reports are kept")
    args = ap.parse_args()
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    for s in sets:
        if s not in SETS:
            raise SystemExit(f"unknown set {s!r}: choose among {', '.join(SETS)}")
        if not SETS[s].is_dir():
            raise SystemExit(f"{SETS[s]} is missing: run python bench/heldout.py first")
    for c in args.codecs:
        if not (c / "model.safetensors").is_file():
            raise SystemExit(f"{c}: not a codec checkpoint folder (no model.safetensors)")
    args.out.mkdir(parents=True, exist_ok=True)

    jobs = [(c, s) for s in sets for c in args.codecs]
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        reports = dict(
            zip(jobs, pool.map(lambda job: measure(job[0], SETS[job[1]], args.max_files, args.out), jobs), strict=True)
        )

    for s in sets:
        n = len(reports[(args.codecs[0], s)]["clips"])
        print(f"\n## {s} ({n} clips{', evenly spaced' if args.max_files else ''})\n")
        print("| codec | PESQ-WB (n) | STOI (n) | mel (n) | distinct codes per layer | RTF encode + decode (when) |")
        print("|---|---|---|---|---|---|")
        for c in args.codecs:
            r = reports[(c, s)]
            usage = " / ".join(str(layer["distinct"]) for layer in r["layers"])
            rtf = f"{r['total_rtf']['encode']:.4f} + {r['total_rtf']['decode']:.4f} ({r['measured_at']})"
            print(f"| {c} | {' | '.join(mean(r['clips'], k) for k, _, _ in FIGURES)} | {usage} | {rtf} |")
        base = reports[(args.codecs[0], s)]["clips"]
        for c in args.codecs[1:]:
            clips = reports[(c, s)]["clips"]
            print(f"\n{c} minus {args.codecs[0]}:")
            for key, label, higher in FIGURES:
                print(f"  {label:8s} {paired(base, clips, key, higher)}")


if __name__ == "__main__":
    main()
