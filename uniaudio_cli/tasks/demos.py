"""Demonstration folders (``DIR/<label or text>/<clips>``) and clip cropping."""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from uniaudio_cli.audio import is_audio_file, probe_audio
from uniaudio_cli.errors import UsageError


@dataclass
class DemoFolder:
    """Clips per label, sorted by file name; ``hidden``: sub-folders whose names start with
    ``.`` (``.ipynb_checkpoints``, ``.git``), which are not labels and are reported, not used."""

    root: Path
    clips: dict[str, list[Path]]
    hidden: list[str] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        return list(self.clips)

    def pick(self, shots: int | None, seed: int | None = 0) -> dict[str, list[Path]]:
        """``shots`` clips per label: every clip when ``None``, else the first ones, or a seeded
        random draw when ``seed`` is set.

        Raises :class:`UsageError` when a label has fewer clips than ``shots``.
        """
        if shots is None:
            return {label: list(c) for label, c in self.clips.items()}
        short = {label: len(c) for label, c in self.clips.items() if len(c) < shots}
        if short:
            label, n = next(iter(short.items()))
            raise UsageError(
                f"{self.root / label}: {n} clip(s), --shots {shots} needs {shots} per label",
                "add clips to that folder or lower --shots",
            )
        if seed is None:
            return {label: c[:shots] for label, c in self.clips.items()}
        rng = random.Random(seed)
        return {label: rng.sample(c, shots) for label, c in self.clips.items()}


def load_demo_folder(root: str | Path, min_labels: int = 2) -> DemoFolder:
    """Read ``root/<label>/<audio files>``; every label folder must hold audio."""
    root = Path(root)
    if not root.exists():
        raise UsageError(f"{root}: no such demonstration folder", "pass a folder of label folders, DIR/<label>/<clips>")
    if not root.is_dir():
        raise UsageError(f"{root}: not a folder", "pass a folder of label folders, DIR/<label>/<clips>")
    clips: dict[str, list[Path]] = {}
    subs = sorted(p for p in root.iterdir() if p.is_dir())
    hidden = [p.name for p in subs if p.name.startswith(".")]
    for sub in (p for p in subs if not p.name.startswith(".")):
        files = sorted(f for f in sub.rglob("*") if is_audio_file(f))
        if not files:
            raise UsageError(f"{sub}: label folder holds no audio files", "add clips or remove the folder")
        clips[sub.name] = files
    if len(clips) < min_labels:
        skipped = f" (hidden folders are not labels: {', '.join(hidden)})" if hidden else ""
        raise UsageError(
            f"{root}: {len(clips)} label folder(s), at least {min_labels} needed{skipped}",
            "lay demonstrations out as DIR/<label>/<clips>, one sub-folder per label",
        )
    return DemoFolder(root, clips, hidden)


def check_demo_clips(clips: Iterable[Path], max_seconds: float | None = None) -> None:
    """Read every demonstration clip before any model loads: one bad clip would stop the task
    after loading, so it is refused now, naming the file (:class:`AudioError`: unreadable,
    empty, NaN or infinite samples, silent, or longer than ``max_seconds``)."""
    for path in clips:
        probe_audio(path, max_seconds, read=True)


def describe_demos(folder: DemoFolder, chosen: dict[str, list[Path]]) -> str:
    """One line naming how many clips of each label a run uses, and what it left out."""
    parts = [f"{label}: {len(paths)}/{len(folder.clips[label])}" for label, paths in chosen.items()]
    line = f"demonstrations from {folder.root}: " + ", ".join(parts) + " clips"
    if folder.hidden:
        line += f"; hidden folders ignored: {', '.join(folder.hidden)}"
    return line


def crop_or_pad(wav: np.ndarray, samples: int, mode: str = "start") -> np.ndarray:
    """Exactly ``samples`` long: zero-padded at the end, or cropped.

    ``mode="start"`` keeps the first samples (the reference release); ``"loudest"`` keeps the
    window with the most energy, so an event late in a clip is not cropped away.
    """
    if len(wav) <= samples:
        return np.pad(wav, (0, samples - len(wav)))
    if mode == "start":
        return wav[:samples]
    energy = np.concatenate([[0.0], np.cumsum(wav.astype(np.float64) ** 2)])
    hop = max(samples // 10, 1)
    starts = np.arange(0, len(wav) - samples + 1, hop)
    best = int(starts[np.argmax(energy[starts + samples] - energy[starts])])
    return wav[best : best + samples]
