"""Data-parallel evaluation (:mod:`uniaudio_cli.evaluate.parallel`): `uniaudio eval classify`,
`eval denoise` and `eval tts` in 2 CPU processes (gloo, joined the way torchrun and accelerate
launch join them) give the results file and report of a 1-process run; leftover shards of an
interrupted run are merged. On the tiny models of tests/test_tasks.py, loaded in the child
processes by tests/parallel_entry.py (one launch of 2 processes runs all three commands)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.parallel_entry import SEPARATOR, load_tiny, no_dnsmos
from tests.test_tasks import tiny_models, write_label_demos, write_pairs
from uniaudio_cli.cli import app
from uniaudio_cli.evaluate.classify_eval import EpisodeConfig, evaluate_classification
from uniaudio_cli.evaluate.parallel import ShardedStore, Workers, current_workers, shard_path
from uniaudio_cli.evaluate.store import ResultStore

ENTRY = Path(__file__).with_name("parallel_entry.py")
# Wall-clock measurements and the run date: the only fields allowed to differ between runs.
VOLATILE = {"seconds", "wall_seconds", "ms_per_query", "encode_seconds", "mfcc_seconds", "seconds_per_question", "date"}


def _stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def _lines(path: Path) -> list[Any]:
    return [_stable(json.loads(line)) for line in path.read_text().splitlines()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_processes(models_dir: Path, commands: list[list[str]], home: Path, n: int = 2) -> list[list[str]]:
    """Run ``commands`` (``uniaudio`` argument lists) in ``n`` processes joined like torchrun
    joins them (gloo on the CPU); every process's stdout, one string per command."""
    port = str(_free_port())
    args = [a for k, cmd in enumerate(commands) for a in ([] if k == 0 else ["--then"]) + cmd]
    procs = []
    for rank in range(n):
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(n),
            "LOCAL_WORLD_SIZE": str(n),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
            "OMP_NUM_THREADS": "1",
            "UNIAUDIO_HOME": str(home),
        }
        cmd = [sys.executable, str(ENTRY), str(models_dir), *args]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=240)
            assert p.returncode == 0, err
            outputs.append(out.split(SEPARATOR + "\n"))
    finally:
        for p in procs:  # only the processes started here
            if p.poll() is None:
                p.kill()
                p.wait()
    return outputs


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Each command run in this process, then (fresh, same results paths) in 2 processes:
    ``{name: {"one", "two": JSON reports, "one_lines", "two_lines": results files, "rank1": stdout}}``."""
    tmp = tmp_path_factory.mktemp("parallel")
    models_dir = tmp / "models"
    tiny_models(models_dir)  # saves models_dir/codec, which every process loads
    labelled = write_label_demos(tmp / "data", {"dog": 300.0, "rain": 2000.0, "sea": 900.0}, clips=3, seconds=0.5)
    clean, noise = tmp / "clean", tmp / "noise"
    write_label_demos(clean, {"s1": 200.0, "s2": 350.0, "s3": 500.0}, clips=1, seconds=0.5)
    write_label_demos(noise, {"hum": 50.0}, clips=1, seconds=1.0)
    common = ["--device", "cpu", "--json", "--quiet"]
    commands: dict[str, list[str]] = {
        "classify": [
            "eval",
            "classify",
            str(labelled),
            "--episodes",
            "5",
            "--queries",
            "2",
            "--seed",
            "3",
            "--method",
            "icl",
        ],
        "denoise": ["eval", "denoise", str(clean), str(noise), "--snr", "0", "10", "--seconds", "0.5"],
    }
    commands["classify"] += ["--results", str(tmp / "c.jsonl"), *common]
    commands["denoise"] += ["--demos", str(write_pairs(tmp / "pairs")), "--results", str(tmp / "d.jsonl"), *common]
    if shutil.which("espeak-ng") is not None:
        commands["tts"] = ["eval", "tts", "--mode", "paper", "--shots", "1", "--out-dir", str(tmp / "wav"), *common]
    results = {"classify": tmp / "c.jsonl", "denoise": tmp / "d.jsonl"}
    out: dict[str, dict[str, Any]] = {name: {} for name in commands}
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("WORLD_SIZE", raising=False)
        mp.setenv("UNIAUDIO_HOME", str(tmp / "home"))
        mp.setattr("uniaudio_cli.evaluate.tts_eval.load_dnsmos", no_dnsmos)
        models = load_tiny(models_dir)
        mp.setattr("uniaudio_cli.cli.load_models", lambda *a, **k: models)
        for name, args in commands.items():
            res = CliRunner().invoke(app, args)
            assert res.exit_code == 0, res.output
            out[name]["one"] = _stable(json.loads(res.stdout))
            if name in results:
                out[name]["one_lines"] = _lines(results[name])
                results[name].rename(results[name].with_name(f"one-{results[name].name}"))
    if "tts" in commands:
        (tmp / "wav").rename(tmp / "wav-one")
    rank0, rank1 = _run_processes(models_dir, list(commands.values()), tmp / "home")
    for k, name in enumerate(commands):
        out[name]["two"] = _stable(json.loads(rank0[k]))
        out[name]["rank1"] = rank1[k]
        if name in results:
            out[name]["two_lines"] = _lines(results[name])
            out[name]["shards"] = list(tmp.glob(f"{results[name].name}.part*"))
    if "tts" in commands:
        out["tts"]["wavs"] = [
            sorted(p.relative_to(d).as_posix() for p in d.rglob("*.wav")) for d in (tmp / "wav-one", tmp / "wav")
        ]
    return out


def _check(run: dict[str, Any]) -> None:
    assert run["rank1"] == ""  # only the main process reports
    assert run["two_lines"] == run["one_lines"]  # the same records in the same order (timings aside)
    assert run["shards"] == []  # merged and removed
    assert run["two"] == run["one"]


def test_classify_two_processes_equal_one(runs: dict[str, dict[str, Any]]) -> None:
    _check(runs["classify"])
    assert runs["classify"]["two"]["configs"][0]["episodes"] == 5
    assert runs["classify"]["two"]["configs"][0]["computed_episodes"] == 5  # summed over the processes


def test_denoise_two_processes_equal_one(runs: dict[str, dict[str, Any]]) -> None:
    pytest.importorskip("noisereduce")
    _check(runs["denoise"])
    assert len(runs["denoise"]["two"]["mixtures"]) == 6 and len(runs["denoise"]["two"]["codec_only"]) == 3


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_tts_two_processes_equal_one(runs: dict[str, dict[str, Any]]) -> None:
    pytest.importorskip("pocketsphinx")
    run = runs["tts"]
    one, two = run["one"], run["two"]
    assert two == one and run["rank1"] == ""  # the WAV paths too: both runs wrote to the same folder
    assert [len(s["items"]) for s in two["systems"]] == [20, 20, 20]
    assert run["wavs"][0] == run["wavs"][1] and len(run["wavs"][0]) == 60


def test_single_process_merges_leftover_shards(tmp_path: Path, monkeypatch) -> None:
    """An interrupted 2-process run left a shard: a 1-process run takes its episodes (first in
    the results file), computes the rest and reports them in the usual order."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert current_workers() == Workers()
    llm, codec = tiny_models(tmp_path / "models")
    data = write_label_demos(tmp_path / "data", {"dog": 300.0, "rain": 2000.0}, clips=3, seconds=0.5)
    cfg = EpisodeConfig(method="icl", ways=2)
    kw: dict[str, Any] = dict(episodes=3, queries=2, progress=False)
    ref = evaluate_classification(llm, codec, data, [cfg], results=tmp_path / "ref.jsonl", **kw)
    results = tmp_path / "r.jsonl"
    settings = ref.settings
    ResultStore(results, settings)  # the header, written by the main process
    ResultStore(shard_path(results, 1), settings).add(f"{cfg.key}/1", ref.configs[0].episodes[1])
    got = evaluate_classification(llm, codec, data, [cfg], results=results, **kw)
    assert got.configs[0].computed == 2 and not shard_path(results, 1).exists()
    lines = _lines(results)
    assert [r["key"] for r in lines[1:]] == [f"{cfg.key}/{i}" for i in (1, 0, 2)]
    assert sorted(lines[1:], key=lambda r: r["key"]) == _lines(tmp_path / "ref.jsonl")[1:]
    assert _stable(got.configs[0].episodes) == _stable(ref.configs[0].episodes)
    store = ShardedStore(results, settings, [], Workers())
    assert len(store.main) == 3 and store.computed == []


def test_each_process_gets_its_own_gpu(monkeypatch) -> None:
    import torch

    from uniaudio_cli.errors import UsageError

    gpu = Workers(rank=1, size=2, device="cuda:1")
    assert [gpu.mine(i) for i in range(4)] == [False, True, False, True] and not gpu.is_main
    assert gpu.device_for(None) == gpu.device_for("cuda") == "cuda:1" and gpu.device_for("cpu") == "cpu"
    assert Workers().device_for(None) is None and Workers().device_for("cuda") == "cuda"
    # More processes on a machine than GPUs: refused before any process group is joined.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.raises(UsageError, match="2 evaluation processes on this machine but 1 GPU"):
        current_workers()
