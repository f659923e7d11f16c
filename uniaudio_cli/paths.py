"""Where uniaudio keeps user state. Everything lives under one directory, ``$UNIAUDIO_HOME``."""

from __future__ import annotations

import os
from pathlib import Path

ENV_HOME = "UNIAUDIO_HOME"


def home_dir() -> Path:
    """``$UNIAUDIO_HOME``, else ``$XDG_CACHE_HOME/uniaudio``, else ``~/.cache/uniaudio``."""
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "uniaudio"


def cache_dir(*parts: str) -> Path:
    """A sub-directory of :func:`home_dir`, created on demand."""
    path = home_dir().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def project_root() -> Path:
    """The source tree (holds ``checkpoints/`` and ``prompts/``)."""
    return Path(__file__).resolve().parent.parent


def default_codec_path() -> Path:
    """The shipped default LLM-Codec checkpoint folder."""
    env = os.environ.get("UNIAUDIO_CODEC")
    return Path(env) if env else project_root() / "checkpoints" / "llm-codec-smollm2"
