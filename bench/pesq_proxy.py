"""How well the training loss's PESQ estimate (``PerceptualQualityLoss``) follows ``pesq``'s PESQ-WB.

For every clip (every ``--stride``-th training file of ``--data``; training clips, not held-out
ones) it scores, against the clip, each codec's resynthesis and, as references of other kinds of
damage, the clip with white noise 20 dB down and a 4-tap moving average (a gentle low-pass). For
each ``--levels`` value (the loss's ``level_db``: where the hearing threshold sits below the
speech) it prints the correlation of the estimate's degradation with PESQ-WB over all outputs and
over the codec outputs alone, the correlation of the paired changes between the first two codecs
(does the estimate see which codec is better on which clip), and the ``loudness_scale`` at which
the estimated MOS best matches PESQ-WB on the codec outputs:

    python bench/pesq_proxy.py checkpoints/llm-codec-smollm2 runs/s34 --levels 70 90 100
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from uniaudio_cli.audio import load_audio
from uniaudio_cli.codec import load_codec
from uniaudio_cli.evaluate.codec_eval import pesq_wb
from uniaudio_cli.train.losses import PerceptualQualityLoss

ROOT = Path(__file__).resolve().parents[1]


def as_batch(wav: np.ndarray) -> torch.Tensor:
    """``(T,)`` -> ``(1, 1, T)`` float32."""
    return torch.from_numpy(np.asarray(wav, dtype=np.float32))[None, None]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("codecs", nargs="+", help="codec folders (the first two are paired)")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "speech_extra")
    ap.add_argument("--stride", type=int, default=19, help="every STRIDE-th file of --data, sorted")
    ap.add_argument("--clips", type=int, default=12)
    ap.add_argument("--levels", type=float, nargs="+", default=[100.0])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    files = sorted(args.data.glob("*/*.flac"))[:: args.stride][: args.clips]
    rng = np.random.default_rng(0)
    clips = [load_audio(f, 16000) for f in files]
    # (kind, clip index, output): the codecs' resyntheses, then the two reference damages.
    outputs: list[tuple[str, int, np.ndarray]] = []
    for folder in args.codecs:
        codec = load_codec(folder, device="cpu")
        outputs += [(folder, i, codec.decode(codec.encode(x), len(x))) for i, x in enumerate(clips)]
    for i, x in enumerate(clips):
        noise = rng.standard_normal(x.size) * np.sqrt(np.mean(x**2)) * 0.1
        outputs.append(("noise 20 dB", i, x + noise))
        outputs.append(("low-pass", i, np.convolve(x, np.ones(4) / 4, mode="same")))
    pesq = np.array([pesq_wb(clips[i], y) for _, i, y in outputs])
    kinds = np.array([k for k, _, _ in outputs])
    on_codec = np.isin(kinds, args.codecs)
    for kind in dict.fromkeys(kinds):
        print(f"{kind}: PESQ-WB {pesq[kinds == kind].mean():.3f}")
    print("| level_db | r, all outputs | Spearman, codec outputs | r, paired codec changes | loudness_scale |")
    print("|---|---|---|---|---|")
    for level in args.levels:
        estimate = PerceptualQualityLoss(16000, level_db=level, loudness_scale=1.0)
        with torch.no_grad():
            deg = np.array([float(estimate.degradation(as_batch(y), as_batch(clips[i]))) for _, i, y in outputs])
        paired = "-"
        if len(args.codecs) > 1:
            a, b = (kinds == args.codecs[0]), (kinds == args.codecs[1])
            paired = f"{np.corrcoef(deg[a] - deg[b], pesq[a] - pesq[b])[0, 1]:+.2f}"
        scales = np.linspace(0.1, 12.0, 120)
        errors = [
            np.mean((PerceptualQualityLoss.mos(torch.from_numpy(s * deg[on_codec])).numpy() - pesq[on_codec]) ** 2)
            for s in scales
        ]
        print(
            f"| {level:g} | {np.corrcoef(deg, pesq)[0, 1]:+.2f} | {spearmanr(deg[on_codec], pesq[on_codec])[0]:+.2f} "
            f"| {paired} | {scales[int(np.argmin(errors))]:.1f} |"
        )


if __name__ == "__main__":
    main()
