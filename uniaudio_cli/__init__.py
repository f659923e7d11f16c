"""uniaudio: few-shot audio tasks on frozen LLMs through an LLM-vocabulary audio codec.

The public API lives in :mod:`uniaudio_cli.api` and is re-exported here (imported lazily, so
that ``import uniaudio_cli`` and ``uniaudio --help`` stay instant)::

    import uniaudio_cli as ua

    models = ua.load_models()
    print(ua.classify(models, "demos/", ["query.wav"])[0].label)
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = [
    "Models",
    "__version__",
    "classifier",
    "classify",
    "decode",
    "denoise",
    "denoiser",
    "encode",
    "generate",
    "generator",
    "load_models",
    "speak",
    "speaker",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from uniaudio_cli import api

        return getattr(api, name)
    raise AttributeError(f"module 'uniaudio_cli' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The lazy API beside the module's own names, so that tab completion finds it."""
    return sorted(set(globals()) | set(__all__))
