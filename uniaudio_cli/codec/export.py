"""Re-save a codec checkpoint folder, e.g. in float16 for shipping.

python -m uniaudio_cli.codec.export runs/default/codec-best checkpoints/llm-codec-smollm2 --dtype float16

``--drop-oscillator`` turns a codec trained with the harmonic head (``small_harmonic``) into one
with the plain iSTFT head: the pitch and mix layers go, the rest stays. Its output differs by what
the oscillator added (the mix weight the head learned; about 0.4 % when training shut it off).
``--residual-search euclidean`` sets how encoding picks the codes after the first layer (see
``CodecConfig``); ``--contrast P`` sets the decoder's spectral-contrast post-filter
(``small_contrast``, see :func:`~uniaudio_cli.codec.small.spectral_contrast`) and
``--contrast-smooth N`` whether it raises the whole magnitude (0) or only its envelope over N bins
(``small_contrast_smooth``). None of them changes the weights.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from uniaudio_cli.codec.checkpoint import build_codec, load_codec_weights, save_codec
from uniaudio_cli.codec.config import (
    CONTRAST_RANGE,
    MAX_CONTRAST_SMOOTH,
    RESIDUAL_SEARCHES,
    valid_contrast,
    valid_contrast_smooth,
)
from uniaudio_cli.errors import OutputExistsError, UsageError, run_tool

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def export_codec(
    src: str | Path,
    dst: str | Path,
    dtype: torch.dtype | None = None,
    drop_oscillator: bool = False,
    force: bool = False,
    residual_search: str | None = None,
    contrast: float | None = None,
    contrast_smooth: int | None = None,
) -> Path:
    """Copy checkpoint ``src`` to ``dst`` (validated against its config), storing weights in
    ``dtype``; ``drop_oscillator``, ``residual_search``, ``contrast`` and ``contrast_smooth``
    (``None``: as ``src``): see the module docstring. An existing ``dst`` is replaced only with
    ``force``, and only when it is itself a checkpoint folder (:func:`save_codec`)."""
    if Path(dst).exists() and not force:
        raise OutputExistsError(f"{dst}: exists", "pass --force to overwrite, or choose another output")
    cfg, sd = load_codec_weights(src)
    if drop_oscillator and cfg.small_harmonic:
        cfg = dataclasses.replace(cfg, small_harmonic=False)
        sd = {k: v for k, v in sd.items() if not k.startswith(("decoder.head.pitch_proj.", "decoder.head.mix."))}
    if residual_search is not None:
        cfg = dataclasses.replace(cfg, residual_search=residual_search)
    if contrast is not None:
        if cfg.backbone != "small" or not valid_contrast(contrast):
            lo, hi = CONTRAST_RANGE
            raise UsageError(
                f"--contrast {contrast}: needs the small backbone and a value between {lo} and {hi}",
                "omit --contrast, or pass e.g. --contrast 1.1",
            )
        cfg = dataclasses.replace(cfg, small_contrast=contrast)
    if contrast_smooth is not None:
        if cfg.backbone != "small" or not valid_contrast_smooth(contrast_smooth):
            raise UsageError(
                f"--contrast-smooth {contrast_smooth}: needs the small backbone and 0 or an odd width up to "
                f"{MAX_CONTRAST_SMOOTH}",
                "omit --contrast-smooth, or pass e.g. --contrast-smooth 17",
            )
        cfg = dataclasses.replace(cfg, small_contrast_smooth=contrast_smooth)
    model = build_codec(cfg, sd, str(src))
    return save_codec(model, dst, dtype=dtype)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    ap.add_argument("--drop-oscillator", action="store_true", help="write a harmonic-head codec with the plain head")
    ap.add_argument("--residual-search", choices=RESIDUAL_SEARCHES, default=None, help="default: as SRC")
    ap.add_argument("--contrast", type=float, default=None, help="post-filter exponent (1.0: off); default: as SRC")
    ap.add_argument(
        "--contrast-smooth", type=int, default=None, help="post-filter envelope width, bins (0: all); default: as SRC"
    )
    ap.add_argument("--force", action="store_true", help="replace DST when it is a codec checkpoint folder")
    ap.add_argument("--debug", action="store_true", help="show the traceback of an error")
    run_tool(_run, ap.parse_args())


def _run(args: argparse.Namespace) -> None:
    out = export_codec(
        args.src,
        args.dst,
        DTYPES[args.dtype],
        drop_oscillator=args.drop_oscillator,
        force=args.force,
        residual_search=args.residual_search,
        contrast=args.contrast,
        contrast_smooth=args.contrast_smooth,
    )
    size = sum(p.stat().st_size for p in out.iterdir()) / 2**20
    print(f"{out}: {size:.1f} MiB")


if __name__ == "__main__":
    main()
