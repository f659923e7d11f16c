"""Encode and decode speed (real-time factor) of the LLM-Codec backbones, with random weights.

Times ``LLMCodec.encode`` and ``LLMCodec.decode`` on a clip of low-level noise for

* ``small``: the default small backbone, ``CodecConfig(backbone="small")`` with SmolLM2-sized
  codebooks (3,000 / 49,152 / 49,152 rows of 576);
* ``published``: the UniAudio 1.5 architecture at its released size (latent 512, encoder 32,
  decoder 1536, codebooks 3,248 / 32,000 / 32,000 rows of 768 / 4,096 / 4,096), weight norm
  fused as for inference (``--no-fuse`` keeps it unfused, as training runs it);

on the CPU and, when present, on CUDA. Weights and codebooks are random: speed does not depend
on their values, except in the small backbone's code search on the CPU: random codebooks are
full-rank, so it takes the one exact product here, while the LLM's real tables are nearly
low-rank and take the faster two-pass search (``LowRankSearch``; same codes).
``uniaudio eval codec DIR --json`` times the shipped codec on real audio. Each case gets one
untimed warm-up pass (it also builds the projected-codebook cache), then the median of
``--repeats`` timed passes. RTF = (encode + decode) / audio seconds.

    python bench/codec_rtf.py [--seconds 10] [--repeats 3] [--backbone small published]
                              [--device cpu cuda] [--markdown]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

# runnable from a checkout without installing the package
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uniaudio_cli.codec.config import CodecConfig
from uniaudio_cli.codec.model import LLMCodec
from uniaudio_cli.evaluate.report import Column, Report, Table, render_rich, run_metadata, to_markdown

CONFIGS = {
    "small": lambda: CodecConfig(backbone="small"),
    "published": lambda: CodecConfig(
        backbone="published",
        latent_dim=512,
        encoder_dim=32,
        decoder_dim=1536,
        codebook_sizes=[3248, 32000, 32000],
        codebook_dims=[768, 4096, 4096],
    ),
}


def published_available() -> str | None:
    """``None`` when the published backbone can be built, else why not."""
    try:
        import uniaudio_cli.codec.published  # noqa: F401
    except ImportError as e:
        return f"uniaudio_cli.codec.published is not importable ({e})"
    return None


def build(name: str, device: torch.device, fuse: bool) -> LLMCodec:
    """A random-weight codec with random ``N(0, 1)`` codebooks, in eval mode on ``device``."""
    torch.manual_seed(0)
    cfg = CONFIGS[name]()
    model = LLMCodec(cfg).eval()
    gen = torch.Generator().manual_seed(0)
    model.set_codebooks(
        [torch.randn(k, e, generator=gen) for k, e in zip(cfg.codebook_sizes, cfg.codebook_dims, strict=True)]
    )
    if fuse and cfg.backbone == "published":
        from uniaudio_cli.codec.published import fuse_weight_norm

        fuse_weight_norm(model)
    return model.to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_codec(model: LLMCodec, seconds: float, repeats: int, device: torch.device) -> tuple[float, float]:
    """Median encode and decode wall time in seconds of a ``seconds``-long clip."""
    n = int(seconds * model.sample_rate)
    wav = 0.1 * torch.randn(1, 1, n, generator=torch.Generator().manual_seed(1))
    wav = wav.to(device)
    enc, dec = [], []
    for i in range(repeats + 1):  # pass 0 is the warm-up
        _sync(device)
        t0 = time.perf_counter()
        codes = model.encode(wav)
        _sync(device)
        t1 = time.perf_counter()
        model.decode(codes, n)
        _sync(device)
        t2 = time.perf_counter()
        if i:
            enc.append(t1 - t0)
            dec.append(t2 - t1)
    return statistics.median(enc), statistics.median(dec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--seconds", type=float, default=10.0, help="audio length per pass")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes after one warm-up")
    ap.add_argument("--backbone", nargs="+", choices=sorted(CONFIGS), default=["small", "published"])
    ap.add_argument("--device", nargs="+", default=None, help="default: cpu, plus cuda when present")
    ap.add_argument("--no-fuse", action="store_true", help="time the published backbone with unfused weight norm")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table instead of a rich one")
    args = ap.parse_args()

    devices = [torch.device(d) for d in (args.device or ["cpu", *(["cuda"] if torch.cuda.is_available() else [])])]
    rows, notes = [], []
    for name in args.backbone:
        if name == "published" and (why := published_available()) is not None:
            notes.append(f"published backbone skipped: {why}")
            continue
        for dev in devices:
            model = build(name, dev, fuse=not args.no_fuse)
            params = sum(p.numel() for p in model.parameters())
            enc, dec = time_codec(model, args.seconds, args.repeats, dev)
            rows.append(
                {
                    "backbone": name + (" (unfused)" if args.no_fuse and name == "published" else ""),
                    "device": str(dev),
                    "params": params / 1e6,
                    "seconds": args.seconds,
                    "encode_s": enc,
                    "decode_s": dec,
                    "rtf": (enc + dec) / args.seconds,
                }
            )
            print(f"{name} on {dev}: encode {enc:.3f} s, decode {dec:.3f} s", file=sys.stderr)
            del model
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    notes += [
        "Random weights and codebooks; median of the timed passes after one warm-up.",
        "Random codebooks are full-rank: the small backbone's CPU code search takes the exact product here,"
        " the shipped codec's the two-pass low-rank one (uniaudio eval codec times that).",
        "Params: trainable parameters (the frozen codebook tables are extra buffers).",
        "RTF = (encode + decode) / audio seconds; below 1 is faster than real time.",
        f"torch threads: {torch.get_num_threads()}.",
    ]
    table = Table(
        "Codec real-time factor",
        [
            Column("backbone", "Backbone"),
            Column("device", "Device"),
            Column("params", "Params (M)", ".1f"),
            Column("seconds", "Audio (s)", ".1f"),
            Column("encode_s", "Encode (s)", ".3f"),
            Column("decode_s", "Decode (s)", ".3f"),
            Column("rtf", "RTF", ".3f"),
        ],
        rows,
        notes,
    )
    report = Report("LLM-Codec speed", [table], run_metadata(devices[-1]))
    if args.markdown:
        print(to_markdown(report))
    else:
        from rich.console import Console

        render_rich(report, Console())


if __name__ == "__main__":
    main()
