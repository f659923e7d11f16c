"""The LLM-Codec: config, model, quantizer, checkpoints and the public :class:`Codec`.

Submodules import torch; import them (or :func:`load_codec`) only when needed so that the CLI
starts instantly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from uniaudio_cli.codec.api import Codec, load_codec
    from uniaudio_cli.codec.config import CodecConfig
    from uniaudio_cli.codec.model import LLMCodec

__all__ = ["Codec", "CodecConfig", "LLMCodec", "load_codec"]


def __getattr__(name: str) -> Any:
    if name in ("Codec", "load_codec"):
        from uniaudio_cli.codec import api

        return getattr(api, name)
    if name == "CodecConfig":
        from uniaudio_cli.codec.config import CodecConfig

        return CodecConfig
    if name == "LLMCodec":
        from uniaudio_cli.codec.model import LLMCodec

        return LLMCodec
    raise AttributeError(name)
