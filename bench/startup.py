"""Start-up costs: `uniaudio --help`, loading the default models (where the time goes), and
whole commands on one short clip with a warm cache.

    python bench/startup.py [--repeats 5] [--clip prompts/tts_digits/2/<file>]

Run it with nothing else busy on the machine; the first run fills $UNIAUDIO_HOME (run it twice
to see the warm figures).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def wall(cmd: list[str], repeats: int) -> tuple[float, float]:
    """Median and minimum wall time of a command, in seconds (it must succeed)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def load_breakdown() -> list[tuple[str, float]]:
    """Seconds per stage of loading the default models in this process."""
    out = []
    t0 = time.perf_counter()
    import torch  # noqa: F401

    out.append(("import torch", time.perf_counter() - t0))
    t0 = time.perf_counter()
    import transformers  # noqa: F401

    out.append(("import transformers", time.perf_counter() - t0))
    from uniaudio_cli.codec.api import load_codec
    from uniaudio_cli.llm import load_llm

    t0 = time.perf_counter()
    llm = load_llm(None, device="cpu")
    out.append(("load LLM (tokenizer, weights, vocabulary)", time.perf_counter() - t0))
    t0 = time.perf_counter()
    load_codec(None, vocabulary=llm.vocabulary, device="cpu")
    out.append(("load codec (weights, frozen codebooks)", time.perf_counter() - t0))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--clip", type=Path, default=None)
    args = ap.parse_args()
    exe = [sys.executable, "-m", "uniaudio_cli"]
    clip = args.clip or sorted((Path(__file__).resolve().parents[1] / "prompts" / "tts_digits" / "2").glob("*"))[0]

    print("| what | median s | min s |\n|---|---|---|")
    for name, cmd in (
        ("uniaudio --help", [*exe, "--help"]),
        ("import uniaudio_cli", [sys.executable, "-c", "import uniaudio_cli"]),
    ):
        med, low = wall(cmd, args.repeats)
        print(f"| `{name}` | {med:.3f} | {low:.3f} |")
    # Warm the cache once, then time whole commands.
    subprocess.run([*exe, "encode", str(clip)], check=True, stdout=subprocess.DEVNULL)
    with tempfile.TemporaryDirectory() as tmp:
        demos = Path(tmp) / "demos"
        for label, digit in (("two", "2"), ("three", "3")):
            src = sorted((clip.parents[1] / digit).glob("*"))[0]
            (demos / label).mkdir(parents=True)
            (demos / label / src.name).symlink_to(src)
        for name, cmd in (
            ("uniaudio encode <clip> (warm)", [*exe, "encode", str(clip)]),
            ("uniaudio classify, 2 labels, 1 query (warm)", [*exe, "classify", "--demos", str(demos), str(clip)]),
        ):
            med, low = wall(cmd, max(1, args.repeats // 2))
            print(f"| `{name}` | {med:.2f} | {low:.2f} |")
    print("\n| loading stage (in process, warm cache) | s |\n|---|---|")
    for name, s in load_breakdown():
        print(f"| {name} | {s:.2f} |")


if __name__ == "__main__":
    main()
