"""Where uniaudio keeps user state (everything under one directory, ``$UNIAUDIO_HOME``) and where it
finds the data it ships (prompts and the default codec, inside the installed package)."""

from __future__ import annotations

import hashlib
import os
from importlib import resources
from pathlib import Path
from typing import Any

from uniaudio_cli.errors import UniaudioError

ENV_HOME = "UNIAUDIO_HOME"
ENV_CODEC = "UNIAUDIO_CODEC"
ASSETS = "uniaudio_cli.assets"  # the packages holding prompts/ and checkpoints/ (pyproject.toml)
DEFAULT_CODEC = "llm-codec-smollm2"


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
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UniaudioError(
            f"{path}: cannot create uniaudio's cache folder ({e.strerror or e})",
            f"set {ENV_HOME} to a folder you can write to",
        ) from e
    return path


def umask() -> int:
    """The process's file-creation mask."""
    # os.umask can only be read by setting it; put it straight back.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_shareable(path: str | Path) -> None:
    """Give a file (or a folder) the permissions an ordinary new one would get under the umask.

    ``mkstemp``/``mkdtemp`` and safetensors' ``save_file`` create private files (0600, 0700);
    a model cache or a checkpoint shared between users must stay readable to them.
    """
    p = Path(path)
    os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~umask())


def save_tensors(tensors: dict[str, Any], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """``safetensors.torch.save_file``, with the permissions of an ordinary new file."""
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=metadata)
    make_shareable(path)


def remove_stale(folder: Path, pattern: str, older_than_s: float = 3600.0) -> None:
    """Delete files or folders matching ``pattern`` in ``folder`` untouched for ``older_than_s``:
    the temporary parts a killed process leaves (a write of a cache entry or of a conversion
    takes seconds, so an hour-old one belongs to no live process)."""
    import shutil
    import time

    limit = time.time() - older_than_s
    for p in folder.glob(pattern):
        try:
            if p.lstat().st_mtime >= limit:
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        except OSError:  # another process removed it first, or it cannot be removed: leave it
            continue


def project_root() -> Path | None:
    """The source checkout uniaudio is imported from (an editable install); ``None`` for a wheel."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() else None


def asset_dir(name: str) -> Path:
    """A data folder shipped inside the package: ``"prompts"`` or ``"checkpoints"``.

    Each is the package ``uniaudio_cli.assets.<name>``, found with :mod:`importlib.resources`; the
    ``package-dir`` table in pyproject.toml maps it to the top-level ``<name>/`` folder of the
    repository, so the wheel holds a copy and an editable install reads the folder itself. Only when
    uniaudio_cli is imported straight from a checkout on ``sys.path`` (``bench/results.py``, the
    ``prompts/make_*.py`` scripts), where no installation maps the package, is it that checkout's folder.
    """
    package = f"{ASSETS}.{name}"
    try:
        path = Path(str(resources.files(package)))
    except ModuleNotFoundError:
        root = project_root()
        path = root / name if root is not None else None
    if path is None or not path.is_dir():
        raise UniaudioError(
            f"the packaged data {package} is missing from this installation",
            "reinstall uniaudio (pip install the wheel; in a checkout: pip install -e .)",
        )
    return path


def default_codec_path() -> Path:
    """The default LLM-Codec checkpoint folder: ``$UNIAUDIO_CODEC``, else the one shipped in the package."""
    env = os.environ.get(ENV_CODEC)
    return Path(env) if env else asset_dir("checkpoints") / DEFAULT_CODEC


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, read in 1 MB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
