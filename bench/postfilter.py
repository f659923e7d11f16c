"""Choose the decoder post-filter's exponent (``small_contrast``) on training speech.

Decodes the same codes once per exponent, setting the head's ``contrast`` in place (the weights
and codes do not change), and prints PESQ-WB, STOI and mel distance per exponent. The default
codec's 1.1 was chosen this way on 24 clips of ``speech_extra``, which the codec trained on, so
no held-out set is touched; check the choice on held-out speech with ``bench/codec_compare.py``
after exporting it (``python -m uniaudio_cli.codec.export SRC DST --contrast P``).

    OMP_NUM_THREADS=1 python bench/postfilter.py [--codec PATH] [--clips 24] [--powers 1.0 1.05 1.1 1.15 1.2]
        [--smooth 0 17]

``--smooth``: the envelope widths to try (``small_contrast_smooth``; 0 raises the whole
magnitude, as the exponent alone did before), each with every exponent.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from uniaudio_cli.audio import load_audio
from uniaudio_cli.codec.api import load_codec
from uniaudio_cli.codec.config import valid_contrast, valid_contrast_smooth
from uniaudio_cli.evaluate.codec_eval import mel_distance, pesq_wb, stoi_score
from uniaudio_cli.train.data import discover_clips

ROOT = Path(__file__).resolve().parents[1]


def training_clips(root: Path, n: int) -> list[Path]:
    """``n`` clips of ``root`` (as the trainer finds them) at a fixed stride: the selection the
    default's exponent was chosen on (``codec_eval.spread`` would pick other clips)."""
    paths = [c.path for c in discover_clips([root])]
    return paths[:: max(1, len(paths) // n)][:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--codec", default=None, help="codec folder (default: the shipped codec)")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "speech_extra")
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--seconds", type=float, default=12.0, help="each clip's first seconds")
    ap.add_argument("--powers", type=float, nargs="+", default=[1.0, 1.05, 1.1, 1.15, 1.2])
    ap.add_argument("--smooth", type=int, nargs="+", default=[0], help="envelope widths in bins (0: whole)")
    args = ap.parse_args()
    bad = [p for p in args.powers if not valid_contrast(p)]
    if bad:
        sys.exit(f"--powers {bad}: each must lie in the range export --contrast accepts")
    bad_widths = [w for w in args.smooth if not valid_contrast_smooth(w)]
    if bad_widths:
        sys.exit(f"--smooth {bad_widths}: each must be a width export --contrast-smooth accepts")
    torch.set_num_threads(1)
    codec = load_codec(args.codec, device="cpu")
    head = getattr(getattr(codec.model, "decoder", None), "head", None)
    if head is None or not hasattr(head, "contrast"):
        sys.exit(f"{args.codec or 'the default codec'}: its decoder has no iSTFT head to post-filter")
    files = training_clips(args.data, args.clips)
    settings = [(p, w) for w in args.smooth for p in args.powers]
    scores: dict[tuple[float, int], list[tuple[float, float, float]]] = {s: [] for s in settings}
    for i, path in enumerate(files, 1):
        wav = load_audio(path, codec.sample_rate)[: int(args.seconds * codec.sample_rate)]
        ids = codec.encode(wav)
        for p, w in settings:
            head.contrast, head.contrast_smooth = p, w
            rec = codec.decode(ids, len(wav))
            n = min(len(wav), len(rec))
            ref, deg = wav[:n], rec[:n]
            pesq, stoi = pesq_wb(ref, deg, codec.sample_rate), stoi_score(ref, deg, codec.sample_rate)
            scores[(p, w)].append(
                (
                    np.nan if pesq is None else pesq,
                    np.nan if stoi is None else stoi,
                    mel_distance(ref, deg, codec.sample_rate),
                )
            )
        print(f"{i}/{len(files)} {path.name}", file=sys.stderr, flush=True)
    print("| exponent | envelope width | PESQ-WB | STOI | mel distance |\n|---|---|---|---|---|")
    for p, w in settings:
        a = np.asarray(scores[(p, w)], float)
        means = f"{np.nanmean(a[:, 0]):.3f} | {np.nanmean(a[:, 1]):.4f} | {np.nanmean(a[:, 2]):.3f}"
        print(f"| {p:g} | {w or 'whole'} | {means} |")


if __name__ == "__main__":
    main()
