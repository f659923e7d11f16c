"""Keyed safetensors files in one folder under ``$UNIAUDIO_HOME``, least recently used deleted past
a size limit: what the prompt store (:mod:`uniaudio_cli.prompt_store`) and the codebook table cache
(:mod:`uniaudio_cli.codec.table_cache`) keep their results in.

A file is named by its key and holds the key in its metadata, so a file of another key or format
is never read as this one's. Files hold no pickled code and are written atomically; a damaged file
is deleted (with a warning) and its result computed again; a full or read-only disk costs only the
recomputation, never the task.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from uniaudio_cli.paths import remove_stale, save_tensors

T = TypeVar("T")


def switched_off(env: str) -> bool:
    """Whether environment variable ``env`` turns a cache off (0, false, no or off)."""
    return os.environ.get(env, "1").strip().lower() in ("0", "false", "no", "off")


def limit_from_env(env: str, default_gb: float) -> int:
    """A size limit in bytes from environment variable ``env`` (gigabytes; ``default_gb`` when unset,
    and with a warning when it is not a positive finite number)."""
    raw = os.environ.get(env)
    if raw is None:
        return int(default_gb * 2**30)
    try:
        gb = float(raw)
    except ValueError:
        gb = math.nan
    if not (math.isfinite(gb) and 0 < gb < 2**33):
        warnings.warn(f"{env}={raw!r} is not a positive number of GB; using {default_gb} GB", stacklevel=3)
        gb = default_gb
    return int(gb * 2**30)


class SafetensorsFiles:
    """The files of one cache.

    Args:
        root: their folder (created at the first write).
        format: the format name every file records; a file of another format is not read.
        limit_bytes: the folder's size limit; the least recently used files go first.
        version: recorded beside the format.
    """

    def __init__(self, root: Path, format: str, limit_bytes: int, version: int = 1) -> None:
        self.root = Path(root)
        self.format = format
        self.limit_bytes = limit_bytes
        self.version = version
        if self.root.is_dir():  # entries whose writer was killed, an hour on
            remove_stale(self.root, ".*.tmp")

    def path(self, key: str) -> Path:
        return self.root / f"{key[:32]}.safetensors"

    def read(self, key: str, what: str, read: Callable[[Any, dict[str, str]], T]) -> T | None:
        """``read(file, metadata)`` of the file of ``key``; ``None`` when it is missing or another
        key's, or when it is unreadable (it is then deleted, with a warning naming ``what``)."""
        from safetensors import safe_open

        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("format") != self.format or meta.get("key") != key:
                    return None
                out = read(f, meta)
        except Exception as e:  # a truncated or foreign file: recompute, and drop it
            warnings.warn(f"{path}: unreadable {what} ({e}); recomputing it", stacklevel=3)
            path.unlink(missing_ok=True)
            return None
        with contextlib.suppress(OSError):  # most recently used (a read-only store still reads)
            os.utime(path)
        return out

    def write(self, key: str, tensors: dict[str, torch.Tensor], meta: dict[str, str], what: str) -> None:
        """Store ``tensors`` under ``key`` with ``meta``, then delete the least recently used other
        files past the limit; a failure is a warning naming ``what``."""
        path = self.path(key)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            header = {"format": self.format, "version": str(self.version), "key": key, **meta}
            save_tensors(tensors, tmp, metadata=header)
            os.replace(tmp, path)
            self._evict(keep=path)
        # A full or read-only disk must not stop the task; safetensors reports its I/O errors
        # as its own SafetensorError, not OSError.
        except Exception as e:
            warnings.warn(f"{self.root}: cannot store {what} ({e})", stacklevel=3)
        finally:  # also when Ctrl-C or SIGTERM stops the write
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)

    def _evict(self, keep: Path) -> None:
        remove_stale(self.root, ".*.tmp")  # entries whose writer was killed
        files = []
        for p in self.root.glob("*.safetensors"):
            with contextlib.suppress(OSError):  # another process may delete it meanwhile
                st = p.stat()
                files.append((st.st_mtime, st.st_size, p))
        total = sum(size for _, size, _ in files)
        for _, size, p in sorted(files, key=lambda item: item[0]):
            if total <= self.limit_bytes:
                break
            if p != keep:
                total -= size
                p.unlink(missing_ok=True)
