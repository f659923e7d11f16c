"""Encoded clips on disk: the JSON written by ``uniaudio encode --json`` and read by ``decode``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uniaudio_cli.errors import UsageError


@dataclass
class EncodedClip:
    """One clip as LLM token ids per layer (``codes[i]``: layer ``i + 1``)."""

    path: str
    sample_rate: int
    codes: list[list[int]]
    num_samples: int | None = None
    codec: str | None = None

    def to_json(self) -> str:
        obj: dict[str, Any] = {"path": self.path, "sample_rate": self.sample_rate, "codes": self.codes}
        if self.num_samples is not None:
            obj["num_samples"] = self.num_samples
        if self.codec is not None:
            obj["codec"] = self.codec
        return json.dumps(obj, separators=(",", ":"))

    @classmethod
    def from_obj(cls, obj: Any, source: str) -> EncodedClip:
        fix = "pass a file written by `uniaudio encode --json` (keys path, sample_rate, codes)"
        if not isinstance(obj, dict) or "codes" not in obj:
            raise UsageError(f"{source}: no 'codes' in the JSON object", fix)
        codes = obj["codes"]
        if not (isinstance(codes, list) and all(isinstance(c, list) for c in codes)) or not all(
            isinstance(x, int) and not isinstance(x, bool) for c in codes for x in c
        ):
            raise UsageError(f"{source}: 'codes' must be a list of integer lists, one per layer", fix)
        n = obj.get("num_samples")
        return cls(
            path=str(obj.get("path", source)),
            sample_rate=int(obj.get("sample_rate", 16000)),
            codes=codes,
            num_samples=int(n) if isinstance(n, int) and n > 0 else None,
            codec=obj.get("codec"),
        )


def read_encoded(path: Path) -> list[EncodedClip]:
    """A ``.json`` file holding one object, or JSON Lines with one object per line."""
    if not path.exists():
        raise UsageError(f"{path}: no such file", "check the path")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: not a readable JSON file ({e})", "pass codes from `uniaudio encode --json`") from e
    if not text.strip():
        raise UsageError(f"{path}: empty file", "pass codes from `uniaudio encode --json`")
    try:
        return [EncodedClip.from_obj(json.loads(text), str(path))]
    except json.JSONDecodeError:
        pass
    clips = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            clips.append(EncodedClip.from_obj(json.loads(line), f"{path}:{n}"))
        except json.JSONDecodeError as e:
            raise UsageError(f"{path}:{n}: invalid JSON ({e.msg})", "pass codes from `uniaudio encode --json`") from e
    return clips
