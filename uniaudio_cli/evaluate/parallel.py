"""Data-parallel evaluation: the work units of an ``eval`` run split over processes.

Started by a distributed launcher (``accelerate launch --multi_gpu --num_processes N -m
uniaudio_cli eval ...`` or ``torchrun --nproc-per-node N -m uniaudio_cli eval ...``, which set
``WORLD_SIZE`` and ``RANK``), every process loads the models on its own device (accelerate's
``PartialState``: one GPU each, or the CPU with the gloo backend) and computes only the units
(episodes, mixtures, questions) whose index modulo the number of processes is its rank. Each
process appends its records to a shard of the results file, ``<results>.part<rank>``, as durably
as the single-process path appends to the results file itself; at the end the main process
merges the shards into the results file in the order a single process would have written them,
and every process reads the merged file back. Reports are therefore built from the same records
in the same order as in a one-process run with the same seed, and only the main process prints
them. An interrupted parallel run leaves its shards; the next run (with any number of processes,
one included) merges them first and computes only what is missing.

Without a launcher (``WORLD_SIZE`` unset or 1) nothing here imports torch or accelerate, and a
run is the single-process one (which also merges any shards an interrupted parallel run left).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from uniaudio_cli.errors import UniaudioError, UsageError
from uniaudio_cli.evaluate.store import ResultStore

T = TypeVar("T")
SHARD_SUFFIX = ".part"


def launched_world_size() -> int:
    """The number of processes a distributed launcher started (``WORLD_SIZE``; 1 without one)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


@dataclass
class Workers:
    """This process's place among the processes of one evaluation run.

    ``rank`` 0 is the main process (it merges the results and prints the report); ``device`` is
    the process's own accelerator under a launcher (``cuda:N``), ``None`` on the CPU or when
    there is no launcher. The default is a single process.
    """

    rank: int = 0
    size: int = 1
    device: str | None = None
    state: Any = field(default=None, repr=False, compare=False)  # accelerate's PartialState

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.size > 1

    def mine(self, index: int) -> bool:
        """Whether work unit ``index`` (in the run's fixed order) is this process's."""
        return index % self.size == self.rank

    def device_for(self, requested: str | None) -> str | None:
        """The device this process loads the models on: its own GPU under a launcher when
        ``requested`` is unset or plain ``cuda``; otherwise ``requested`` unchanged."""
        if self.parallel and self.device is not None and requested in (None, "cuda"):
            return self.device
        return requested

    def barrier(self) -> None:
        """Wait until every process gets here (nothing for a single process)."""
        if self.state is not None:
            self.state.wait_for_everyone()

    def gather(self, obj: T) -> list[T]:
        """``obj`` of every process, in rank order, on every process (picklable objects)."""
        if not self.parallel:
            return [obj]
        from accelerate.utils import gather_object

        return list(gather_object([obj]))

    def on_main(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the main process, then raise its error (a :class:`UniaudioError` or an
        ``OSError``) on every process, so that none is left waiting for the others."""
        error: tuple[str, str, str | None] | None = None
        caught: BaseException | None = None
        if self.is_main:
            try:
                fn()
            except UniaudioError as e:
                caught, error = e, (type(e).__name__, e.message, e.fix)
            except OSError as e:
                caught, error = e, ("UniaudioError", f"results file: {e}", "check the --results folder")
        outcomes = self.gather(error)
        if caught is not None:
            raise caught
        failed = outcomes[0]
        if failed is not None:
            from uniaudio_cli import errors

            name, message, fix = failed
            cls = getattr(errors, name, None)
            if not (isinstance(cls, type) and issubclass(cls, UniaudioError)):
                cls = UniaudioError
            raise cls(message, fix)

    def close(self) -> None:
        """Leave the process group (after the last collective call of the run)."""
        if self.state is not None:
            self.state.destroy_process_group()


def current_workers(device: str | None = None) -> Workers:
    """The processes of this run: one, unless a launcher started several (``WORLD_SIZE`` > 1);
    then accelerate's ``PartialState`` joins them, on the CPU with the gloo backend when
    ``device`` is ``cpu``, when there is no GPU or under ``accelerate launch --cpu``, else one GPU
    per process. Safe to call again: the state is shared within a process."""
    if launched_world_size() <= 1:
        return Workers()
    import torch
    from accelerate import PartialState

    use_cpu = (
        (device is not None and device.startswith("cpu"))
        or not torch.cuda.is_available()
        or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    )
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "0") or 0)
    if not use_cpu and local > torch.cuda.device_count():
        gpus = torch.cuda.device_count()
        raise UsageError(
            f"{local} evaluation processes on this machine but {gpus} GPU(s): each process needs a GPU of its own",
            f"launch at most {gpus} processes per machine (--num_processes {gpus}), or add --device cpu",
        )
    try:
        state = PartialState(cpu=use_cpu)
    except (ValueError, RuntimeError) as e:
        raise UsageError(
            f"could not join the other evaluation processes ({str(e).splitlines()[0] if str(e) else type(e).__name__})",
            "start the processes with accelerate launch or torchrun, or unset WORLD_SIZE to run in one process",
        ) from e
    if state.num_processes <= 1:
        return Workers()
    own = None if state.device is None or state.device.type == "cpu" else str(state.device)
    return Workers(state.process_index, state.num_processes, own, state)


def shard_path(path: Path, rank: int) -> Path:
    """The results shard of process ``rank``: ``<results>.part<rank>``."""
    return path.with_name(f"{path.name}{SHARD_SUFFIX}{rank}")


def shard_paths(path: Path) -> list[Path]:
    """The shards of ``path`` on disk, in rank order."""
    prefix = path.name + SHARD_SUFFIX
    if not path.parent.is_dir():
        return []
    found = [p for p in path.parent.iterdir() if p.name.startswith(prefix) and p.name[len(prefix) :].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(prefix) :]))


class ShardedStore:
    """A :class:`~uniaudio_cli.evaluate.store.ResultStore` written by one process or many.

    ``keys`` are the run's work units in the order a single process computes them (the order the
    merged file keeps). :meth:`get` and ``in`` see the results file and this process's new
    records; :meth:`add` stores a record (in the results file itself for a single process, in
    this process's shard otherwise); :meth:`finish` (every process calls it once, after its
    share) merges the shards, after which :meth:`get` sees every record and :attr:`computed`
    lists the keys computed in this run by any process.
    """

    def __init__(self, path: str | Path, settings: dict[str, Any], keys: Sequence[str], workers: Workers) -> None:
        self.path = Path(path)
        self.settings = settings
        self.keys = list(keys)
        self.workers = workers
        self.computed: list[str] = []
        self._new: list[str] = []
        if not workers.parallel:
            self.main = ResultStore(self.path, settings)
            if shard_paths(self.path):
                self._merge_shards()
            self.local = self.main
            return

        def open_main() -> None:
            self.main = ResultStore(self.path, settings)
            self._merge_shards()  # left by an interrupted parallel run

        workers.on_main(open_main)
        if not workers.is_main:
            self.main = ResultStore(self.path, settings)  # already checked, created or repaired
        self.local = ResultStore(shard_path(self.path, workers.rank), settings)

    def _merge_shards(self) -> None:
        """Append the records of every shard missing from the results file (in the order of
        ``keys``, then any others in shard order), make them durable, delete the shards."""
        shards = shard_paths(self.path)
        found: dict[str, dict[str, Any]] = {}
        for p in shards:
            shard = ResultStore(p, self.settings)
            for key in shard:
                found.setdefault(key, shard.records[key])
        order = [k for k in self.keys if k in found] + [k for k in found if k not in set(self.keys)]
        for key in order:
            if key not in self.main:
                self.main.add(key, found[key])
        for p in shards:
            p.unlink(missing_ok=True)

    def __contains__(self, key: str) -> bool:
        return key in self.main or key in self.local

    def get(self, key: str) -> dict[str, Any] | None:
        rec = self.main.get(key)
        return rec if rec is not None else self.local.get(key)

    def __getitem__(self, key: str) -> dict[str, Any]:
        rec = self.get(key)
        if rec is None:
            raise KeyError(key)
        return rec

    def add(self, key: str, record: dict[str, Any]) -> dict[str, Any]:
        """Store ``record`` under ``key`` durably and return it JSON-safe."""
        self._new.append(key)
        return self.local.add(key, record)

    def finish(self) -> None:
        """Merge every process's records into the results file (main process) and read it back
        (the others). Every process must call it, after computing its share."""
        if not self.workers.parallel:
            self.computed = list(self._new)
            return
        new = {k for keys in self.workers.gather(self._new) for k in keys}
        self.workers.on_main(self._merge_shards)
        if not self.workers.is_main:
            self.main = ResultStore(self.path, self.settings)
        self.local = self.main
        self.computed = [k for k in self.keys if k in new] + sorted(new - set(self.keys))


def gather_indexed(workers: Workers, items: Iterable[tuple[int, T]]) -> list[T]:
    """Items computed by every process as ``(unit index, item)``, in unit-index order."""
    merged = [pair for part in workers.gather(list(items)) for pair in part]
    return [item for _, item in sorted(merged, key=lambda pair: pair[0])]
