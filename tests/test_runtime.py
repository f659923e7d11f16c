"""Device and dtype resolution: ``None`` means CUDA when present, fallbacks warn."""

from __future__ import annotations

import logging

import pytest
import torch

from uniaudio_cli.errors import UsageError
from uniaudio_cli.runtime import DTYPE_NAMES, check_runtime_options, resolve_device, resolve_dtype

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_device_defaults_to_cuda_when_present_and_falls_back_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device(None) == CUDA and resolve_device("auto") == CUDA
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(None) == CPU
    with caplog.at_level(logging.WARNING, logger="uniaudio_cli.runtime"):
        assert resolve_device("cuda") == CPU
    assert "CUDA requested but not available" in caplog.text
    # This machine has neither MPS nor XPU: they fall back as CUDA does, never a traceback.
    with caplog.at_level(logging.WARNING, logger="uniaudio_cli.runtime"):
        assert resolve_device("mps") == CPU and resolve_device("xpu:0") == CPU
    assert "MPS requested but not available" in caplog.text and "XPU requested" in caplog.text
    with pytest.raises(UsageError, match="unknown device 'gpu0'"):
        check_runtime_options("gpu0")


def test_dtype_is_resolved_once_per_device(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    assert resolve_dtype(None, CPU) == torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_dtype(None, CUDA) == torch.bfloat16 and resolve_dtype("auto", CUDA) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_dtype(None, CUDA) == torch.float16
    assert resolve_dtype("fp16", CUDA) == torch.float16 and resolve_dtype("bf16", CPU) == torch.bfloat16
    with caplog.at_level(logging.WARNING, logger="uniaudio_cli.runtime"):
        assert resolve_dtype("float16", CPU) == torch.float32
    assert "float16 is slow and inaccurate on CPU" in caplog.text
    for name in DTYPE_NAMES:
        assert isinstance(resolve_dtype(name, CUDA), torch.dtype)
    with pytest.raises(UsageError, match="unknown dtype 'half'"):
        resolve_dtype("half", CPU)
