"""Rendering evaluation results: rich tables on a console, JSON, and Markdown.

Every ``uniaudio eval`` command builds one :class:`Report` (a title, run metadata, one or more
:class:`Table` sections of generic rows and columns, and optionally the full machine-readable
results) and hands it to :func:`render_rich`, :func:`to_json` or :func:`to_markdown`. Cells hold
raw values (numbers, strings, ``None``, ``(low, high)`` pairs); each :class:`Column` says how to
show them, so JSON keeps full precision while the tables stay readable.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from rich.console import Console

MISSING = "–"  # shown for None / NaN cells


@dataclass
class Column:
    """One column: ``key`` into each row dict, ``header`` shown, and how to format a cell.

    ``fmt`` is a format spec (``".3f"``, ``".1%"``, ``"d"``) applied to numbers, to each end of
    a ``(low, high)`` pair (shown ``[low, high]``), or a callable ``value -> str``.
    """

    key: str
    header: str
    fmt: str | Callable[[Any], str] = ""
    justify: Literal["left", "right", "center"] | None = None  # None: right for numbers, else left

    def format(self, value: Any) -> str:
        if callable(self.fmt):
            return self.fmt(value)
        return format_value(value, self.fmt)


@dataclass
class Table:
    """A titled table: ``rows`` are dicts keyed by the columns' ``key``; ``notes`` go below it.

    A row may carry ``"_fmt": {column key: spec}`` to format its own cells differently (rows of
    a metrics table, say, each with their own precision); it never reaches JSON.
    """

    title: str
    columns: list[Column]
    rows: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)

    def cells(self) -> list[list[str]]:
        """The formatted cells, one list of strings per row, in column order."""
        out = []
        for row in self.rows:
            override = row.get("_fmt") or {}
            out.append(
                [
                    format_value(row.get(c.key), override[c.key]) if c.key in override else c.format(row.get(c.key))
                    for c in self.columns
                ]
            )
        return out

    def justify(self, index: int) -> Literal["left", "right", "center"]:
        col = self.columns[index]
        if col.justify is not None:
            return col.justify
        numeric = any(_is_number(r.get(col.key)) or isinstance(r.get(col.key), tuple | list) for r in self.rows)
        return "right" if numeric else "left"

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "columns": [c.key for c in self.columns],
            "rows": [{c.key: json_safe(r.get(c.key)) for c in self.columns} for r in self.rows],
            **({"notes": list(self.notes)} if self.notes else {}),
        }


@dataclass
class Report:
    """A whole evaluation: title, run metadata (commit, machine, date, ...), table sections, and
    ``results``, the machine-readable payload that :func:`to_json` writes (the tables' raw rows
    when ``None``)."""

    title: str
    tables: list[Table]
    metadata: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        results = self.results if self.results is not None else {"tables": [t.to_dict() for t in self.tables]}
        return json_safe({"title": self.title, "metadata": self.metadata, **results})


# --------------------------------------------------------------------------- values


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def format_value(value: Any, spec: str = "") -> str:
    """``None``/NaN -> ``–``; ``(low, high)`` -> ``[low, high]``; numbers through ``spec``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, tuple | list):
        return "[" + ", ".join(format_value(v, spec) for v in value) + "]"
    if _is_number(value) and spec:
        return format(value, spec)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def json_safe(value: Any) -> Any:
    """Recursively turn tuples into lists, NaN/inf into ``None``, numpy scalars into Python ones
    (strict JSON has no NaN), and paths into strings."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()  # numpy / torch scalar
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


# --------------------------------------------------------------------------- metadata


def git_commit(cwd: str | os.PathLike[str] | None = None) -> str | None:
    """Short commit hash of the source tree, ``+dirty`` when it has uncommitted changes;
    ``None`` outside a git checkout (an installed wheel)."""
    if cwd is None:
        from uniaudio_cli.paths import project_root

        cwd = project_root()
        if cwd is None:
            return None
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+dirty" if dirty else head or None


def machine_description(device: Any = None) -> str:
    """CPU model and core count, plus the GPU name when ``device`` is a CUDA device."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    desc = f"{cpu}, {os.cpu_count()} cores"
    if device is not None and str(device).startswith("cuda") and "torch" in sys.modules:
        import torch

        if torch.cuda.is_available():
            desc += f"; {torch.cuda.get_device_name(torch.device(device))}"
    return desc


def run_metadata(device: Any = None, **extra: Any) -> dict[str, Any]:
    """``commit``, ``machine``, ``date`` (UTC, ISO 8601), ``python``, ``torch``, ``device``, then ``extra``."""
    meta: dict[str, Any] = {
        "commit": git_commit(),
        "machine": machine_description(device),
        "date": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "python": platform.python_version(),
    }
    if "torch" in sys.modules:
        meta["torch"] = sys.modules["torch"].__version__
    if device is not None:
        meta["device"] = str(device)
    meta.update(extra)
    return meta


# --------------------------------------------------------------------------- renderers


def render_rich(report: Report, console: Console) -> None:
    """Print ``report`` as rich tables (metadata as a dim caption line)."""
    from rich.table import Table as RichTable

    console.print(f"[bold]{report.title}[/bold]", highlight=False)
    if report.metadata:
        console.print(f"[dim]{_metadata_line(report.metadata)}[/dim]", highlight=False, soft_wrap=True)
    for t in report.tables:
        rt = RichTable(title=t.title, title_justify="left", title_style="bold")
        for i, c in enumerate(t.columns):
            rt.add_column(c.header, justify=t.justify(i))
        for cells in t.cells():
            rt.add_row(*cells)
        console.print(rt)
        for note in t.notes:
            console.print(f"[dim]{note}[/dim]", highlight=False, soft_wrap=True)


def to_json(report: Report, indent: int | None = 2) -> str:
    """The report's :meth:`Report.to_dict` as strict JSON."""
    return json.dumps(report.to_dict(), indent=indent, allow_nan=False, ensure_ascii=False)


def to_markdown(report: Report) -> str:
    """``## title``, a metadata line, then one ``###`` pipe table per section with its notes."""
    lines = [f"## {report.title}", ""]
    if report.metadata:
        lines += [f"*{_md_escape(_metadata_line(report.metadata))}*", ""]
    for t in report.tables:
        lines += [f"### {t.title}", "", *markdown_table(t), ""]
        if t.notes:
            lines += [f"- {_md_escape(n)}" for n in t.notes] + [""]
    return "\n".join(lines).rstrip() + "\n"


def markdown_table(table: Table) -> list[str]:
    """The pipe-table lines of one :class:`Table` (numbers right-aligned)."""
    align = {"left": ":---", "right": "---:", "center": ":---:"}
    header = "| " + " | ".join(_md_escape(c.header) for c in table.columns) + " |"
    rule = "|" + "|".join(align[table.justify(i)] for i in range(len(table.columns))) + "|"
    body = ["| " + " | ".join(_md_escape(s) for s in row) + " |" for row in table.cells()]
    return [header, rule, *body]


def _md_escape(text: str) -> str:
    return text.replace("|", r"\|").replace("\n", " ")


def _metadata_line(meta: dict[str, Any], keys: Sequence[str] | None = None) -> str:
    items = meta.items() if keys is None else ((k, meta[k]) for k in keys if k in meta)
    return " · ".join(f"{k}: {format_value(v)}" for k, v in items if v is not None)
