"""Typed errors. Each carries the one-line message and the fix the CLI prints."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any


class UniaudioError(Exception):
    """Base class: ``message`` says what went wrong (naming the file), ``fix`` what to do."""

    exit_code = 1

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix
        # The same failure on other inputs of one run (a batch none of whose inputs is usable),
        # so that a CLI can name every bad input, not only the first.
        self.also: list[UniaudioError] = []

    def one_line(self) -> str:
        return f"{self.message} (fix: {self.fix})" if self.fix else self.message

    def __str__(self) -> str:
        return self.one_line()


class UsageError(UniaudioError):
    """Bad arguments or options (CLI exit code 2)."""

    exit_code = 2


class CodesFormatError(UsageError):
    """An encoded-codes file (``uniaudio encode --json``) is malformed, of an unknown format
    version, or holds token ids that are not codes of the codec decoding it."""


class CodecMismatchError(CodesFormatError):
    """Encoded codes were written by another codec than the one asked to decode them."""


class AudioError(UniaudioError):
    """An input audio file is missing, empty, corrupt, silent or too long."""


class CheckpointError(UniaudioError):
    """A checkpoint is missing, malformed, of another version, or does not match its config."""


class VocabularyMismatchError(CheckpointError):
    """A codec checkpoint belongs to another LLM vocabulary than the one loaded."""


class ModelLoadError(UniaudioError):
    """An LLM (or its tokenizer) could not be found or loaded."""


class ModelIntegrityError(ModelLoadError):
    """A model file fails its SHA-256 check, or a cached conversion of it is unreadable (corrupt cache)."""


class OutputExistsError(UniaudioError):
    """An output file exists and ``--force`` was not given."""


class OutputWriteError(UniaudioError):
    """An output could not be written (a full disk, a quota, an I/O error); nothing is left behind."""


class PromptTooLongError(UniaudioError):
    """A prompt does not fit the LLM's context window."""


def run_tool(run: Callable[[Any], None], args: Any) -> None:
    """Run a ``python -m`` tool's ``run(args)`` with INFO logging: a :class:`UniaudioError`
    becomes one ``error:`` line on stderr and its exit code, unless ``args.debug``."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        run(args)
    except UniaudioError as e:
        if getattr(args, "debug", False):
            raise
        print(f"error: {e.one_line()}", file=sys.stderr)
        raise SystemExit(e.exit_code) from None
