"""Device and dtype resolution, done once per run."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from uniaudio_cli.errors import UsageError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# --dtype names -> torch dtype attribute names (kept as strings: checked without importing torch).
_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "float16": "float16",
    "fp16": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}
DTYPE_NAMES = ("auto", *sorted(_DTYPES))
# Device strings torch.device accepts that uniaudio can run on (checked without importing torch).
_DEVICE = re.compile(r"auto|cpu|mps|(cuda|xpu)(:\d+)?")


def check_runtime_options(device: str | None, dtype: str | None = None) -> None:
    """Refuse an unknown ``device`` or ``dtype`` name without importing torch, so that a typo
    fails at once rather than after seconds of loading (:class:`UsageError`)."""
    if device is not None and not _DEVICE.fullmatch(device):
        raise UsageError(f"unknown device {device!r}", "use cpu, cuda or cuda:N")
    if dtype is not None and dtype not in DTYPE_NAMES:
        raise UsageError(f"unknown dtype {dtype!r}", f"use one of {', '.join(DTYPE_NAMES)}")


def resolve_device(device: str | None = None) -> torch.device:
    """``None`` means CUDA when present, else CPU; an unavailable CUDA, MPS or XPU request falls
    back to the CPU with a warning."""
    import torch

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise UsageError(f"unknown device {device!r}", "use cpu, cuda or cuda:N") from e
    available = {
        "cuda": torch.cuda.is_available,
        "mps": lambda: torch.backends.mps.is_available(),
        "xpu": lambda: hasattr(torch, "xpu") and torch.xpu.is_available(),
    }
    if dev.type in available and not available[dev.type]():
        log.warning("%s requested but not available; running on CPU", dev.type.upper())
        return torch.device("cpu")
    return dev


def resolve_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    """``None``/``auto``: bfloat16 on CUDA (float16 where bf16 is unsupported), float32 on CPU."""
    import torch

    if dtype is None or dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    check_runtime_options(None, dtype)
    resolved = getattr(torch, _DTYPES[dtype])
    if device.type == "cpu" and resolved == torch.float16:
        log.warning("float16 is slow and inaccurate on CPU; using float32")
        return torch.float32
    return resolved
