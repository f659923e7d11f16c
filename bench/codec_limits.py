"""Where a codec loses fidelity: its decoder fed the codes, fed the encoder's unquantized latent,
fed the codes with their quantization error shrunk (everywhere, or in one loudness third of the
frames: what a better quantizer could buy, and where),
its code output through training-free post-filters that deepen the valleys between harmonics,
its code output with one part of the input's STFT magnitude put in (oracles: which part of
the spectrum costs the most), its code output with the phase of a harmonic oscillator at the
input's pitch (what a decoder that knew the pitch could gain, and how fast that gain falls with the
pitch's error), then how periodic the output stays (pYIN voicing and F0 against the input's).

    OMP_NUM_THREADS=1 python bench/codec_limits.py [DIR] [--codec PATH] [--clips 24]

DIR defaults to the held-out LibriSpeech excerpts (``python bench/heldout.py``). Prints a
Markdown table of PESQ-WB, STOI and mel distance, the means over the clips, and a pitch line.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from uniaudio_cli.audio import load_audio
from uniaudio_cli.codec.api import load_codec
from uniaudio_cli.codec.small import spectral_envelope
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


def oracles(ref: np.ndarray, out: np.ndarray, n_fft: int = 512, hop: int = 128) -> dict[str, np.ndarray]:
    """``out`` with one part of ``ref``'s STFT magnitude put in, ``out``'s phase kept."""
    window = torch.hann_window(n_fft)

    def stft(x: np.ndarray) -> torch.Tensor:
        return torch.stft(torch.from_numpy(x).float(), n_fft, hop, window=window, return_complex=True)

    R, Y = stft(ref), stft(out)
    phase = Y / Y.abs().clamp_min(1e-9)
    freqs = torch.linspace(0, 8000, n_fft // 2 + 1)
    lr, ly = R.abs().clamp_min(1e-7).log(), Y.abs().clamp_min(1e-7).log()

    def envelope(logmag: torch.Tensor, k: int = 9) -> torch.Tensor:
        return spectral_envelope(logmag.unsqueeze(0), k).squeeze(0)

    def put(band: torch.Tensor, logmag: torch.Tensor) -> np.ndarray:
        Z = Y.clone()
        Z[band] = logmag[band].exp() * phase[band]
        return torch.istft(Z, n_fft, hop, window=window, length=len(out)).numpy()

    energy = (R.abs() ** 2).sum(0)
    level_db = 10 * torch.log10(energy / energy.max() + 1e-12)
    # Recordings with a noise floor close under the speech (FSDD's held-out speaker: 19 dB) lose
    # most in their quiet frames: the floor and the weak sounds near it.
    quiet_frames: dict[str, np.ndarray] = {}
    for below in (30, 15, 10):
        Z = Y.clone()
        quiet = level_db < -below
        Z[:, quiet] = R[:, quiet]
        name = f"oracle: the input in frames {below} dB below the loudest"
        quiet_frames[name] = torch.istft(Z, n_fft, hop, window=window, length=len(out)).numpy()
    low = freqs < 1000
    er, ey = envelope(lr), envelope(ly)
    return {
        **quiet_frames,
        "oracle: the input's magnitude above 4 kHz": put(freqs >= 4000, lr),
        "oracle: the input's magnitude 1-4 kHz": put((freqs >= 1000) & (freqs < 4000), lr),
        "oracle: the input's magnitude below 1 kHz": put(low, lr),
        "oracle, below 1 kHz: the input's envelope, the output's fine structure": put(low, er + (ly - ey)),
        "oracle, below 1 kHz: the output's envelope, the input's fine structure": put(low, ey + (lr - er)),
    }


def harmonic_phase(
    out: np.ndarray, f0: np.ndarray, voiced: np.ndarray, cents: float, below_hz: float = 4000.0, seed: int = 0
) -> np.ndarray:
    """``out`` with, in voiced frames below ``below_hz``, the phase of a harmonic oscillator at
    ``f0`` (Hz at 100 frames/s) put off by a smooth random error of ``cents`` standard deviation."""
    from uniaudio_cli.codec.small import harmonic_excitation

    rng = np.random.default_rng(seed)
    drift = np.convolve(rng.standard_normal(len(f0)), np.ones(10) / np.sqrt(10), "same") * cents / 1200
    f = torch.from_numpy(np.nan_to_num(f0) * 2**drift).float()[None]
    v = torch.from_numpy(voiced.astype(np.float32))[None]
    excitation = harmonic_excitation(f, v, 160, 16000)[0][0, : len(out)].numpy()
    n_fft, hop = 512, 128
    window = torch.hann_window(n_fft)

    def stft(x: np.ndarray) -> torch.Tensor:
        return torch.stft(torch.from_numpy(x).float(), n_fft, hop, window=window, return_complex=True)

    Y, E = stft(out), stft(np.pad(excitation, (0, len(out) - len(excitation))))
    frames = torch.from_numpy(np.interp(np.arange(Y.shape[1]) * hop / 160, np.arange(len(voiced)), voiced) > 0.5)
    band = (torch.linspace(0, 8000, n_fft // 2 + 1) < below_hz)[:, None] & frames[None, :]
    Z = Y.clone()
    Z[band] = Y.abs()[band] * (E / E.abs().clamp_min(1e-9))[band]
    return torch.istft(Z, n_fft, hop, window=window, length=len(out)).numpy()


def pitch_errors(ref: np.ndarray, out: np.ndarray) -> tuple[np.ndarray, float]:
    """pYIN on both: ``(|F0 error| in cents where both are voiced, share of the input's voiced
    frames the output loses)``."""
    import librosa

    kw = {"fmin": 60, "fmax": 400, "sr": 16000, "frame_length": 1024, "hop_length": 160}
    f0r, vr, _ = librosa.pyin(ref, **kw)
    f0o, vo, _ = librosa.pyin(out, **kw)
    both = vr & vo
    return 1200 * np.abs(np.log2(f0o[both] / f0r[both])), float((vr & ~vo).sum() / max(vr.sum(), 1))


def frame_levels(wav: np.ndarray, frames: int, hop: int) -> np.ndarray:
    """Level in dB of each of ``frames`` latent frames of ``hop`` samples (zero-padded)."""
    x = np.zeros(frames * hop)
    n = min(len(wav), len(x))
    x[:n] = wav[:n]
    return 10 * np.log10(np.mean(x.reshape(frames, hop) ** 2, axis=1) + 1e-10)


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
    pitch: list[tuple[np.ndarray, float]] = []

    def score(name: str, ref: np.ndarray, out: np.ndarray) -> None:
        n = min(len(ref), len(out))
        rows.setdefault(name, []).append(
            (pesq_wb(ref[:n], out[:n], sr), stoi_score(ref[:n], out[:n], sr), mel_distance(ref[:n], out[:n], sr))
        )

    with torch.no_grad():
        for f in files:
            wav = load_audio(f, sr)
            z = model.encoder(model.preprocess(torch.from_numpy(wav)[None, None]))
            z_q = model.quantizer(z).z_q
            from_codes = model.decoder(z_q).squeeze().numpy()
            score("decoder(codes), as shipped", wav, from_codes)
            score("decoder(unquantized latent)", wav, model.decoder(z).squeeze().numpy())
            # What a better quantizer could buy: the codes' error shrunk everywhere, or halved in
            # one loudness third of the frames only.
            err = z - z_q
            for keep in (0.75, 0.5):
                out = model.decoder(z - keep * err).squeeze().numpy()
                score(f"oracle: the quantization error shrunk to {keep:.0%}", wav, out)
            level = frame_levels(wav, err.shape[-1], codec.model.cfg.hop_length)
            cuts = np.percentile(level, [33.3, 66.7])
            for name, sel in (
                ("quietest", level <= cuts[0]),
                ("middle", (level > cuts[0]) & (level <= cuts[1])),
                ("loudest", level > cuts[1]),
            ):
                scale = torch.from_numpy(np.where(sel, 0.5, 1.0)).float()
                out = model.decoder(z - err * scale).squeeze().numpy()
                score(f"oracle: the quantization error halved in the {name} third of frames", wav, out)
            for beta in (1.3, 1.6):
                score(f"codes, harmonic valleys x{beta} (9-bin envelope)", wav, sharpen(from_codes, beta, 9))
            for beta in (1.1, 1.2):
                score(f"codes, magnitude ** {beta}", wav, sharpen(from_codes, beta, None))
            n = min(len(wav), len(from_codes))
            for name, out in oracles(wav[:n], from_codes[:n]).items():
                score(name, wav[:n], out)
            import librosa

            f0, voiced, _ = librosa.pyin(wav[:n], fmin=60, fmax=400, sr=16000, frame_length=1024, hop_length=160)
            for err in (0, 30, 60):
                score(
                    f"oracle: the phase of harmonics at the input's pitch (±{err} cents) below 4 kHz",
                    wav[:n],
                    harmonic_phase(from_codes[:n], f0, voiced, err),
                )
            cents, lost = pitch_errors(wav[:n], from_codes[:n])
            pitch.append((cents, lost))
    print(f"{len(files)} clips from {args.dir}, codec {args.codec or 'default'}\n")
    print("| decoded from | PESQ-WB | STOI | mel distance |\n|---|---|---|---|")
    for name, vals in rows.items():
        p = np.mean([v[0] for v in vals if v[0] is not None])
        s = np.mean([v[1] for v in vals if v[1] is not None])
        m = np.mean([v[2] for v in vals])
        print(f"| {name} | {p:.3f} | {s:.3f} | {m:.3f} |")
    cents = np.concatenate([c for c, _ in pitch])
    print(
        f"\npYIN, decoded from the codes: {np.mean([v for _, v in pitch]) * 100:.0f} % of the input's voiced frames "
        f"unvoiced; where both are voiced, |F0 error| median {np.median(cents):.0f} cents, "
        f"{np.mean(cents > 50) * 100:.0f} % of frames over 50 cents"
    )


if __name__ == "__main__":
    main()
