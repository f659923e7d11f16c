"""Running one function over many inputs: progress on stderr, failures reported and skipped."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from rich.console import Console

from uniaudio_cli.errors import UniaudioError

T = TypeVar("T")

stderr = Console(stderr=True, highlight=False)


def print_error(message: str) -> None:
    """``error: <message>`` on stderr, printed literally: user paths and labels may hold ``[``,
    ``]`` or ``:name:`` that rich would otherwise read as markup or emoji."""
    from rich.text import Text

    stderr.print(Text.assemble(("error: ", "red"), message), soft_wrap=True)


def print_note(message: str) -> None:
    """A plain status line on stderr (``loading models ...``), printed literally."""
    from rich.text import Text

    stderr.print(Text(message), soft_wrap=True)


class PlainProgress:
    """Progress for a stderr that is not a terminal (a log file, CI): a plain line at most every
    ``every_s`` seconds and at the end, so a long run in a script is never silent."""

    def __init__(self, description: str, total: int, every_s: float = 30.0) -> None:
        self.description, self.total, self.every_s = description, total, every_s
        self.done = 0
        self.start = self.last = time.monotonic()

    def advance(self) -> None:
        self.done += 1
        now = time.monotonic()
        if now - self.last >= self.every_s or self.done == self.total:
            self.last = now
            elapsed = now - self.start
            eta = elapsed / self.done * (self.total - self.done)
            sys.stderr.write(
                f"{self.description}: {self.done}/{self.total} ({100 * self.done / self.total:.0f} %), "
                f"{_clock(elapsed)} elapsed, {_clock(eta)} left\n"
            )
            sys.stderr.flush()


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


if TYPE_CHECKING:
    from rich.progress import Progress


def progress_bar(enabled: bool) -> Progress:
    """The one progress bar every command draws on stderr (transient; off when ``enabled`` is
    False): description, bar, done/total, elapsed and remaining time."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr,
        disable=not enabled,
        transient=True,
    )


@dataclass
class BatchReport:
    """Which inputs succeeded and which failed (with their one-line errors)."""

    done: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def run_batch(
    items: Iterable[Path],
    fn: Callable[[Path], T],
    on_result: Callable[[Path, T], None],
    quiet: bool = False,
    description: str = "processing",
) -> BatchReport:
    """Call ``fn`` on each item, hand each result to ``on_result`` as soon as it exists (so a
    later failure or an interrupt loses nothing), and report :class:`UniaudioError` per item
    on stderr without stopping."""
    items = list(items)
    report = BatchReport()
    tty = sys.stderr.isatty()
    progress = progress_bar(not quiet and len(items) > 1 and tty)
    plain = PlainProgress(description, len(items)) if not quiet and len(items) > 1 and not tty else None
    with progress:
        task = progress.add_task(description, total=len(items))
        for item in items:
            try:
                on_result(item, fn(item))
                report.done.append(item)
            except UniaudioError as e:
                report.failed.append((item, e.one_line()))
                print_error(e.one_line())
            progress.advance(task)
            if plain is not None:
                plain.advance()
    if report.failed and len(items) > 1 and not quiet:
        stderr.print(f"{len(report.failed)} of {len(items)} inputs failed", soft_wrap=True)
    return report
