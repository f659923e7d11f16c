"""Speech denoising: seeded mixtures of clean speech and noise at set SNRs, scored by PESQ-WB
and STOI against the clean speech.

For each clean file (a seeded selection of ``max_files``; each cropped or padded to ``seconds``,
keeping its loudest window) and each SNR, a noise file and an offset into it are drawn from a
generator seeded by ``(seed, file, SNR)``; the noise segment is scaled so that the mixture has
exactly that SNR (signal power over noise power, over the whole segment). When the mixture
would clip, clean and noise are scaled down together (the SNR is unchanged) and the scaled
clean speech is the reference.

Rows: the noisy input itself; uniaudio's :class:`~uniaudio_cli.tasks.denoise.Denoiser`; what
users would pick instead, ``noisereduce`` (non-stationary spectral gating) and RNNoise (the
``pyrnnoise`` wheel, which ships its weights); and "codec only", the codec's resynthesis of the
clean speech, an upper bound for any method that writes codec tokens. Every finished
mixture is appended to a resumable JSON Lines file (:mod:`uniaudio_cli.evaluate.store`); under a
distributed launcher the mixtures are split over the processes (:mod:`uniaudio_cli.evaluate.parallel`).
"""

from __future__ import annotations

import importlib
import random
import time
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from uniaudio_cli.errors import UsageError
from uniaudio_cli.evaluate.codec_eval import mean_interval, pesq_wb, stoi_score
from uniaudio_cli.evaluate.report import Column, Report, Table, run_metadata
from uniaudio_cli.evaluate.store import (
    announce_resume,
    default_results_path,
    file_fingerprint,
    relative_name,
    settings_hash,
)

if TYPE_CHECKING:
    from uniaudio_cli.codec.api import Codec
    from uniaudio_cli.evaluate.parallel import Workers
    from uniaudio_cli.llm import LoadedLLM

PEAK = 0.99
METHODS = ("noisy", "uniaudio", "noisereduce", "rnnoise", "codec")
METHOD_NAMES = {
    "noisy": "noisy input",
    "uniaudio": "uniaudio",
    "noisereduce": "noisereduce (spectral gating)",
    "rnnoise": "RNNoise (pyrnnoise)",
    "codec": "codec only (clean resynthesis, upper bound)",
}
# What users would pick instead: method -> (module, how to install it).
BASELINES = {
    "noisereduce": ("noisereduce", "pip install noisereduce"),
    "rnnoise": ("pyrnnoise", "pip install pyrnnoise"),
}


# --------------------------------------------------------------------------- mixing


def power(x: np.ndarray) -> float:
    return float(np.mean(np.asarray(x, dtype=np.float64) ** 2))


def snr_db(clean: np.ndarray, noise: np.ndarray) -> float:
    """Signal-to-noise ratio in dB of ``clean`` over ``noise`` (whole signals)."""
    return 10 * float(np.log10(power(clean) / max(power(noise), 1e-20)))


def noise_segment(noise: np.ndarray, length: int, offset: int) -> np.ndarray:
    """``length`` samples of ``noise`` from ``offset``, looping the noise when it is shorter."""
    if len(noise) >= length + offset:
        return noise[offset : offset + length]
    reps = int(np.ceil((length + offset) / len(noise)))
    return np.tile(noise, reps)[offset : offset + length]


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr: float) -> tuple[np.ndarray, np.ndarray]:
    """``(noisy, reference)``: ``noise`` (same length as ``clean``) scaled to ``snr`` dB below
    ``clean`` and added; both scaled down together if the mixture would clip."""
    clean = np.asarray(clean, dtype=np.float64)
    noise = np.asarray(noise, dtype=np.float64)
    pn = power(noise)
    if pn <= 0:
        raise UsageError("a noise segment is silent", "use noise files with audible noise throughout")
    scaled = noise * np.sqrt(power(clean) / (pn * 10 ** (snr / 10)))
    noisy = clean + scaled
    peak = float(np.abs(noisy).max())
    gain = PEAK / peak if peak > PEAK else 1.0
    return (gain * noisy).astype(np.float32), (gain * clean).astype(np.float32)


def _rng(*parts: Any) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(":".join(map(str, parts)).encode()))


@dataclass
class Mixture:
    file: str  # relative name
    snr: float
    noise: str
    offset: int
    clean: np.ndarray  # the reference (scaled with the mixture)
    noisy: np.ndarray


def load_clean(path: Path, seconds: float, sample_rate: int) -> np.ndarray:
    """A clean file cropped to (or padded to) ``seconds``, keeping its loudest window."""
    from uniaudio_cli.audio import load_audio
    from uniaudio_cli.tasks.demos import crop_or_pad

    return crop_or_pad(load_audio(path, sample_rate), round(seconds * sample_rate), "loudest")


def build_mixture(
    clean: np.ndarray, name: str, noises: Sequence[tuple[str, np.ndarray]], snr: float, seed: int
) -> Mixture:
    """The mixture of clean speech ``name`` at ``snr`` dB: noise file and offset seeded by
    ``(seed, name, snr)``, so it is the same whatever else the run holds."""
    rng = _rng("uniaudio-denoise-mix", seed, name, f"{snr:g}")
    k = int(rng.integers(len(noises)))
    noise_name, noise = noises[k]
    offset = int(rng.integers(max(len(noise) - len(clean), 0) + 1))
    noisy, ref = mix_at_snr(clean, noise_segment(noise, len(clean), offset), snr)
    return Mixture(name, snr, noise_name, offset, ref, noisy)


def select_files(files: Sequence[Path], max_files: int | None, seed: int) -> list[Path]:
    """A seeded selection of ``max_files`` of ``files`` (a prefix of one fixed shuffle, so that
    asking for more files later keeps the earlier ones)."""
    order = sorted(files)
    random.Random(f"uniaudio-denoise-files:{seed}").shuffle(order)
    return order[:max_files] if max_files is not None else order


# --------------------------------------------------------------------------- methods


def spectral_gating(noisy: np.ndarray, sample_rate: int) -> np.ndarray:
    """``noisereduce``'s non-stationary spectral gating (one process)."""
    import noisereduce

    out = noisereduce.reduce_noise(y=np.asarray(noisy, dtype=np.float32), sr=sample_rate, stationary=False, n_jobs=1)
    return np.asarray(out, dtype=np.float32)[: len(noisy)]


RNNOISE_RATE = 48000
RNNOISE_DELAY = 960  # samples at 48 kHz between input and output (measured by cross-correlation)


def rnnoise(noisy: np.ndarray, sample_rate: int) -> np.ndarray:
    """RNNoise (``pyrnnoise``'s library, 48 kHz int16 frames), resampled from and back to
    ``sample_rate`` and aligned with the input."""
    import librosa
    from pyrnnoise.rnnoise import FRAME_SIZE, create, destroy, process_mono_frame

    up = librosa.resample(np.asarray(noisy, dtype=np.float32), orig_sr=sample_rate, target_sr=RNNOISE_RATE)
    pcm = np.clip(np.round(up * 32767), -32768, 32767).astype(np.int16)
    pcm = np.pad(pcm, (0, RNNOISE_DELAY + (-(len(pcm) + RNNOISE_DELAY)) % FRAME_SIZE))
    state = create()
    try:
        out = np.concatenate(
            [process_mono_frame(state, pcm[i : i + FRAME_SIZE])[0] for i in range(0, len(pcm), FRAME_SIZE)]
        )
    finally:
        destroy(state)
    aligned = out[RNNOISE_DELAY : RNNOISE_DELAY + len(up)].astype(np.float32) / 32768
    down = librosa.resample(aligned, orig_sr=RNNOISE_RATE, target_sr=sample_rate)
    return np.pad(down, (0, max(len(noisy) - len(down), 0)))[: len(noisy)].astype(np.float32)


def _score(ref: np.ndarray, deg: np.ndarray, sr: int, seconds: float | None) -> dict[str, Any]:
    n = min(len(ref), len(deg))
    return {"pesq": pesq_wb(ref[:n], deg[:n], sr), "stoi": stoi_score(ref[:n], deg[:n], sr), "seconds": seconds}


# --------------------------------------------------------------------------- results


@dataclass
class DenoiseEvalResult:
    records: list[dict[str, Any]]  # one per (file, SNR)
    codec_records: list[dict[str, Any]]  # one per file
    snrs: list[float]
    mode: str
    results_path: str
    settings: dict[str, Any]
    seconds: float
    device: str = "cpu"
    missing: dict[str, str] = field(default_factory=dict)  # baseline -> why its row is left out
    examples: list[dict[str, Any]] = field(default_factory=list)  # audio of the first mixtures, for plots

    def values(self, method: str, metric: str, snr: float | None = None) -> list[float]:
        if method == "codec":
            return [r[metric] for r in self.codec_records if r.get(metric) is not None]
        return [
            r["metrics"][method][metric]
            for r in self.records
            if (snr is None or r["snr"] == snr)
            and method in r["metrics"]
            and r["metrics"][method].get(metric) is not None
        ]

    def to_dict(self) -> dict[str, Any]:
        summary = {
            m: {
                metric: {
                    "all": mean_interval(self.values(m, metric)).to_dict(),
                    **{f"{s:g}dB": mean_interval(self.values(m, metric, s)).to_dict() for s in self.snrs},
                }
                for metric in ("pesq", "stoi")
            }
            for m in METHODS
        }
        return {
            "settings": self.settings,
            "snrs": self.snrs,
            "mode": self.mode,
            "results_file": self.results_path,
            "wall_seconds": self.seconds,
            "summary": summary,
            "mixtures": self.records,
            "codec_only": self.codec_records,
        }

    def _name(self, m: str) -> str:
        return f"uniaudio ({self.mode} mode)" if m == "uniaudio" else METHOD_NAMES[m]

    def _metric_table(self, metric: str, label: str, fmt: str, paper: dict[str, float] | None) -> Table:
        cols = [Column("method", "Method")]
        cols += [Column(f"s{i}", f"{s:g} dB", fmt) for i, s in enumerate(self.snrs)]
        cols += [Column("all", "All", fmt), Column("ci", "95 % CI", fmt), Column("n", "n", "d")]
        rows = []
        for m in METHODS:
            if m in self.missing:
                continue
            allv = mean_interval(self.values(m, metric))
            row: dict[str, Any] = {"method": self._name(m), "all": allv.mean, "ci": allv.interval, "n": allv.n}
            for i, s in enumerate(self.snrs):
                row[f"s{i}"] = mean_interval(self.values(m, metric, s if m != "codec" else None)).mean
            rows.append(row)
        if paper and metric in paper:
            rows.append({"method": "paper: UniAudio 1.5 (VCTK + NoiseX-92, -20..20 dB)", "all": paper[metric]})
        return Table(f"{label} against the clean speech", cols, rows)

    def to_report(
        self,
        title: str = "Speech denoising",
        metadata: dict[str, Any] | None = None,
        paper: dict[str, float] | None = None,
    ) -> Report:
        """PESQ and STOI tables per method and SNR, and the processing time. ``paper`` adds
        ``{"pesq": 2.17, "stoi": 0.57}`` rows."""
        meta = metadata if metadata is not None else run_metadata(self.device, results=self.results_path)
        pesq = self._metric_table("pesq", "PESQ (wide-band)", ".2f", paper)
        stoi = self._metric_table("stoi", "STOI", ".3f", paper)
        files = len({r["file"] for r in self.records})
        audio = sum(r["audio_seconds"] for r in self.records)
        pesq.notes = [
            f"{files} clean files x {len(self.snrs)} SNRs = {len(self.records)} mixtures of "
            f"{self.settings.get('seconds'):g} s, seed {self.settings.get('seed')}; noise segments drawn from "
            f"{self.settings.get('noise')}; 95 % CI: Student t over mixtures (files for codec only).",
            "codec only does not depend on the SNR: the same value in every column.",
            f"Results file (resumable): {self.results_path}",
        ]
        for m, why in self.missing.items():
            pesq.notes.append(f"{m} row left out: {why}")
        time_rows = []
        for m in ("uniaudio", *BASELINES, "codec"):
            if m in self.missing:
                continue
            if m == "codec":
                secs = [r["seconds"] for r in self.codec_records if r.get("seconds") is not None]
                dur = sum(r["audio_seconds"] for r in self.codec_records)
            else:
                secs = [r["metrics"][m]["seconds"] for r in self.records if m in r["metrics"]]
                dur = audio
            time_rows.append(
                {
                    "method": self._name(m),
                    "clips": len(secs),
                    "total": float(sum(secs)),
                    "rtf": float(sum(secs)) / dur if dur else None,
                }
            )
        timing = Table(
            "Processing time",
            [
                Column("method", "Method"),
                Column("clips", "Clips", "d"),
                Column("total", "Wall s", ".1f"),
                Column("rtf", "RTF", ".3f"),
            ],
            time_rows,
            ["RTF = processing seconds / audio seconds (as recorded when each mixture ran)."],
        )
        return Report(title, [pesq, stoi, timing], meta, self.to_dict())


def run_settings(
    llm: LoadedLLM,
    codec: Codec,
    clean_root: Path,
    clean_files: Sequence[Path],
    noise: Path,
    seconds: float,
    seed: int,
    mode: str,
    demos: Path,
    pairs: int | None,
    repeats: int,
) -> dict[str, Any]:
    """What a results file is tied to (not the SNRs or the number of files: records are keyed by
    file and SNR)."""
    from uniaudio_cli.tasks.options import MaskSettings

    rel = sorted(relative_name(p, clean_root) for p in clean_files)
    return {
        "task": "denoise",
        "clean": str(clean_root.resolve()),
        "clean_files": settings_hash({"files": rel}),
        "noise": str(noise.resolve()),
        "noise_files": file_fingerprint(noise),
        "llm": llm.vocabulary.name,
        "codec": str(getattr(codec, "source", "")),
        "codec_files": file_fingerprint(getattr(codec, "source", None)),
        "seconds": seconds,
        "seed": seed,
        "mode": mode,
        "demos": str(demos.resolve()),
        # Remade demonstrations (prompts/make_denoise_pairs.py) must not reuse the old results.
        "demos_files": file_fingerprint(demos),
        "pairs": pairs,
        "repeats": repeats,
        # The default mode's look-up settings change every output too.
        "mask": asdict(MaskSettings()) if mode == "default" else None,
    }


def evaluate_denoising(
    llm: LoadedLLM,
    codec: Codec,
    clean: str | Path | Sequence[Path],
    noise: str | Path,
    snrs: Sequence[float] = (0.0, 5.0, 10.0),
    max_files: int | None = None,
    seconds: float = 4.0,
    mode: str = "default",
    demos: str | Path | None = None,
    pairs: int | None = None,
    repeats: int = 1,
    seed: int = 0,
    results: str | Path | None = None,
    keep_examples: int = 0,
    progress: bool = True,
    clean_root: str | Path | None = None,
    workers: Workers | None = None,
) -> DenoiseEvalResult:
    """Score uniaudio and the baselines on mixtures of ``clean`` (a folder, or files under
    ``clean_root``) with the noise files of ``noise``. ``keep_examples`` keeps the audio of the
    first mixtures (recomputed if they were read back from the results file) for plots.

    ``workers`` (default: the processes a launcher started, else one) splits the mixtures over
    processes (:mod:`uniaudio_cli.evaluate.parallel`); every process returns the whole result,
    the examples only on the main process."""
    from uniaudio_cli.audio import expand_inputs, load_audio
    from uniaudio_cli.batch import progress_bar
    from uniaudio_cli.evaluate.parallel import ShardedStore, current_workers
    from uniaudio_cli.tasks.denoise import DenoiseOptions, Denoiser, default_denoise_demos, load_pair_folder

    if seconds <= 0:
        raise UsageError("--seconds must be positive", "use --seconds 4")
    if not snrs:
        raise UsageError("no SNR given", "pass --snr 0 5 10")
    if isinstance(clean, str | Path):
        root = Path(clean)
        files = expand_inputs([str(root)])
    else:
        files = list(clean)
        root = Path(clean_root) if clean_root is not None else Path(files[0]).parent
    noise = Path(noise)
    sr = codec.sample_rate
    noises = [(relative_name(p, noise), load_audio(p, sr)) for p in expand_inputs([str(noise)])]
    demo_dir = Path(demos) if demos is not None else default_denoise_demos()
    settings = run_settings(llm, codec, root, files, noise, seconds, seed, mode, demo_dir, pairs, repeats)
    path = Path(results) if results is not None else default_results_path("denoise", settings)
    chosen = select_files(files, max_files, seed)
    todo = [(p, float(s)) for p in chosen for s in snrs]
    names = [relative_name(p, root) for p in chosen]
    file_index = {name: i for i, name in enumerate(names)}
    # Records in the order a single process writes them: each file's codec record, then its mixtures.
    keys = [k for name in names for k in (f"codec/{name}", *(f"mix/{name}/{float(s):g}" for s in snrs))]
    workers = workers if workers is not None else current_workers(str(llm.device))
    store = ShardedStore(path, settings, keys, workers)
    if not workers.is_main:
        progress, keep_examples = False, 0
    missing = {}
    for m, (module, fix) in BASELINES.items():
        try:
            importlib.import_module(module)
        except ImportError:
            missing[m] = f"{module} is not installed ({fix})"
    runners = {"noisereduce": spectral_gating, "rnnoise": rnnoise}
    den = Denoiser.from_pairs(
        llm, codec, load_pair_folder(demo_dir), DenoiseOptions(mode=mode, pairs=pairs, repeats=repeats)
    )  # type: ignore[arg-type]
    done_before = sum(f"mix/{relative_name(p, root)}/{s:g}" in store for p, s in todo)
    if progress:
        announce_resume(path, done_before, len(todo), "mixtures")
    examples: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    bar = progress_bar(progress)
    with bar:
        task = bar.add_task("denoising", total=len(todo))
        clean_cache: dict[str, np.ndarray] = {}

        def clean_of(p: Path) -> np.ndarray:
            name = relative_name(p, root)
            if name not in clean_cache:
                clean_cache.clear()  # files come in order: keep one
                clean_cache[name] = load_clean(p, seconds, sr)
            return clean_cache[name]

        for n, (p, snr) in enumerate(todo):
            name = relative_name(p, root)
            ckey = f"codec/{name}"
            if ckey not in store and workers.mine(file_index[name]):
                wav = clean_of(p)
                t0 = time.perf_counter()
                recon = codec.decode(codec.encode(wav), len(wav))
                store.add(
                    ckey,
                    {"file": name, **_score(wav, recon, sr, time.perf_counter() - t0), "audio_seconds": len(wav) / sr},
                )
            key = f"mix/{name}/{snr:g}"
            compute = key not in store and workers.mine(n)
            keep = len(examples) < keep_examples
            if compute or keep:
                bar.update(task, description=f"{Path(name).name} at {snr:g} dB")
                mix = build_mixture(clean_of(p), name, noises, snr, seed)
                t0 = time.perf_counter()
                uni = den.denoise_wav(mix.noisy)
                t_uni = time.perf_counter() - t0
                baseline: dict[str, tuple[np.ndarray, float]] = {}
                for m, run in runners.items():
                    if m not in missing:
                        t0 = time.perf_counter()
                        baseline[m] = (run(mix.noisy, sr), time.perf_counter() - t0)
                if keep:
                    examples.append(
                        {
                            "file": name,
                            "snr": snr,
                            "noise": mix.noise,
                            "sample_rate": sr,
                            "noisy": mix.noisy,
                            "uniaudio": uni,
                            **{m: out for m, (out, _) in baseline.items()},
                            "clean": mix.clean,
                        }
                    )
                if compute:
                    metrics = {
                        "noisy": _score(mix.clean, mix.noisy, sr, None),
                        "uniaudio": _score(mix.clean, uni, sr, t_uni),
                    }
                    for m, (out, secs) in baseline.items():
                        metrics[m] = _score(mix.clean, out, sr, secs)
                    store.add(
                        key,
                        {
                            "file": name,
                            "snr": snr,
                            "noise": mix.noise,
                            "offset": mix.offset,
                            "measured_snr": snr_db(mix.clean, mix.noisy - mix.clean),
                            "audio_seconds": len(mix.clean) / sr,
                            "metrics": metrics,
                        },
                    )
            bar.advance(task)
    store.finish()
    records = [store[f"mix/{relative_name(p, root)}/{snr:g}"] for p, snr in todo]
    codec_records = [store[f"codec/{name}"] for name in names]
    return DenoiseEvalResult(
        records=records,
        codec_records=codec_records,
        snrs=[float(s) for s in snrs],
        mode=mode,
        results_path=str(path),
        settings=settings,
        seconds=time.perf_counter() - t_start,
        device=str(llm.device),
        missing=missing,
        examples=examples,
    )


# --------------------------------------------------------------------------- plots


def plot_denoising(result: DenoiseEvalResult, out_dir: str | Path) -> list[Path]:
    """One PNG per kept example: log-mel spectrograms of noisy / uniaudio / baselines / clean;
    and PESQ and STOI against SNR per method. Returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from uniaudio_cli.evaluate.codec_eval import MEL_HOP, log_mel

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for k, ex in enumerate(result.examples):
        panels = [
            (lbl, ex[key])
            for key, lbl in (
                ("noisy", "noisy"),
                ("uniaudio", "uniaudio"),
                ("noisereduce", "noisereduce"),
                ("rnnoise", "RNNoise"),
                ("clean", "clean"),
            )
            if ex.get(key) is not None
        ]
        fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.0 * len(panels)), sharex=True)
        mels = [log_mel(w, ex["sample_rate"]) for _, w in panels]
        lo, hi = min(float(m.min()) for m in mels), max(float(m.max()) for m in mels)
        for ax, (label, _), mel in zip(np.atleast_1d(axes), panels, mels, strict=True):
            dur = mel.shape[1] * MEL_HOP / ex["sample_rate"]
            ax.imshow(
                mel,
                origin="lower",
                aspect="auto",
                vmin=max(lo, hi - 12),
                vmax=hi,
                cmap="magma",
                extent=(0.0, dur, 0.0, float(mel.shape[0])),
            )
            ax.set_ylabel(label, fontsize=8)
            ax.set_yticks([])
        np.atleast_1d(axes)[-1].set_xlabel("seconds")
        fig.suptitle(f"{ex['file']} + {ex['noise']} at {ex['snr']:g} dB (log-mel)", fontsize=9)
        fig.tight_layout()
        dest = out / f"denoise_example_{k + 1}.png"
        fig.savefig(dest, dpi=110)
        plt.close(fig)
        written.append(dest)
    if result.records:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
        for ax, metric in zip(axes, ("pesq", "stoi"), strict=True):
            for m in METHODS:
                if m in result.missing:
                    continue
                ys = [mean_interval(result.values(m, metric, s if m != "codec" else None)).mean for s in result.snrs]
                ax.plot(
                    result.snrs,
                    [np.nan if y is None else y for y in ys],
                    "o-" if m != "codec" else "k--",
                    label=result._name(m),
                )
            ax.set_xlabel("SNR (dB)")
            ax.set_ylabel(metric.upper())
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        dest = out / "denoise_vs_snr.png"
        fig.savefig(dest, dpi=110)
        plt.close(fig)
        written.append(dest)
    return written
