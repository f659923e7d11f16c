"""Demonstration folders (``DIR/<label or text>/<clips>``) and clip cropping."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from uniaudio_cli.audio import is_audio_file
from uniaudio_cli.errors import UsageError


@dataclass
class DemoFolder:
    """Clips per label, sorted by file name."""

    root: Path
    clips: dict[str, list[Path]]

    @property
    def labels(self) -> list[str]:
        return list(self.clips)

    def pick(self, shots: int, seed: int | None = 0) -> dict[str, list[Path]]:
        """``shots`` clips per label: the first ones, or a seeded random draw when ``seed`` is set.

        Raises :class:`UsageError` when a label has fewer clips than ``shots``.
        """
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
        raise UsageError(f"{root}: no such demonstration folder", "pass --demos DIR with DIR/<label>/<clips>")
    if not root.is_dir():
        raise UsageError(f"{root}: not a folder", "pass --demos DIR with DIR/<label>/<clips>")
    clips: dict[str, list[Path]] = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(f for f in sub.rglob("*") if is_audio_file(f))
        if not files:
            raise UsageError(f"{sub}: label folder holds no audio files", "add clips or remove the folder")
        clips[sub.name] = files
    if len(clips) < min_labels:
        raise UsageError(
            f"{root}: {len(clips)} label folder(s), at least {min_labels} needed",
            "lay demonstrations out as DIR/<label>/<clips>, one sub-folder per label",
        )
    return DemoFolder(root, clips)


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
