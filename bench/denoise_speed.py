"""Where `uniaudio denoise --mode paper` spends its time once the models are loaded (the default
mode writes no tokens: see docs/denoise.md), one LLM pass per written
token (``draft_block`` 1, the plain greedy loop) beside checking the noisy tokens as a draft
in blocks (the default), on the same mixtures: seconds per clip, real-time factor, LLM passes,
and whether the written tokens are the same.

    OMP_NUM_THREADS=1 python bench/denoise_speed.py [--files 6] [--seconds 4]
        [--json out.json]

Mixtures: the first ``--files`` LibriSpeech test-other excerpts of ``.data/heldout/speech``
(``python bench/heldout.py`` makes them; never seen by the codec) with the shared noise files
in turn at 0, 5 and 10 dB. Shipped demonstration pairs.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from uniaudio_cli.api import load_models
from uniaudio_cli.audio import load_audio
from uniaudio_cli.decoding import PrefixCache
from uniaudio_cli.evaluate.denoise_eval import load_clean, mix_at_snr, noise_segment
from uniaudio_cli.tasks.denoise import (
    DenoiseOptions,
    Denoiser,
    TokenDenoiser,
    default_denoise_demos,
    load_pair_folder,
)

ROOT = Path(__file__).resolve().parents[1]


class PassCounter:
    """Counts the LLM forward passes made through :class:`PrefixCache` (prefix set-up included)."""

    def __init__(self) -> None:
        self.passes = 0
        self._run = PrefixCache._run

    def __enter__(self) -> PassCounter:
        counter = self

        def counted(cache_self: PrefixCache, ids: Any, cache: Any) -> Any:
            counter.passes += 1
            return counter._run(cache_self, ids, cache)

        PrefixCache._run = counted  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        PrefixCache._run = self._run  # type: ignore[method-assign]


def mixtures(files: int, seconds: float, sample_rate: int, data: Path) -> list[tuple[str, float, np.ndarray]]:
    speech = sorted((ROOT / ".data/heldout/speech/librispeech").glob("*.flac"))[:files]
    if not speech:
        raise SystemExit("no held-out speech: run `python bench/heldout.py` first")
    noises = sorted((data / "noise").rglob("*.flac"))
    out = []
    for i, path in enumerate(speech):
        snr = (0.0, 5.0, 10.0)[i % 3]
        clean = load_clean(path, seconds, sample_rate)
        noise = noise_segment(load_audio(noises[i % len(noises)], sample_rate), len(clean), 0)
        noisy, _ = mix_at_snr(clean, noise, snr)
        out.append((f"{path.name} + {noises[i % len(noises)].parent.name} at {snr:g} dB", snr, noisy))
    return out


def run(den: TokenDenoiser, wav: np.ndarray) -> dict[str, Any]:
    written: list[list[list[int]]] = []
    noisy_in: list[list[list[int]]] = []
    clean_segment = den._clean_segment

    def recording(noisy: list[list[int]]) -> list[list[int]]:
        out = clean_segment(noisy)
        noisy_in.append(noisy)
        written.append(out)
        return out

    den._clean_segment = recording  # type: ignore[method-assign]
    try:
        with PassCounter() as counter:
            t0 = time.perf_counter()
            audio = den.denoise_wav(wav)
            seconds = time.perf_counter() - t0
    finally:
        del den._clean_segment
    flat_out = [t for seg in written for layer in seg for t in layer]
    flat_in = [t for seg in noisy_in for layer in seg for t in layer]
    kept = sum(a == b for a, b in zip(flat_out, flat_in, strict=True))
    return {
        "seconds": seconds,
        "passes": counter.passes,
        "tokens": len(flat_out),
        "kept": kept,
        "written": written,
        "audio": audio,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--files", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--block", type=int, default=DenoiseOptions.draft_block, help="draft block of the 'after' run")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    models = load_models(device="cpu")
    opts = DenoiseOptions(mode="paper")
    t0 = time.perf_counter()
    den = Denoiser.from_pairs(models.llm, models.codec, load_pair_folder(default_denoise_demos()), opts)
    setup_s = time.perf_counter() - t0
    mixes = mixtures(args.files, args.seconds, models.codec.sample_rate, args.data)

    rows = []
    for name, _, wav in mixes:
        row: dict[str, Any] = {"mixture": name}
        for label, block in (("before", 1), ("after", args.block)):
            den.opts.draft_block = block
            row[label] = run(den, wav)
        b, a = row["before"], row["after"]
        row["same_tokens"] = a["written"] == b["written"]
        row["same_audio"] = bool(np.array_equal(a["audio"], b["audio"]))
        rows.append(row)
        print(
            f"{name}: {b['seconds']:.1f} s -> {a['seconds']:.1f} s, passes {b['passes']} -> {a['passes']}, "
            f"kept {a['kept']}/{a['tokens']}, same tokens {row['same_tokens']}",
            flush=True,
        )

    audio_s = args.seconds
    print(
        f"\nMachine: {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} thread(s)"
    )
    print(f"{len(rows)} mixtures of {audio_s:g} s, paper mode, set-up (pairs, prompt cache) {setup_s:.1f} s\n")
    print(f"| | one pass per token | drafted, block {args.block} |\n|---|---|---|")
    for key, fmt in (("seconds", "{:.2f}"), ("passes", "{:.0f}")):
        print(
            f"| {key} per clip | {fmt.format(statistics.mean(r['before'][key] for r in rows))} | "
            f"{fmt.format(statistics.mean(r['after'][key] for r in rows))} |"
        )
    rtf_b = statistics.mean(r["before"]["seconds"] for r in rows) / audio_s
    rtf_a = statistics.mean(r["after"]["seconds"] for r in rows) / audio_s
    print(f"| real-time factor | {rtf_b:.2f} | {rtf_a:.2f} |")
    kept = sum(r["after"]["kept"] for r in rows) / sum(r["after"]["tokens"] for r in rows)
    same = sum(r["same_tokens"] for r in rows)
    print(f"\nnoisy tokens kept: {kept:.1%}; written tokens identical on {same}/{len(rows)} mixtures")
    if args.json:
        slim = [
            {
                "mixture": r["mixture"],
                "same_tokens": r["same_tokens"],
                "same_audio": r["same_audio"],
                **{
                    f"{k}_{key}": r[k][key]
                    for k in ("before", "after")
                    for key in ("seconds", "passes", "kept", "tokens")
                },
            }
            for r in rows
        ]
        args.json.write_text(
            json.dumps({"setup_s": setup_s, "rtf_before": rtf_b, "rtf_after": rtf_a, "rows": slim}, indent=1)
        )


if __name__ == "__main__":
    main()
