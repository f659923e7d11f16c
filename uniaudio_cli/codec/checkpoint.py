"""Codec checkpoints: our folder format and the published UniAudio 1.5 ``.pth``.

Our format is a folder with ``config.json`` (:class:`CodecConfig`, versioned) and
``model.safetensors``. The frozen codebooks are not stored; they are rebuilt from the LLM at
load time and checked against the vocabulary fingerprint in the config.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import torch

from uniaudio_cli.codec.config import CodecConfig
from uniaudio_cli.codec.model import LLMCodec
from uniaudio_cli.errors import CheckpointError, OutputExistsError
from uniaudio_cli.paths import make_shareable, save_tensors

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
_CODEBOOK = re.compile(r"^quantizer\.quantizers\.\d+\.codebook\.weight$")


def trainable_state_dict(model: LLMCodec) -> dict[str, torch.Tensor]:
    """The model's state dict without the frozen codebook tables."""
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if not _CODEBOOK.match(k)}


def save_codec(model: LLMCodec, out_dir: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Write ``out_dir/config.json`` + ``out_dir/model.safetensors`` atomically (whole folder).

    ``dtype`` (e.g. ``torch.float16``) stores floating-point weights at lower precision to keep
    shipped files small; loading casts them back to the model's dtype.

    An existing ``out_dir`` is replaced as a whole, so it may hold only a checkpoint's own two
    files: a folder with anything else in it (a training run, a prototype centre, a model card)
    raises :class:`OutputExistsError` and is left untouched.
    """

    out = Path(out_dir)
    if out.exists():
        own = (CONFIG_FILE, WEIGHTS_FILE)
        others = sorted(p.name for p in out.iterdir() if p.name not in own) if out.is_dir() else []
        if others or not out.is_dir():
            what = f"holds {', '.join(others[:3])}{' ...' if len(others) > 3 else ''}" if others else "is not a folder"
            raise OutputExistsError(
                f"{out}: {what}; writing a codec checkpoint there would replace it",
                "write the checkpoint to a new folder",
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.cfg.save(tmp / CONFIG_FILE)
        sd = trainable_state_dict(model)
        if dtype is not None:
            sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
        save_tensors(sd, tmp / WEIGHTS_FILE, metadata={"format": "uniaudio-llm-codec"})
        make_shareable(tmp)  # mkdtemp makes a private folder; a checkpoint is ordinary shared data
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def load_codec_weights(path: str | Path) -> tuple[CodecConfig, dict[str, torch.Tensor]]:
    """Read a checkpoint folder: its config and its (codebook-free) weights."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(path)
    if not folder.exists():
        raise CheckpointError(f"{folder}: no such codec checkpoint", "pass --codec FOLDER or a published .pth file")
    if not folder.is_dir():
        raise CheckpointError(
            f"{folder}: not a codec checkpoint folder",
            "pass a folder holding config.json + model.safetensors, or a published .pth file",
        )
    cfg = CodecConfig.load(folder / CONFIG_FILE)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{weights}: missing", "the checkpoint folder is incomplete; copy it again")
    try:
        sd = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights}: unreadable ({e})", "the file is corrupt; copy the checkpoint again") from e
    return cfg, sd


def build_codec(cfg: CodecConfig, state_dict: dict[str, torch.Tensor], source: str) -> LLMCodec:
    """Instantiate ``cfg`` and load ``state_dict`` strictly (frozen codebooks may be absent)."""
    model = LLMCodec(cfg)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict and not _CODEBOOK.match(k)]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [
        f"{k} {tuple(state_dict[k].shape)} != {tuple(expected[k].shape)}"
        for k in state_dict
        if k in expected and tuple(state_dict[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:3]}")
        if wrong:
            parts.append(f"wrong shape {wrong[:3]}")
        raise CheckpointError(
            f"{source}: weights do not match its config ({'; '.join(parts)})",
            "the weights and config.json come from different models; copy the checkpoint folder again",
        )
    model.load_state_dict(state_dict, strict=False)
    return model.eval()
