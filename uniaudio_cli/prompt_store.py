"""Prompt KV caches kept on disk, so a prompt computed in one run is read back in the next.

The demonstrations' prompt is the same on every run of a command (the same shipped digits for
``tts``, the same pairs for ``denoise``), and computing its KV cache is most of a run's set-up on
a CPU (about 15 s for the tts audio prompt). A stored cache is read back bit for bit, so results
do not change.

A file is found by a key over the model's fingerprint (class, config, parameter names, shapes,
dtypes and a strided sample of every parameter's values), the torch and transformers versions,
the device type and the prompt's token ids; a changed model or prompt simply misses. Files are
safetensors (no pickled code), written atomically; the least recently used are deleted when the
store grows past its size limit. Lives under ``$UNIAUDIO_HOME/prompt-cache``;
``UNIAUDIO_PROMPT_CACHE=0`` turns it off and ``UNIAUDIO_PROMPT_CACHE_GB`` sets the limit.

Small results computed from a stored prompt (the tts answer step's calibration priors, 20 LLM
passes per run) are kept the same way, under a tag: :meth:`PromptStore.load_values` /
:meth:`PromptStore.save_values`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from uniaudio_cli.disk_cache import SafetensorsFiles, limit_from_env, switched_off

T = TypeVar("T")

FORMAT = "uniaudio-prompt-kv"
VERSION = 1
ENV_SWITCH = "UNIAUDIO_PROMPT_CACHE"
ENV_LIMIT = "UNIAUDIO_PROMPT_CACHE_GB"
DEFAULT_LIMIT_GB = 4.0
# Prompts shorter than this are computed faster than a file is read and hashed.
MIN_TOKENS = 256
# Values hashed per parameter: enough that any fine-tuning or re-quantisation changes the key.
SAMPLES_PER_PARAMETER = 4096


def model_fingerprint(model: Any) -> str:
    """A hex digest identifying ``model``'s architecture and weights (cheap: a strided sample of
    each parameter, not every value)."""
    import transformers

    h = hashlib.sha256()
    h.update(f"{type(model).__name__}|torch {torch.__version__}|transformers {transformers.__version__}".encode())
    config = getattr(model, "config", None)
    if config is not None:
        h.update(config.to_json_string(use_diff=False).encode())
    # Layers spread over GPUs keep their caches there: another placement is another key.
    h.update(repr(sorted(getattr(model, "hf_device_map", {}).items())).encode())
    with torch.no_grad():
        for name, p in model.state_dict().items():
            h.update(f"{name}|{tuple(p.shape)}|{p.dtype}".encode())
            flat = p.detach().reshape(-1)
            step = max(1, flat.numel() // SAMPLES_PER_PARAMETER)
            sample = flat[::step].to("cpu", torch.float32).numpy()
            h.update(np.ascontiguousarray(sample).tobytes())
    return h.hexdigest()


def _layers(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(keys, values)`` per layer of a transformers ``DynamicCache`` (5.x layers or 4.x lists)."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache, strict=True))


class PromptStore:
    """Prompt KV caches on disk for one model.

    Args:
        root: the folder of the cache files.
        model: the model the caches belong to; its :func:`model_fingerprint` is taken when the
            store is first used.
        limit_bytes: the store's size limit; the least recently used files go first.
    """

    def __init__(self, root: Path, model: Any, limit_bytes: int) -> None:
        self._files = SafetensorsFiles(root, FORMAT, limit_bytes, VERSION)
        self.model = model
        # The device type is part of the key: CPU and CUDA kernels round differently.
        self.device_type = next(model.parameters()).device.type
        self._fingerprint: str | None = None

    @property
    def root(self) -> Path:
        return self._files.root

    @property
    def limit_bytes(self) -> int:
        return self._files.limit_bytes

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.model)
        return self._fingerprint

    @classmethod
    def for_model(cls, model: Any, root: Path | None = None) -> PromptStore | None:
        """The default store of ``model`` (``None`` when ``UNIAUDIO_PROMPT_CACHE=0``)."""
        if switched_off(ENV_SWITCH):
            return None
        from uniaudio_cli.paths import home_dir

        return cls(root or home_dir() / "prompt-cache", model, limit_from_env(ENV_LIMIT, DEFAULT_LIMIT_GB))

    def key(self, ids: Sequence[int], tag: str = "") -> str:
        """The file key of prompt ``ids`` (a KV cache), or of values ``tag`` computed from ``ids``."""
        head = f"{FORMAT}:{VERSION}:{self.fingerprint}:{self.device_type}:" + (f"{tag}:" if tag else "")
        h = hashlib.sha256(head.encode())
        h.update(np.asarray(list(ids), dtype=np.int64).tobytes())
        return h.hexdigest()

    def path(self, ids: Sequence[int]) -> Path:
        return self._path(self.key(ids))

    def _path(self, key: str) -> Path:
        return self._files.path(key)

    def _read(self, key: str, what: str, read: Callable[[Any, dict[str, str]], T]) -> T | None:
        return self._files.read(key, what, read)

    def load(self, ids: Sequence[int]) -> tuple[Any, torch.Tensor] | None:
        """The stored ``(cache, logits (V,))`` of prompt ``ids``, each layer on the device it was
        computed on, or ``None`` when it is not stored (or its file is unreadable, which is then
        deleted)."""
        from transformers import DynamicCache

        if len(ids) < MIN_TOKENS:
            return None

        def read(f: Any, meta: dict[str, str]) -> tuple[Any, torch.Tensor]:
            cache = DynamicCache()
            for i, device in enumerate(meta["devices"].split(",")):
                cache.update(f.get_tensor(f"k{i}").to(device), f.get_tensor(f"v{i}").to(device), i)
            return cache, f.get_tensor("logits").to(meta["logits_device"])

        stored = self._read(self.key(ids), "prompt cache", read)
        if stored is None or stored[0].get_seq_length() != len(ids):
            return None
        return stored

    def save(self, ids: Sequence[int], cache: Any, logits: torch.Tensor) -> None:
        """Store the cache of prompt ``ids`` (holding exactly those tokens) and its last logits."""
        if len(ids) < MIN_TOKENS:
            return
        layers = _layers(cache)
        tensors = {"logits": logits.detach().to("cpu").contiguous()}
        for i, (k, v) in enumerate(layers):
            tensors[f"k{i}"] = k[..., : len(ids), :].detach().to("cpu").contiguous()
            tensors[f"v{i}"] = v[..., : len(ids), :].detach().to("cpu").contiguous()
        meta = {
            "devices": ",".join(str(k.device) for k, _ in layers),
            "logits_device": str(logits.device),
        }
        self._write(self.key(ids), tensors, meta)

    def load_values(self, tag: str, ids: Sequence[int]) -> torch.Tensor | None:
        """The tensor stored by :meth:`save_values` for ``(tag, ids)``, on the CPU, or ``None``."""
        return self._read(self.key(ids, tag), "stored values", lambda f, _meta: f.get_tensor("values"))

    def save_values(self, tag: str, ids: Sequence[int], values: torch.Tensor) -> None:
        """Store ``values`` (any shape) computed by the model from token ids ``ids``, e.g. from a
        prompt and its queries; ``tag`` names what they are, so that the same ids can key several."""
        self._write(self.key(ids, tag), {"values": values.detach().to("cpu").contiguous()}, {"tag": tag})

    def _write(self, key: str, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
        self._files.write(key, tensors, meta, "a prompt cache")
