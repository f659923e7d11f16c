"""Re-save a codec checkpoint folder, e.g. in float16 for shipping.

python -m uniaudio_cli.codec.export runs/default/codec-best checkpoints/llm-codec-smollm2 --dtype float16
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from uniaudio_cli.codec.checkpoint import build_codec, load_codec_weights, save_codec

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def export_codec(src: str | Path, dst: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Copy checkpoint ``src`` to ``dst`` (validated against its config), storing weights in ``dtype``."""
    cfg, sd = load_codec_weights(src)
    model = build_codec(cfg, sd, str(src))
    return save_codec(model, dst, dtype=dtype)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    args = ap.parse_args()
    out = export_codec(args.src, args.dst, DTYPES[args.dtype])
    size = sum(p.stat().st_size for p in out.iterdir()) / 2**20
    print(f"{out}: {size:.1f} MiB")


if __name__ == "__main__":
    main()
