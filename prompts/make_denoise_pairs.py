"""Make the shipped denoising demonstrations: clean espeak-ng sentences and noisy copies of each.

For each of four short sentences writes ``prompts/denoise_pairs/<name>/clean.flac`` (exactly
``--seconds`` long) and ``noisy_<k>.flac`` for k = 0..4 (five noisy versions, as in the paper: four
(noisy, clean) pairs serve as demonstrations, the fifth as the query). Noise is generated here:
white, pink and brown noise and babble made of other espeak-ng speech, mixed at 0, 5 or 10 dB SNR.
``metadata.csv`` lists path,label,seconds,kind,noise,snr_db,text,voice. Seeded noise plus the
installed espeak-ng make the output reproducible.

    python prompts/make_denoise_pairs.py
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

# Run as a plain script from the repository root: make the package importable without installing.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from uniaudio_cli.audio import write_audio
from uniaudio_cli.synth import synthesize, synthesize_fixed

SAMPLE_RATE = 16000
# (folder name, sentence, voice, speed): short enough to fit 1.5 s at a natural speed.
SENTENCES: tuple[tuple[str, str, str, int], ...] = (
    ("cat_mat", "The cat sat on the mat.", "en-us", 160),
    ("close_door", "Please close the door.", "en-us+f3", 160),
    ("good_book", "She reads a good book.", "en-gb+m4", 165),
    ("music_down", "Turn the music down.", "en-gb-x-rp+f1", 160),
)
# Babble talkers: other voices saying other things, so the babble never contains the target words.
BABBLE: tuple[tuple[str, str], ...] = (
    ("en-us+m3", "I think we should leave a little earlier tomorrow morning."),
    ("en-gb+f2", "The shop on the corner sells the best fresh bread in town."),
    ("en-us-nyc+m6", "Did you remember to water the plants before you went away?"),
    ("en-gb-scotland+f5", "My brother bought a new bicycle and rides it every weekend."),
    ("en-029+m2", "There was a long queue at the station because of the weather."),
    ("en-gb-x-gbclan+f4", "We could have dinner in the garden if it stays warm tonight."),
)
NOISES = ("white", "pink", "brown", "babble")
# Noise that changes over time, for four more sentences with --varying (their own seed, so the
# four above keep their files): a slowly swelling hiss (surf, wind, traffic), clicks and crackle,
# a motor's hum. Not in the shipped set: bench/denoise_kinds.py and docs/denoise.md say why.
VARYING_SENTENCES: tuple[tuple[str, str, str, int], ...] = (
    ("bus_late", "The bus is late again.", "en-gb+f2", 160),
    ("call_back", "Call me back later.", "en-us+f4", 165),
    ("green_coat", "He wore a green coat.", "en-gb+m2", 160),
    ("lights_on", "Switch the lights on.", "en-us+m3", 160),
)
VARYING_NOISES = ("swell", "crackle", "hum")
SNRS_DB = (0.0, 5.0, 10.0)
N_NOISY = 5
CLEAN_PEAK = 0.5  # leaves headroom so that even 0 dB mixtures do not clip


def unit_rms(x: np.ndarray) -> np.ndarray:
    """``x`` scaled to unit RMS, as float32 (every noise kind is made at unit RMS)."""
    return (x / np.sqrt(np.mean(x**2))).astype(np.float32)


def colored_noise(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise whose power falls as 1/f**exponent (0 white, 1 pink, 2 brown)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, d=1.0 / SAMPLE_RATE)
    # Flatten below 20 Hz so pink/brown noise does not turn into a slow DC drift.
    spec *= np.maximum(freqs, 20.0) ** (-exponent / 2.0)
    spec[0] = 0.0
    return unit_rms(np.fft.irfft(spec, n))


def babble_noise(n: int, rng: np.random.Generator, talkers: int = 4) -> np.ndarray:
    """Unit-RMS babble: ``talkers`` espeak-ng utterances, each looped from a random offset, summed."""
    out = np.zeros(n, dtype=np.float32)
    for idx in rng.choice(len(BABBLE), size=talkers, replace=False):
        voice, text = BABBLE[int(idx)]
        speech = synthesize(text, voice=voice, sample_rate=SAMPLE_RATE)
        speech = np.tile(speech, int(np.ceil(n / len(speech))) + 1)
        start = int(rng.integers(0, len(speech) - n))
        seg = speech[start : start + n]
        out += seg / np.sqrt(np.mean(seg**2) + 1e-12)
    return unit_rms(out)


def swell_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS pink noise under a random envelope of three slow swells (0.7-5 Hz), 20 dB deep."""
    t = np.arange(n) / SAMPLE_RATE
    env = np.ones(n)
    for _ in range(3):
        env += rng.uniform(0.3, 0.7) * np.sin(2 * np.pi * rng.uniform(0.7, 5.0) * t + rng.uniform(0, 2 * np.pi))
    return unit_rms(colored_noise(n, 1.0, rng) * np.maximum(env, 0.1))


def crackle_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS clicks and crackle: decaying bursts (0.3-4 ms) at random times, 15-120 per
    second, of log-normal loudness, over a brown floor 20 dB below."""
    out = 0.1 * colored_noise(n, 2.0, rng)
    width = int(0.02 * SAMPLE_RATE)
    for start in rng.integers(0, n, size=rng.poisson(rng.uniform(15, 120) * n / SAMPLE_RATE)):
        tau = rng.uniform(0.0003, 0.004) * SAMPLE_RATE
        m = min(width, n - int(start))
        burst = rng.standard_normal(m) * np.exp(-np.arange(m) / tau)
        out[start : start + m] += rng.lognormal(0.0, 0.7) * burst
    return unit_rms(out)


def hum_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS motor hum: a buzz at 60-240 Hz wavering by 2 % with its harmonics up to 4 kHz
    (amplitudes 1/k), plus white noise 15 dB below."""
    t = np.arange(n) / SAMPLE_RATE
    f0 = rng.uniform(60.0, 240.0) * (1 + 0.02 * np.sin(2 * np.pi * rng.uniform(0.5, 6.0) * t))
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    buzz = sum(np.sin(k * phase + rng.uniform(0, 2 * np.pi)) / k for k in range(1, int(4000 / f0.max()) + 1))
    return unit_rms(unit_rms(buzz) + 0.18 * colored_noise(n, 0.0, rng))


def make_noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise of the named kind (``NOISES`` or ``VARYING_NOISES``)."""
    varying = {"swell": swell_noise, "crackle": crackle_noise, "hum": hum_noise}
    if kind == "babble":
        return babble_noise(n, rng)
    if kind in varying:
        return varying[kind](n, rng)
    return colored_noise(n, {"white": 0.0, "pink": 1.0, "brown": 2.0}[kind], rng)


def speech_power(clean: np.ndarray) -> float:
    """Mean power between the first and last non-zero sample, so the zero padding does not count."""
    nz = np.flatnonzero(np.abs(clean) > 1e-4)
    return float(np.mean(clean[nz[0] : nz[-1] + 1] ** 2))


def make_denoise_pairs(out_dir: Path, seconds: float = 1.5, seed: int = 0, varying: bool = False) -> Path:
    """Write clean/noisy demonstration sets into ``out_dir``; return the metadata path.

    ``varying``: also the four sentences in time-varying noise (``VARYING_SENTENCES``)."""
    groups = [(SENTENCES, NOISES, seed)]
    if varying:
        groups.append((VARYING_SENTENCES, VARYING_NOISES, seed + 1))
    rows: list[dict[str, object]] = []
    for sentences, kinds, group_seed in groups:
        rng = np.random.default_rng(group_seed)
        for j, (name, text, voice, speed) in enumerate(sentences):
            clean, _ = synthesize_fixed(text, seconds, voice, speed, sample_rate=SAMPLE_RATE, margin_s=0.05)
            clean = clean * np.float32(CLEAN_PEAK / float(np.abs(clean).max()))
            n = len(clean)
            write_audio(out_dir / name / "clean.flac", clean, SAMPLE_RATE, force=True)
            common = {"label": name, "seconds": round(n / SAMPLE_RATE, 3), "text": text, "voice": voice}
            rows.append({"path": f"{name}/clean.flac", "kind": "clean", "noise": "", "snr_db": "", **common})
            p_speech = speech_power(clean)
            for k in range(N_NOISY):
                # Rotate noise kinds and SNRs so every sentence gets a different mix of conditions.
                kind = kinds[(j + k) % len(kinds)]
                snr = SNRS_DB[(j + 2 * k) % len(SNRS_DB)]
                noise = make_noise(kind, n, rng) * np.float32(np.sqrt(p_speech / 10 ** (snr / 10)))
                noisy = clean + noise
                peak = float(np.abs(noisy).max())
                if peak > 0.99:
                    # Rare with CLEAN_PEAK headroom; scaling beats clipping, and SNR is unaffected.
                    noisy *= np.float32(0.99 / peak)
                write_audio(out_dir / name / f"noisy_{k}.flac", noisy, SAMPLE_RATE, force=True)
                rows.append({"path": f"{name}/noisy_{k}.flac", "kind": "noisy", "noise": kind, "snr_db": snr, **common})
    meta = out_dir / "metadata.csv"
    fields = ("path", "label", "seconds", "kind", "noise", "snr_db", "text", "voice")
    with meta.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return meta


def main() -> None:
    """Parse arguments, write the files, print a summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "denoise_pairs")
    parser.add_argument("--seconds", type=float, default=1.5, help="length of every clip (default 1.5)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    parser.add_argument(
        "--varying",
        action="store_true",
        help="also four sentences in time-varying noise (measured in bench/denoise_kinds.py; not shipped)",
    )
    args = parser.parse_args()
    meta = make_denoise_pairs(args.out, args.seconds, args.seed, args.varying)
    size = sum(p.stat().st_size for p in args.out.rglob("*.flac"))
    n = (len(SENTENCES) + len(VARYING_SENTENCES) * args.varying) * (1 + N_NOISY)
    print(f"wrote {n} clips of {args.seconds:g} s ({size / 1024:.0f} KiB) and {meta}")


if __name__ == "__main__":
    main()
