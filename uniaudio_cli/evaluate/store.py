"""Resumable evaluation results: one JSON Lines file per run, one record per finished unit.

A long evaluation (classification episodes, denoised mixtures) writes each unit's record as soon
as it is done, with ``flush`` + ``fsync``, so an interrupt or a crash loses at most the unit in
progress. Run the same command again and the units already in the file are read back instead of
recomputed. The first line is a header holding the run's settings; a file written with other
settings is refused rather than mixed in.

Also: the Wilson score interval for a pooled proportion (accuracy over all queries).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from uniaudio_cli.errors import UsageError
from uniaudio_cli.evaluate.report import json_safe

FORMAT = "uniaudio-eval-results/1"


def relative_name(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` when inside it (stable keys across checkouts), else as given."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def announce_resume(path: Path, done: int, total: int, unit: str) -> None:
    """Tell the user where results go and how many of ``total`` ``unit`` are already there."""
    from uniaudio_cli.batch import stderr

    stderr.print(
        f"results: {path} ({done} of {total} {unit} already done; an interrupted run "
        "resumes when the same command runs again)",
        soft_wrap=True,
    )


def settings_hash(settings: dict[str, Any], length: int = 16) -> str:
    """A stable short hash of JSON-able ``settings`` (key order does not matter)."""
    text = json.dumps(json_safe(settings), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def file_fingerprint(source: str | os.PathLike[str] | None) -> str | None:
    """A short hash of the names, sizes and modification times of the files at ``source`` (a
    file or a folder, e.g. a codec checkpoint), so that results of a checkpoint retrained in
    place are not mixed with the old ones; ``None`` when ``source`` is not on disk."""
    if not source:
        return None
    p = Path(source)
    if not p.exists():
        return None
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    stats = [(str(f.relative_to(p)) if p.is_dir() else f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    return settings_hash({"files": stats}, 12)


def default_results_path(kind: str, settings: dict[str, Any]) -> Path:
    """``$UNIAUDIO_HOME/eval/<kind>-<hash of settings>.jsonl``."""
    from uniaudio_cli.paths import cache_dir

    return cache_dir("eval") / f"{kind}-{settings_hash(settings)}.jsonl"


class ResultStore:
    """Records keyed by a string, persisted to ``path`` (JSON Lines).

    ``get(key)`` returns a finished record or ``None``; ``add(key, record)`` stores one and makes
    it durable before returning. A truncated last line (the process was killed mid-write) is
    ignored, and cut off so that the next record starts on a line of its own.
    """

    def __init__(self, path: str | Path, settings: dict[str, Any]) -> None:
        self.path = Path(path)
        self.settings = json_safe(settings)
        self.records: dict[str, dict[str, Any]] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size > 0:
            self._load()
        else:
            self._append({"type": "header", "format": FORMAT, "settings": self.settings})

    def _load(self) -> None:
        good_bytes = 0
        header: dict[str, Any] | None = None
        with open(self.path, "rb") as f:
            for raw in f:
                if not raw.endswith(b"\n"):
                    break  # a partial line from an interrupted write
                try:
                    obj = json.loads(raw)
                except json.JSONDecodeError:
                    break
                if header is None:
                    header = obj if isinstance(obj, dict) else {}  # not ours: refused below
                elif not isinstance(obj, dict) or (obj.get("type") == "record" and not {"key", "record"} <= obj.keys()):
                    break  # a line of something else: the good part ends here, as at a torn line
                elif obj.get("type") == "record":
                    self.records[str(obj["key"])] = obj["record"]
                good_bytes += len(raw)
        if header is None or header.get("format") != FORMAT:
            raise UsageError(
                f"{self.path}: not a uniaudio results file", "pass another --results FILE, or delete this one"
            )
        if header.get("settings") != self.settings:
            changed = sorted(
                k
                for k in set(header.get("settings", {})) | set(self.settings)
                if header.get("settings", {}).get(k) != self.settings.get(k)
            )
            raise UsageError(
                f"{self.path}: holds results of other settings ({', '.join(changed) or 'different'})",
                "pass another --results FILE for these settings, or delete this one to start over",
            )
        if good_bytes < self.path.stat().st_size:
            with open(self.path, "r+b") as f:
                f.truncate(good_bytes)

    def _append(self, obj: dict[str, Any]) -> None:
        line = json.dumps(json_safe(obj), allow_nan=False, ensure_ascii=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[str]:
        return iter(self.records)

    def get(self, key: str) -> dict[str, Any] | None:
        return self.records.get(key)

    def add(self, key: str, record: dict[str, Any]) -> dict[str, Any]:
        """Store ``record`` under ``key`` durably (flush + fsync) and return it JSON-safe."""
        record = json_safe(record)
        self._append({"type": "record", "key": key, "record": record})
        self.records[key] = record
        return record


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval of a binomial proportion; ``None`` when ``trials`` is 0."""
    if trials <= 0:
        return None
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + confidence / 2))
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)
