"""Peak memory of the commands on long inputs: 1 minute vs 60 minutes.

Writes synthetic speech-like inputs (the shipped prompt clips, looped with random gains and
short pauses of faint noise; 16 kHz mono 16-bit WAV, written block by block), then runs each
command as its own process and reads that process's peak resident memory (``ru_maxrss`` from
``os.wait4``) and wall time:

* ``encode``: ``uniaudio encode --json IN > codes.jsonl``
* ``decode``: ``uniaudio decode codes.jsonl -o OUT.wav`` (the codes of the encode run)
* ``denoise``: ``uniaudio denoise IN -o OUT.wav`` with the default LLM, about real time on a
  2-core CPU, so by default on 1 and 5 minutes (``--denoise-minutes``)
* ``denoise-tiny``: the same streaming denoiser (``Denoiser.stream`` into
  ``write_audio_blocks``) on the tests' tiny random LLM and codec, which run 60 minutes in a few
  minutes (a checkout only: it imports ``tests/``)
* ``classify``: ``uniaudio classify --demos D IN`` (two labels of spoken digits, one shot each);
  queries are limited to 600 s (the LLM reads a query in one prompt), so by default on 1 and 10
  minutes, and 60 minutes to show the refusal (``--classify-minutes``)

Every run uses the shipped default codec (and LLM where the command needs one), one thread
(``OMP_NUM_THREADS=1``, as on a machine with other work), and a warm model cache.

    python bench/long_audio.py [--minutes 1 60] [--commands encode decode denoise denoise-tiny classify]
                               [--denoise-minutes 1 5] [--classify-minutes 1 10 60]
                               [--work DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# runnable from a checkout without installing the package
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uniaudio_cli.audio import load_audio
from uniaudio_cli.paths import asset_dir

SR = 16000


def uniaudio() -> list[str]:
    """The console script next to this Python, else ``python -m uniaudio_cli``."""
    exe = Path(sys.executable).parent / "uniaudio"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "uniaudio_cli"]


def write_input(path: Path, minutes: float, seed: int = 0) -> Path:
    """``minutes`` of looped prompt speech at 16 kHz, written a clip at a time (constant memory)."""
    import soundfile as sf

    if path.exists() and abs(sf.info(path).duration - 60 * minutes) < 1e-6:
        return path
    clips = [load_audio(p, SR) for p in sorted(asset_dir("prompts").rglob("*.flac"))]
    rng = np.random.default_rng(seed)
    total, written = round(60 * minutes * SR), 0
    tmp = path.with_suffix(".part.wav")
    with sf.SoundFile(tmp, "w", samplerate=SR, channels=1, subtype="PCM_16") as f:
        while written < total:
            clip = clips[rng.integers(len(clips))] * rng.uniform(0.5, 1.5)
            pause = 0.003 * rng.standard_normal(int(rng.uniform(0.1, 0.6) * SR))
            block = np.clip(np.concatenate([clip, pause]), -1, 1)[: total - written]
            f.write(block)
            written += len(block)
    tmp.replace(path)
    return path


def demos_folder(work: Path) -> Path:
    """Two labels of spoken digits (``zero``, ``one``), one clip each."""
    root = work / "demos"
    digits = asset_dir("prompts") / "tts_digits"
    for label, digit in (("zero", "0"), ("one", "1")):
        (root / label).mkdir(parents=True, exist_ok=True)
        clip = sorted((digits / digit).glob("*.flac"))[0]
        dest = root / label / clip.name
        if not dest.exists():
            shutil.copy(clip, dest)
    return root


def measure(cmd: list[str], stdout: Path | None = None) -> dict:
    """Run ``cmd`` as a child process; its exit code, wall seconds and peak RSS in MiB."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = open(stdout, "w") if stdout is not None else subprocess.DEVNULL  # noqa: SIM115
    t0 = time.perf_counter()
    try:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE, env=env)
        assert proc.stderr is not None
        err = proc.stderr.read().decode(errors="replace")
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if stdout is not None:
            out.close()
    wall = time.perf_counter() - t0
    last = err.strip().splitlines()[-1] if err.strip() else ""
    return {
        "rc": proc.returncode,
        "wall_s": round(wall, 1),
        "peak_rss_mib": round(usage.ru_maxrss / 1024),
        "stderr": last,
    }


def run_command(command: str, minutes: float, work: Path) -> dict:
    src = write_input(work / f"in_{minutes:g}min.wav", minutes)
    codes = work / f"codes_{minutes:g}min.jsonl"
    out = work / f"out_{command}_{minutes:g}min.wav"
    cli = uniaudio()
    if command == "encode":
        cmd, stdout = [*cli, "encode", "--json", "--quiet", str(src)], codes
    elif command == "decode":
        if not codes.exists():
            r = measure([*cli, "encode", "--json", "--quiet", str(src)], codes)
            if r["rc"]:
                return {**r, "note": "encode failed"}
        cmd, stdout = [*cli, "decode", "--quiet", "--force", str(codes), "-o", str(out)], None
    elif command == "denoise":
        cmd, stdout = [*cli, "denoise", "--quiet", "--force", str(src), "-o", str(out)], None
    elif command == "denoise-tiny":
        cmd, stdout = [sys.executable, __file__, "--tiny-denoise", str(src), str(out)], None
    elif command == "classify":
        cmd, stdout = [*cli, "classify", "--quiet", "--demos", str(demos_folder(work)), str(src)], None
    else:
        raise SystemExit(f"unknown command {command!r}")
    r = measure(cmd, stdout)
    if r["rc"] == 0 and command in ("decode", "denoise", "denoise-tiny"):
        import soundfile as sf

        r["note"] = f"output {sf.info(out).duration / 60:.2f} min"
        out.unlink()
    elif r["rc"] == 0 and command == "encode":
        r["note"] = f"{codes.stat().st_size / 1e3:.0f} kB of JSON codes"
    return r


def tiny_denoise(src: Path, out: Path) -> None:
    """Denoise ``src`` into ``out`` with the tests' tiny models (the ``denoise-tiny`` child process)."""
    import torch

    from tests.test_tasks import tiny_models, write_pairs
    from uniaudio_cli.audio import write_audio_blocks
    from uniaudio_cli.tasks.denoise import DenoiseOptions, Denoiser, load_pair_folder

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        llm, codec = tiny_models(Path(tmp))
        pairs = load_pair_folder(write_pairs(Path(tmp) / "pairs"))
        den = Denoiser.from_pairs(llm, codec, pairs, DenoiseOptions())
        write_audio_blocks(out, den.stream(src), codec.sample_rate, force=True)


def main() -> None:
    if sys.argv[1:2] == ["--tiny-denoise"]:
        tiny_denoise(Path(sys.argv[2]), Path(sys.argv[3]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, nargs="+", default=[1, 60], help="encode/decode input lengths")
    ap.add_argument("--denoise-minutes", type=float, nargs="+", default=[1, 5])
    ap.add_argument("--classify-minutes", type=float, nargs="+", default=[1, 10, 60])
    ap.add_argument("--commands", nargs="+", default=["encode", "decode", "denoise", "classify"])
    ap.add_argument("--work", type=Path, default=None, help="folder for the inputs (kept; default: a temp folder)")
    ap.add_argument("--json", action="store_true", help="one JSON record per run instead of the table")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="uniaudio-long-"))
    work.mkdir(parents=True, exist_ok=True)
    lengths = {"denoise": args.denoise_minutes, "classify": args.classify_minutes}  # denoise-tiny: --minutes
    if not args.json:
        print("| command | input | peak RSS (MiB) | wall (s) | exit | note |")
        print("|---|---|---|---|---|---|")
    for command in args.commands:
        for minutes in lengths.get(command, args.minutes):
            r = run_command(command, minutes, work)
            note = r.get("note") or (r["stderr"] if r["rc"] else "")
            if args.json:
                print(json.dumps({"command": command, "minutes": minutes, **r}), flush=True)
            else:
                print(
                    f"| {command} | {minutes:g} min | {r['peak_rss_mib']} | {r['wall_s']} | {r['rc']} | {note} |",
                    flush=True,
                )
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
