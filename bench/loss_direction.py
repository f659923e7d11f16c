"""Which loss, minimised on a clip's continuous latent through the frozen decoder, raises PESQ-WB.

A cheap proxy for the direction a decoder fine-tune under that loss would take: for each clip the
encoder's latent is optimised (Adam, ``--steps`` at ``--lr``) through the frozen decoder of
``--codec``, without the quantizer, and the decoded latent is scored against the clip before and
after. Variants (``--losses``):

- ``sym``: the training loss, 15 x log-mel + 5 x log-magnitude + spectral convergence;
- ``asymN``: ``sym`` plus 5 x a log-magnitude L1 over the 512-2048-sample windows whose excess
  (output above input) counts ``N`` times;
- ``excN``: ``sym`` plus ``N`` x :class:`~uniaudio_cli.train.losses.SpectralLoss`'s ``excess``
  (what ``uniaudio train-codec --w-excess N`` adds);
- ``pqN``: ``exc15`` plus ``N`` x :class:`~uniaudio_cli.train.losses.PerceptualQualityLoss`, the
  estimate of what PESQ's raw score loses (what ``--w-pesq N`` adds beside ``--w-excess 15``).

Run on training clips (the default is every 19th ``speech_extra`` file), not on held-out sets:

    python bench/loss_direction.py [--codec DIR] [--clips 16] [--losses sym,exc15,asym4]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from uniaudio_cli.audio import load_audio
from uniaudio_cli.codec import load_codec
from uniaudio_cli.evaluate.codec_eval import pesq_wb, stoi_score
from uniaudio_cli.train.losses import PerceptualQualityLoss, SpectralLoss

ROOT = Path(__file__).resolve().parents[1]
HARMONIC_WINDOWS = (512, 1024, 2048)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--codec", default=None, help="codec folder (default: the shipped codec)")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "speech_extra")
    ap.add_argument("--stride", type=int, default=19, help="every STRIDE-th file of --data, sorted")
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--losses", default="sym,exc15")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    files = sorted(args.data.glob("*/*.flac"))[:: args.stride][: args.clips]
    variants = args.losses.split(",")
    codec = load_codec(args.codec, device="cpu")
    model = codec.model.eval().requires_grad_(False)
    spectral = SpectralLoss(codec.sample_rate)
    quality = PerceptualQualityLoss(codec.sample_rate)
    windows = {w: torch.hann_window(w) for w in HARMONIC_WINDOWS}

    def log_mag(x: torch.Tensor, w: int) -> torch.Tensor:
        spec = torch.stft(x.squeeze(1), w, w // 4, window=windows[w], return_complex=True)
        return torch.log(torch.sqrt(spec.real**2 + spec.imag**2 + 1e-9).clamp_min(1e-5))

    def loss_of(variant: str, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        s = spectral(y, x)
        loss = 15 * s.mel + 5 * s.stft_mag + s.stft_sc
        if variant.startswith("pq"):
            return loss + 15 * s.excess + float(variant[2:]) * quality(y, x)
        if variant.startswith("exc"):
            return loss + float(variant[3:]) * s.excess
        if variant.startswith("asym"):
            over = float(variant[4:])
            diffs = [log_mag(y, w) - log_mag(x, w).detach() for w in HARMONIC_WINDOWS]
            return loss + 5 * sum(torch.where(d > 0, over * d, -d).mean() for d in diffs) / len(diffs)
        if variant != "sym":
            raise SystemExit(f"--losses: unknown variant {variant!r} (sym, asymN, excN, pqN)")
        return loss

    scores: dict[str, list[tuple[float, float]]] = {v: [] for v in ["none", *variants]}
    for path in files:
        wav = load_audio(path, codec.sample_rate)
        x = torch.from_numpy(wav)[None, None]
        n = x.shape[-1]
        with torch.no_grad():
            z0 = model.encoder(model.preprocess(x))
        for variant in scores:
            z = z0.clone().requires_grad_(variant != "none")
            if variant != "none":
                opt = torch.optim.Adam([z], lr=args.lr)
                for _ in range(args.steps):
                    loss = loss_of(variant, model.decoder(z)[..., :n], x)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
            with torch.no_grad():
                y = model.decoder(z)[0, 0, :n].numpy()
            scores[variant].append((pesq_wb(wav, y), stoi_score(wav, y, codec.sample_rate)))
        print(path.name, {v: tuple(round(float(a), 3) for a in r[-1]) for v, r in scores.items()}, flush=True)
    base = np.array(scores["none"], dtype=float)
    print("| loss minimised | PESQ-WB (paired change) | STOI (paired change) |\n|---|---|---|")
    for variant, rows in scores.items():
        a = np.array(rows, dtype=float)  # None (a score undefined for a clip) is NaN, left out below
        d = a - base
        n = np.count_nonzero(~np.isnan(d[:, 0]))
        half = 1.96 * np.nanstd(d[:, 0]) / np.sqrt(max(n, 1))
        pesq = f"{np.nanmean(a[:, 0]):.3f} ({np.nanmean(d[:, 0]):+.3f} ± {half:.3f})"
        print(f"| {variant} | {pesq} | {np.nanmean(a[:, 1]):.4f} ({np.nanmean(d[:, 1]):+.4f}) |")


if __name__ == "__main__":
    main()
