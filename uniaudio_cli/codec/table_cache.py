"""Projected codebook tables kept on disk, so that a process does not project them again.

A layer's search and its decoding use every row of its codebook mapped into the latent space
(:meth:`~uniaudio_cli.codec.quantizer.LLMVectorQuantizer.projected_codebook`). For the default
codec that is 49k LLM rows through a linear map and a residual MLP in each of layers 2 and 3:
1-3 s of one CPU core at the first encoding or decoding of every process, so of every command.
A table computed once is stored and read back bit for bit, so codes do not change.

A file is found by a key over the map's weights (every value), a strided sample of the frozen
rows, their shapes and dtypes, and the torch version; a changed codec or LLM simply misses.
Files are safetensors (no pickled code), written atomically. Only CPU tables are stored: a GPU
projects them in milliseconds. Lives under ``$UNIAUDIO_HOME/codebook-cache``; the least recently
used files are deleted past ``UNIAUDIO_TABLE_CACHE_GB`` (default 1, about ten codecs like the
default; comparing many trained checkpoints would otherwise leave 96 MB each), and
``UNIAUDIO_TABLE_CACHE=0`` turns it off.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from uniaudio_cli.codec.quantizer import LLMVectorQuantizer

log = logging.getLogger(__name__)

FORMAT = "uniaudio-projected-codebook"
VERSION = 1
ENV_SWITCH = "UNIAUDIO_TABLE_CACHE"
ENV_LIMIT = "UNIAUDIO_TABLE_CACHE_GB"
DEFAULT_LIMIT_GB = 1.0
# Narrower tables project faster than a file is read.
MIN_ROWS = 8192
# Values of the frozen rows hashed: they come from the LLM, whose table is checked against its
# SHA-256 when the codec loads, so a sample suffices to tell two LLMs apart.
ROW_SAMPLES = 65536


def enabled() -> bool:
    """Whether the cache is on (``UNIAUDIO_TABLE_CACHE`` is not 0, false, no or off)."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def limit_bytes() -> int:
    """The store's size limit (``UNIAUDIO_TABLE_CACHE_GB``, default 1 GB)."""
    try:
        gb = float(os.environ.get(ENV_LIMIT, DEFAULT_LIMIT_GB))
    except ValueError:
        warnings.warn(f"{ENV_LIMIT} is not a number; using {DEFAULT_LIMIT_GB} GB", stacklevel=2)
        gb = DEFAULT_LIMIT_GB
    return int(gb * 2**30)


def prune(root: Path, limit: int) -> None:
    """Delete the least recently used tables of ``root`` until the rest fit in ``limit`` bytes."""
    files = []
    for f in Path(root).glob("*.safetensors"):
        try:
            st = f.stat()
        except OSError:
            continue
        files.append((st.st_mtime, st.st_size, f))
    total = sum(size for _, size, _ in files)
    for _, size, f in sorted(files, key=lambda item: item[0]):
        if total <= limit:
            break
        f.unlink(missing_ok=True)
        total -= size


def table_key(layer: LLMVectorQuantizer) -> str:
    """The file key of ``layer``'s projected table."""
    h = hashlib.sha256(f"{FORMAT}:{VERSION}:torch {torch.__version__}".encode())
    with torch.no_grad():
        for name, p in sorted(layer.projection_params().items()):
            t = p.detach().to("cpu").contiguous()
            h.update(f"{name}|{tuple(t.shape)}|{t.dtype};".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        rows = layer.codebook.weight.detach()
        h.update(f"rows|{tuple(rows.shape)}|{rows.dtype};".encode())
        flat = rows.reshape(-1)
        sample = flat[:: max(1, flat.numel() // ROW_SAMPLES)].to("cpu", torch.float32)
        h.update(np.ascontiguousarray(sample.numpy()).tobytes())
    return h.hexdigest()


def load_tables(layers: list[LLMVectorQuantizer], root: Path, limit: int | None = None) -> int:
    """Give each wide CPU layer of ``layers`` its projected table from ``root``, computing and
    storing those not found (then pruning the store to ``limit`` bytes, default
    :func:`limit_bytes`); returns how many were read. A file that cannot be read or written costs
    only the projection (with a warning), never the load."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    read = 0
    for layer in layers:
        cb = layer.codebook.weight
        if cb.device.type != "cpu" or cb.shape[0] < MIN_ROWS:
            continue
        key = table_key(layer)
        path = Path(root) / f"{key[:32]}.safetensors"
        table = None
        if path.is_file():
            try:
                with safe_open(str(path), framework="pt") as f:
                    if (f.metadata() or {}).get("key") == key:
                        table = f.get_tensor("table")
            except Exception as e:  # a truncated or foreign file: project again, and replace it
                warnings.warn(f"{path}: unreadable codebook table ({e}); projecting it again", stacklevel=2)
        if table is not None and layer.install_projected_codebook(table):
            read += 1
            with contextlib.suppress(OSError):  # a read marks it recently used, for pruning
                os.utime(path)
            continue
        with torch.no_grad():
            table = layer.projected_codebook()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            save_file({"table": table.contiguous()}, str(tmp), metadata={"format": FORMAT, "key": key})
            tmp.replace(path)
            prune(path.parent, limit_bytes() if limit is None else limit)
        except OSError as e:
            warnings.warn(f"{path}: cannot store the codebook table ({e}); it is projected on every run", stacklevel=2)
    log.debug("projected codebook tables: %d read from %s", read, root)
    return read
