"""Codec training: data, losses, discriminators and the training loop.

Nothing outside this subpackage imports it, so the inference path never pays for (or depends
on) training code. Import :func:`uniaudio_cli.train.trainer.train_codec` to train.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from uniaudio_cli.train.trainer import TrainConfig, train_codec

__all__ = ["TrainConfig", "train_codec"]

# A run folder's full training state (weights, optimiser, step): what --resume continues.
STATE_FILE = "train_state.safetensors"


def __getattr__(name: str) -> Any:
    if name in __all__:
        from uniaudio_cli.train import trainer

        return getattr(trainer, name)
    raise AttributeError(name)
