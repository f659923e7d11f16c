"""Test-only entry point: ``uniaudio`` on the tiny models of :func:`tests.test_tasks.tiny_models`.

``python tests/parallel_entry.py MODELS_DIR ARGS... [--then ARGS...]`` runs ``uniaudio ARGS...``
(each command in turn, their outputs separated on stdout by :data:`SEPARATOR`) with
``uniaudio_cli.cli.load_models`` patched to return the tiny LLaMA (seeded, so the same in every
process) and the tiny codec saved under ``MODELS_DIR/codec`` (loaded from there, so that every
process, and an in-process run, sees the same codec files). DNSMOS is turned off (slow, and beside
the point of these tests). The commands share one process group, left at the end. Used by
``tests/test_parallel_eval.py`` to start evaluation processes under ``RANK`` / ``WORLD_SIZE``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

SEPARATOR = "\x1e-- next command --"


def load_tiny(models_dir: str | Path) -> tuple[Any, Any]:
    """The tiny LLM and the codec saved under ``models_dir/codec`` by ``tiny_models``."""
    from tests.test_tasks import tiny_models
    from uniaudio_cli.codec.api import load_codec

    with tempfile.TemporaryDirectory() as scratch:
        llm, _ = tiny_models(Path(scratch))
    return llm, load_codec(Path(models_dir) / "codec", vocabulary=llm.vocabulary, device="cpu")


def no_dnsmos() -> tuple[None, str]:
    return None, "disabled in tests"


def main() -> None:
    # The checkout's root last on sys.path: `tests` importable, the installed uniaudio_cli first.
    sys.path.append(str(Path(__file__).resolve().parents[1]))
    import torch

    import uniaudio_cli.cli as cli
    from uniaudio_cli.evaluate import parallel, tts_eval

    torch.set_num_threads(1)
    models = load_tiny(sys.argv[1])
    cli.load_models = lambda *a, **k: models  # type: ignore[assignment]
    tts_eval.load_dnsmos = no_dnsmos  # type: ignore[assignment]
    leave = parallel.Workers.close
    parallel.Workers.close = lambda self: None  # type: ignore[method-assign]  # one group for every command
    commands: list[list[str]] = [[]]
    for arg in sys.argv[2:]:
        if arg == "--then":
            commands.append([])
        else:
            commands[-1].append(arg)
    codes = []
    for k, args in enumerate(commands):
        if k:
            print(SEPARATOR, flush=True)
        code = cli.app(args, standalone_mode=False, prog_name="uniaudio")
        codes.append(code if isinstance(code, int) else 0)
    leave(parallel.current_workers())
    sys.exit(max(codes))


if __name__ == "__main__":
    main()
