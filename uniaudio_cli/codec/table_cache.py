"""Projected codebook tables kept on disk, so that a process does not project them again.

A layer's search and its decoding use every row of its codebook mapped into the latent space
(:meth:`~uniaudio_cli.codec.quantizer.LLMVectorQuantizer.projected_codebook`). For the default
codec that is 49k LLM rows through a linear map and a residual MLP in each of layers 2 and 3:
1-3 s of one CPU core at the first encoding or decoding of every process, so of every command.
A table computed once is stored and read back bit for bit, so codes do not change.

A file is found by a key over the map's weights (every value), a strided sample of the frozen
rows, their shapes and dtypes, and the torch version; a changed codec or LLM simply misses.
Files are kept by :class:`~uniaudio_cli.disk_cache.SafetensorsFiles`, as the prompt store's are.
Only CPU tables are stored: a GPU projects them in milliseconds. Lives under
``$UNIAUDIO_HOME/codebook-cache``; the least recently used files are deleted past
``UNIAUDIO_TABLE_CACHE_GB`` (default 1, about ten codecs like the default; comparing many trained
checkpoints would otherwise leave 96 MB each), and ``UNIAUDIO_TABLE_CACHE=0`` turns it off.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch

from uniaudio_cli.codec.quantizer import LLMVectorQuantizer
from uniaudio_cli.disk_cache import SafetensorsFiles, limit_from_env, switched_off

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
    return not switched_off(ENV_SWITCH)


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
    storing those not found (the store then kept within ``limit`` bytes, default
    ``UNIAUDIO_TABLE_CACHE_GB``); returns how many were read. A file that cannot be read or
    written costs only the projection (with a warning), never the load."""
    if limit is None:
        limit = limit_from_env(ENV_LIMIT, DEFAULT_LIMIT_GB)
    files = SafetensorsFiles(root, FORMAT, limit, VERSION)
    read = 0
    for layer in layers:
        cb = layer.codebook.weight
        if cb.device.type != "cpu" or cb.shape[0] < MIN_ROWS:
            continue
        key = table_key(layer)
        table = files.read(key, "codebook table", lambda f, _meta: f.get_tensor("table"))
        if table is not None and layer.install_projected_codebook(table):
            read += 1
            continue
        with torch.no_grad():
            table = layer.projected_codebook()
        files.write(key, {"table": table.contiguous()}, {}, "a codebook table")
    log.debug("projected codebook tables: %d read from %s", read, root)
    return read
