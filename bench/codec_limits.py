"""Where a codec loses fidelity: its decoder fed the codes, fed the encoder's unquantized latent,
and its code output through training-free post-filters that deepen the valleys between
harmonics (the noise there is what PESQ punishes most).

    OMP_NUM_THREADS=1 python bench/codec_limits.py [DIR] [--codec PATH] [--clips 24]

DIR defaults to the held-out LibriSpeech excerpts (``python bench/heldout.py``). Prints a
Markdown table of PESQ-WB, STOI and mel distance, the means over the clips.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from uniaudio_cli.audio import load_audio
from uniaudio_cli.codec.api import load_codec
from uniaudio_cli.evaluate.codec_eval import mel_distance, pesq_wb, stoi_score

ROOT = Path(__file__).resolve().parents[1]


def sharpen(wav: np.ndarray, beta: float, smooth_bins: int | None, n_fft: int = 1024, hop: int = 256) -> np.ndarray:
    """Scale the log-magnitude's deviation from its envelope (a moving average over
    ``smooth_bins`` frequency bins; ``None``: the whole log-magnitude, a power law) by ``beta``,
    keeping each frame's energy and the phase. ``(T,)`` -> ``(T,)``."""
    x = torch.from_numpy(wav).float()
    window = torch.hann_window(n_fft)
    spec = torch.stft(x, n_fft, hop, window=window, return_complex=True)
    mag = spec.abs().clamp_min(1e-7)
    log = mag.log()
    if smooth_bins is None:
        new = beta * log
    else:
        kernel = torch.ones(1, 1, smooth_bins) / smooth_bins
        env = torch.nn.functional.conv1d(log.T.unsqueeze(1), kernel, padding=smooth_bins // 2).squeeze(1).T
        new = env + beta * (log - env)
    out = new.exp()
    out = out * (mag.pow(2).sum(0, keepdim=True) / out.pow(2).sum(0, keepdim=True)).sqrt()
    return torch.istft(out * spec / mag, n_fft, hop, window=window, length=len(wav)).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", type=Path, nargs="?", default=ROOT / ".data" / "heldout" / "speech" / "librispeech")
    ap.add_argument("--codec", default=None)
    ap.add_argument("--clips", type=int, default=24, help="every k-th file, to N clips")
    args = ap.parse_args()
    torch.set_num_threads(1)
    files = sorted(args.dir.rglob("*.flac"))
    files = files[:: max(1, len(files) // args.clips)][: args.clips]
    codec = load_codec(args.codec)
    model = codec.model.eval()
    sr = codec.sample_rate
    rows: dict[str, list[tuple[float | None, float | None, float]]] = {}

    def score(name: str, ref: np.ndarray, out: np.ndarray) -> None:
        n = min(len(ref), len(out))
        rows.setdefault(name, []).append(
            (pesq_wb(ref[:n], out[:n], sr), stoi_score(ref[:n], out[:n], sr), mel_distance(ref[:n], out[:n], sr))
        )

    with torch.no_grad():
        for f in files:
            wav = load_audio(f, sr)
            z = model.encoder(model.preprocess(torch.from_numpy(wav)[None, None]))
            from_codes = model.decoder(model.quantizer(z).z_q).squeeze().numpy()
            score("decoder(codes), as shipped", wav, from_codes)
            score("decoder(unquantized latent)", wav, model.decoder(z).squeeze().numpy())
            for beta in (1.3, 1.6):
                score(f"codes, harmonic valleys x{beta} (9-bin envelope)", wav, sharpen(from_codes, beta, 9))
            for beta in (1.1, 1.2):
                score(f"codes, magnitude ** {beta}", wav, sharpen(from_codes, beta, None))
    print(f"{len(files)} clips from {args.dir}, codec {args.codec or 'default'}\n")
    print("| decoded from | PESQ-WB | STOI | mel distance |\n|---|---|---|---|")
    for name, vals in rows.items():
        p = np.mean([v[0] for v in vals if v[0] is not None])
        s = np.mean([v[1] for v in vals if v[1] is not None])
        m = np.mean([v[2] for v in vals])
        print(f"| {name} | {p:.3f} | {s:.3f} | {m:.3f} |")


if __name__ == "__main__":
    main()
