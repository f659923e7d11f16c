"""Compare classification results files episode by episode (e.g. two codecs, or two methods).

    python bench/classify_compare.py runs/cls/old.jsonl runs/cls/new.jsonl [more.jsonl ...]

Each file is what ``uniaudio eval classify ... --results FILE`` writes. Episodes are paired by
their record key (configuration and episode number) and must hold the same demonstrations and
queries, which the same ``--seed``, ``--episodes`` and ``--queries`` give; a pair that does not
is an error, since its difference would mix the codec with the draw. Printed for each file: its
accuracy over the paired episodes, and for each file after the first, its paired change against
the first in points per episode (mean, 95 % Student-t half-width) and on how many episodes it is
better / worse.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from uniaudio_cli.evaluate.codec_eval import mean_interval


def load_episodes(path: Path) -> dict[str, dict[str, Any]]:
    """Record key -> episode record of one results file (header and other lines skipped)."""
    episodes = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if row.get("type") == "record":
            episodes[row["key"]] = row["record"]
    return episodes


def accuracy(episode: dict[str, Any]) -> float:
    queries = episode["queries"]
    return 100.0 * sum(q["pred"] == q["label"] for q in queries) / len(queries)


def draw(episode: dict[str, Any]) -> tuple[Any, ...]:
    """What the seed decides: the demonstrations and the queries, in order."""
    demos = tuple((label, tuple(paths)) for label, paths in sorted(episode["demos"].items()))
    return demos, tuple(q["path"] for q in episode["queries"])


def compare(files: list[Path]) -> list[str]:
    """The report's lines; raises ``ValueError`` when paired episodes were drawn differently."""
    runs = [load_episodes(f) for f in files]
    keys = sorted(set.intersection(*(set(r) for r in runs)))
    if not keys:
        raise ValueError("the files share no episode (were they run with the same settings?)")
    for key in keys:
        if len({draw(r[key]) for r in runs}) > 1:
            raise ValueError(f"episode {key} holds different demonstrations or queries across the files")
    base = [accuracy(runs[0][k]) for k in keys]
    lines = [f"{len(keys)} paired episodes"]
    for path, run in zip(files, runs, strict=True):
        acc = [accuracy(run[k]) for k in keys]
        line = f"{path}: {sum(acc) / len(acc):.1f} %"
        if run is not runs[0]:
            diffs = [a - b for a, b in zip(acc, base, strict=True)]
            s = mean_interval(diffs)
            half = f" ± {s.mean - s.low:.1f}" if s.mean is not None and s.low is not None else ""
            better = sum(d > 0 for d in diffs)
            worse = sum(d < 0 for d in diffs)
            line += f", paired {s.mean:+.1f}{half} points (better on {better}, worse on {worse})"
        lines.append(line)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("files", nargs="+", type=Path, help="results files; the first is the baseline")
    args = parser.parse_args()
    if len(args.files) < 2:
        parser.error("give at least two results files")
    try:
        print("\n".join(compare(args.files)))
    except (OSError, ValueError, KeyError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
