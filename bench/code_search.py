"""Whether the two-pass code search (``LowRankSearch``) gives the exact search's codes, and how
much faster it encodes: every clip of the held-out sets encoded both ways, code by code.

    python bench/code_search.py [--codec checkpoints/llm-codec-smollm2] [--max-files N]

Needs the held-out views (``python bench/heldout.py``). One thread, as the RTF figures are.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import soundfile as sf
import torch

# runnable from a checkout without installing the package
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uniaudio_cli.codec import quantizer
from uniaudio_cli.codec.api import load_codec
from uniaudio_cli.evaluate.codec_eval import spread

SETS = {
    "librispeech": ".data/heldout/speech/librispeech/*.flac",
    "fsdd": ".data/heldout/speech/fsdd/*.flac",
    "esc10": ".data/heldout/esc10/*/*.flac",
    "ravdess": ".data/heldout/ravdess/*/*.flac",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--codec", default="checkpoints/llm-codec-smollm2")
    ap.add_argument("--max-files", type=int, default=None, help="per set, evenly spaced (default: all)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    codec = load_codec(args.codec, device="cpu")
    fast_path = quantizer.LowRankSearch.pays_off
    for name, pattern in SETS.items():
        files = spread(sorted(Path().glob(pattern)), args.max_files)
        if not files:
            print(f"{name}: no clips under {pattern} (run python bench/heldout.py)")
            continue
        differ = total = 0
        seconds = {"two-pass": 0.0, "exact": 0.0}
        for path in files:
            wav = sf.read(path, dtype="float32")[0]
            codes = {}
            for how in seconds:
                quantizer.LowRankSearch.pays_off = fast_path if how == "two-pass" else staticmethod(lambda t: False)
                start = time.perf_counter()
                codes[how] = codec.encode(wav)
                seconds[how] += time.perf_counter() - start
            quantizer.LowRankSearch.pays_off = fast_path
            for a, b in zip(codes["two-pass"], codes["exact"], strict=True):
                total += len(a)
                differ += sum(x != y for x, y in zip(a, b, strict=True))
        print(
            f"{name}: {len(files)} clips, {differ} of {total} codes differ; "
            f"encode {seconds['exact']:.1f} s exact, {seconds['two-pass']:.1f} s two-pass",
            flush=True,
        )


if __name__ == "__main__":
    main()
