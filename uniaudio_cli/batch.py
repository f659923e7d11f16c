"""Running one function over many inputs: progress on stderr, failures reported and skipped."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from rich.console import Console

from uniaudio_cli.errors import UniaudioError

T = TypeVar("T")

stderr = Console(stderr=True, highlight=False)

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
    show = not quiet and len(items) > 1 and sys.stderr.isatty()
    progress = progress_bar(show)
    with progress:
        task = progress.add_task(description, total=len(items))
        for item in items:
            try:
                on_result(item, fn(item))
                report.done.append(item)
            except UniaudioError as e:
                report.failed.append((item, e.one_line()))
                stderr.print(f"[red]error:[/red] {e.one_line()}", markup=True, soft_wrap=True)
            progress.advance(task)
    if report.failed and len(items) > 1 and not quiet:
        stderr.print(f"{len(report.failed)} of {len(items)} inputs failed", soft_wrap=True)
    return report
