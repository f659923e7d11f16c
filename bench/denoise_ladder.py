"""The design ladder of the default denoising mode (``docs/denoise.md``), on development mixtures.

Mixtures: 12 ``speech_extra`` utterances (4 s, their loudest part) with synthetic white, pink,
brown or babble noise (``prompts/make_denoise_pairs.py``'s kinds) at 0, 5 and 10 dB; never the
held-out speech or the noise recordings of ``uniaudio eval denoise``. Demonstrations: the shipped
pairs, and for most rows 40 more made the same way from 8 other sentences. Each row describes
the frames differently and looks up their ideal ratio masks among the demonstration frames
(k nearest by cosine, softmax weights at temperature 0.05) and applies them as the shipped mode
does (floored at 0.1, gains interpolated between frames); the last row is the shipped
:class:`~uniaudio_cli.tasks.denoise.MaskDenoiser` itself.

    OMP_NUM_THREADS=1 python bench/denoise_ladder.py [--data ../shared/data] [--files 12]

Prints a markdown table of PESQ-WB / STOI per SNR (about 15 minutes on one CPU core).
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "prompts"))

import make_denoise_pairs as pairs_maker  # noqa: E402

from uniaudio_cli.api import load_models  # noqa: E402
from uniaudio_cli.audio import load_audio  # noqa: E402
from uniaudio_cli.evaluate.codec_eval import pesq_wb, stoi_score  # noqa: E402
from uniaudio_cli.evaluate.denoise_eval import load_clean, mix_at_snr  # noqa: E402
from uniaudio_cli.synth import synthesize_fixed  # noqa: E402
from uniaudio_cli.tasks.denoise import Denoiser, MaskDenoiser  # noqa: E402
from uniaudio_cli.tasks.denoise_mask import MaskEstimator, _level_above_floor, _Standardise  # noqa: E402
from uniaudio_cli.tasks.options import DenoiseOptions, default_denoise_demos, load_pair_folder  # noqa: E402

SR = 16000
SNRS = (0.0, 5.0, 10.0)
# Other sentences and voices than the shipped pairs', for the "+40 pairs" rows.
EXTRA = (
    ("Where did you put the keys?", "en-us+m3", 165),
    ("It is cold outside today.", "en-gb+f2", 160),
    ("We walked along the river.", "en-us-nyc+m6", 160),
    ("Bring me a cup of tea.", "en-gb-scotland+f5", 160),
    ("The train leaves at nine.", "en-029+m2", 160),
    ("He opened the window wide.", "en-gb-x-gbclan+f4", 160),
    ("My phone is on the table.", "en-us+f4", 165),
    ("They sang a happy song.", "en-gb+m2", 160),
)


class Frames:
    """Every description of one noisy clip's codec frames, and its ideal masks when the clean
    speech is known."""

    def __init__(self, llm, codec, estimator: MaskEstimator, noisy: np.ndarray, clean: np.ndarray) -> None:
        self.noisy, self.clean = noisy, clean
        spectra = estimator.spectra
        toks = codec.encode(noisy)
        self.feats: dict[str, np.ndarray] = {"tokens": estimator._token_features(toks)}
        n = len(self.feats["tokens"])
        with torch.no_grad():
            from uniaudio_cli.prompts import bos_ids

            lead = bos_ids(llm.tokenizer) + list(llm.tokenizer.encode("Input: <", add_special_tokens=False))
            ids = torch.tensor([lead + [t for layer in toks for t in layer]])
            hidden = llm.model(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states
        for depth in (3, 9, 24):
            self.feats[f"hidden{depth}"] = hidden[depth][0, -n:].float().numpy()
        power = spectra.band_power(spectra.stft(noisy), n)
        self.feats["levels"] = np.log(power + 1e-8)
        self.feats["above_floor"] = _level_above_floor(power)
        speech = spectra.band_power(spectra.stft(clean), n)
        noise = spectra.band_power(spectra.stft(noisy - clean), n)
        self.mask = np.sqrt(speech / (speech + noise + 1e-10))


def lookup(demos: list[Frames], query: Frames, parts: tuple[str, ...], k: int) -> np.ndarray:
    """The softmax-weighted mean mask of the k nearest demonstration frames; the first part has
    weight 1, the others 0.3 (each standardised over the demonstration frames)."""
    keys, q = [], []
    for j, part in enumerate(parts):
        std = _Standardise(np.concatenate([d.feats[part] for d in demos]))
        w = 1.0 if j == 0 else 0.3
        keys.append(w * std(np.concatenate([d.feats[part] for d in demos])))
        q.append(w * std(query.feats[part]))
    sim = np.concatenate(q, 1) @ np.concatenate(keys, 1).T
    idx = np.argsort(-sim, 1)[:, :k]
    top = np.take_along_axis(sim, idx, 1)
    w = np.exp((top - top.max(1, keepdims=True)) / 0.05)
    w /= w.sum(1, keepdims=True)
    return np.einsum("qk,qkb->qb", w, np.concatenate([d.mask for d in demos])[idx])


def dev_setup(doc: str | None) -> tuple[argparse.Namespace, list[Path]]:
    """The development scripts' arguments (``--data``, ``--files``) and their utterances: the
    first ``--files`` of ``speech_extra`` in a fixed shuffle. One thread, as their timings say."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--files", type=int, default=12)
    args = ap.parse_args()
    torch.set_num_threads(1)
    files = sorted((args.data / "speech_extra").rglob("*.flac"))
    random.Random(0).shuffle(files)
    return args, files[: args.files]


def main() -> None:
    _, files = dev_setup(__doc__)
    llm, codec = load_models(device="cpu")
    demo_pairs = load_pair_folder(default_denoise_demos())
    den = Denoiser.from_pairs(llm, codec, demo_pairs, DenoiseOptions())
    assert isinstance(den, MaskDenoiser)
    spectra = den.estimator.spectra

    def frames(noisy: np.ndarray, clean: np.ndarray) -> Frames:
        return Frames(llm, codec, den.estimator, noisy, clean)

    shipped = [frames(load_audio(p.noisy, SR), load_audio(p.clean, SR)) for p in demo_pairs]
    rng = np.random.default_rng(5)
    extra = []
    for j, (text, voice, speed) in enumerate(EXTRA):
        clean, _ = synthesize_fixed(text, 1.5, voice, speed, sample_rate=SR, margin_s=0.05)
        clean = clean * np.float32(0.5 / np.abs(clean).max())
        for k in range(5):
            kind = pairs_maker.NOISES[(j + k) % 4]
            snr = pairs_maker.SNRS_DB[(j + 2 * k) % 3]
            noisy, ref = mix_at_snr(clean, pairs_maker.make_noise(kind, len(clean), rng), snr)
            extra.append(frames(noisy, ref))
    rng = np.random.default_rng(1)
    dev: list[tuple[float, Frames]] = []
    for i, path in enumerate(files):
        clean = load_clean(path, 4.0, SR)
        for snr in SNRS:
            kind = pairs_maker.NOISES[(i + int(snr)) % 4]
            noisy, ref = mix_at_snr(clean, pairs_maker.make_noise(kind, len(clean), rng), snr)
            dev.append((snr, frames(noisy, ref)))
        print(f"mixtures: {len(dev)}", file=sys.stderr, flush=True)

    def band_mask(fn: Callable[[Frames], np.ndarray], floor: float = 0.1, power: float = 1.0):
        return lambda f: spectra.apply(f.noisy, np.maximum(fn(f), floor) ** power)

    both = shipped + extra
    rows: list[tuple[str, int | str, Callable[[Frames], np.ndarray]]] = [
        ("noisy input", "–", lambda f: f.noisy),
        ("oracle: the true ideal mask at this resolution", "–", band_mask(lambda f: f.mask)),
    ]
    for depth in (3, 9, 24):
        rows.append(
            (
                f"LLM hidden states, depth {depth}",
                64,
                band_mask(lambda f, d=depth: lookup(both, f, (f"hidden{d}",), 64)),
            )
        )
    rows += [
        ("LLM input embeddings of the codec tokens", 64, band_mask(lambda f: lookup(both, f, ("tokens",), 64))),
        ("log band levels", 16, band_mask(lambda f: lookup(both, f, ("levels",), 16))),
        ("level above the clip's noise floor", 16, band_mask(lambda f: lookup(both, f, ("above_floor",), 16))),
        (
            "level above floor + LLM hidden states, depth 24 (weight 0.3)",
            16,
            band_mask(lambda f: lookup(both, f, ("above_floor", "hidden24"), 16)),
        ),
        (
            "level above floor + LLM token embeddings (weight 0.3)",
            16,
            band_mask(lambda f: lookup(both, f, ("above_floor", "tokens"), 16)),
        ),
        ("the same, power 0.7", 16, band_mask(lambda f: lookup(both, f, ("above_floor", "tokens"), 16), power=0.7)),
        (
            "the same, shipped pairs only, power 0.8",
            16,
            band_mask(lambda f: lookup(shipped, f, ("above_floor", "tokens"), 16), power=0.8),
        ),
        ("shipped: MaskDenoiser itself (must equal the row above)", 16, lambda f: den.denoise_wav(f.noisy)),
    ]
    print("| frames described by | k | " + " | ".join(f"{s:g} dB" for s in SNRS) + " |")
    print("|---|---:|" + "---|" * len(SNRS))
    for name, k, run in rows:
        cells = []
        for snr in SNRS:
            scores = []
            for s, f in dev:
                if s == snr:
                    out = run(f)
                    scores.append((pesq_wb(f.clean, out, SR), stoi_score(f.clean, out, SR)))
            m = np.nanmean(np.array(scores, dtype=float), axis=0)
            cells.append(f"{m[0]:.3f} / {m[1]:.3f}")
        print(f"| {name} | {k} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
