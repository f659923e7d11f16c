"""The codec training loop, with crash-safe checkpoints and exact resume.

``out_dir`` of a run holds:

* ``codec/``: the inference checkpoint (:func:`uniaudio_cli.codec.checkpoint.save_codec`);
* ``codec-best/``: the same for the lowest validation mel loss so far (when validating);
* ``train_state.safetensors``: everything needed to resume (model, auxiliary head,
  discriminator, both optimizers, RNG states) as tensors, with the scalar state as JSON in the
  file's metadata, so one atomic rename commits a checkpoint;
* ``train_state.json``: a readable copy of that scalar state;
* ``metrics.jsonl``: one line per logging interval and per validation.

Every file and folder is written under a temporary name and renamed into place, so a process
killed at any moment leaves the previous checkpoint or the new one, never a torn one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from uniaudio_cli.codec.checkpoint import save_codec, trainable_state_dict
from uniaudio_cli.codec.config import CodecConfig
from uniaudio_cli.codec.model import LLMCodec
from uniaudio_cli.codec.small import HarmonicISTFTHead
from uniaudio_cli.errors import CheckpointError, UniaudioError, UsageError
from uniaudio_cli.paths import save_tensors
from uniaudio_cli.train import STATE_FILE
from uniaudio_cli.train.data import SegmentDataset, default_exclude
from uniaudio_cli.train.discriminators import CombinedDiscriminator, MultiResolutionDiscriminator
from uniaudio_cli.train.latents import LatentDataset, check_pack_matches
from uniaudio_cli.train.losses import (
    ConsistencyHead,
    FrameLogMel,
    IntelligibilityLoss,
    PerceptualQualityLoss,
    PhaseLoss,
    SpectralLoss,
    consistency_loss,
    feature_matching_loss,
    hinge_d_loss,
    hinge_g_loss,
    l1_time,
    semantic_loss,
)
from uniaudio_cli.train.pitch import pitch_loss

if TYPE_CHECKING:
    from uniaudio_cli.llm import Vocabulary

log = logging.getLogger(__name__)

STATE_FORMAT = "uniaudio-train-state"
STATE_VERSION = 1
STATE_JSON = "train_state.json"
CODEC_DIR = "codec"
BEST_DIR = "codec-best"
METRICS_FILE = "metrics.jsonl"

# Fields a resumed run takes from the new TrainConfig; all others come from the checkpoint so
# that the optimisation continues unchanged.
RUNTIME_FIELDS = (
    "steps",
    "device",
    "bf16",
    "num_threads",
    "checkpoint_every",
    "log_every",
    "time_limit_s",
    "stop_at",
)

# Fields a resumed run changes only when asked (``changes``): a new loss weight or learning-rate
# schedule for the rest of the run. Any other field asked for must match the checkpoint's.
RECIPE_FIELDS = (
    "lr",
    "disc_lr_scale",
    "lr_schedule",
    "lr_final_ratio",
    "w_time",
    "w_stft",
    "w_mel",
    "w_commit",
    "w_semantic",
    "w_consistency",
    "w_phase",
    "w_low_band",
    "w_excess",
    "w_stoi",
    "w_pesq",
    "w_pitch",
)


class TrainingInterrupted(UniaudioError):
    """SIGINT/SIGTERM stopped training after a checkpoint was written."""

    exit_code = 130


class TrainingDiverged(UniaudioError):
    """Losses or gradients stayed non-finite."""


@dataclass
class TrainConfig:
    """Hyperparameters of a codec training run.

    Loss weights (``w_*``) multiply: time-domain L1, STFT (log-magnitude L1 + spectral
    convergence, each averaged over resolutions), multi-resolution log-mel L1 (averaged over
    resolutions), the quantizer commitment loss, the layer-1 semantic loss, the layer-1+2
    consistency loss, ``w_low_band`` times the log-magnitude L1 below ``low_band_hz`` (0 leaves it
    out; see :class:`~uniaudio_cli.train.losses.SpectralLoss`), ``w_excess`` times the
    log-magnitude excess over the target (``SpectralLoss``'s ``excess``; 0 leaves it out), the
    anti-wrapped phase loss
    (:class:`~uniaudio_cli.train.losses.PhaseLoss`; 0 leaves it out), ``w_stoi`` times one minus a
    differentiable STOI (:class:`~uniaudio_cli.train.losses.IntelligibilityLoss`; 0 leaves it
    out), ``w_pesq`` times an estimate of what PESQ's raw score loses
    (:class:`~uniaudio_cli.train.losses.PerceptualQualityLoss`; 0 leaves it out), and, from
    ``gan_start_step`` on, the hinge adversarial and feature-matching losses. The discriminators
    are spectrogram ones (``disc_channels`` wide), and with ``disc_periods`` also HiFi-GAN's
    waveform period discriminators, which judge periodicity. They train at ``disc_lr_scale``
    times the learning rate: discriminators that start fresh beside a trained decoder (a GAN
    phase from ``init_from``) must catch up while the decoder is only fine-tuned.

    ``segment_seconds`` is rounded to a whole number of the codec's ``pad_multiple`` (2.0 s ->
    2.04 s for the default codec) so no step computes padding. ``lr`` warms up linearly over
    ``warmup_steps``, then decays (``exponential`` or ``cosine``) to ``lr * lr_final_ratio`` at
    ``steps``. ``bf16`` ``None`` means autocast to bfloat16 on CUDA and on CPUs with native bf16
    (AMX / AVX512-BF16), where it is 2-3x faster; float32 elsewhere. ``time_limit_s`` ends the run
    (with a checkpoint) after that much wall time, ``stop_at`` at that step (the learning-rate
    schedule still spans ``steps``). ``init_from`` (a codec checkpoint folder)
    starts a new run from those weights instead of a random initialisation (see
    :func:`warm_start`); the optimizer and step count start fresh. ``decoder_only`` freezes the
    encoder and the quantizer's projections, so every code the codec writes stays what the
    starting weights wrote (and everything downstream of the codes, such as few-shot
    classification, is unchanged) while the decoder learns; the commitment, semantic and
    consistency losses, which only move the frozen side, are then skipped. ``latents`` (a folder
    :func:`uniaudio_cli.train.latents.pack_latents` wrote) trains the decoder alone from packed
    (latent, waveform) pairs instead of audio folders, so neither the encoder nor the LLM's
    codebooks are run (for a machine that has neither the data nor the LLM); it implies
    ``decoder_only`` and no random gain. ``noise_floor`` is the probability that a training
    segment gets a stationary noise floor ``noise_snr_db`` below its level, input and target alike
    (see :class:`~uniaudio_cli.train.data.SegmentDataset`); validation stays clean.
    ``speed_perturb`` is the probability that a training segment is played 0.9-1.1 times as fast
    (:data:`~uniaudio_cli.train.data.SPEED_FACTORS`), input and target alike, ``band_limit``
    the probability that it is band-limited as an 8 kHz recording is, ``channel_eq`` that it
    passes through a random smooth equaliser, and ``reverb`` that it is heard in a random room. With a
    harmonic decoder head (``small_harmonic``) the
    head's pitch track learns from ``w_pitch`` times :func:`uniaudio_cli.train.pitch.pitch_loss`,
    and its new layers (pitch and mix) train at ``harmonic_lr_scale`` times the learning rate, so a
    head grown on a trained decoder catches up with it; the mix stays frozen for the first
    ``harmonic_warmup_steps`` while the pitch track is learned. The quantizer's nearest-code
    search ranks against a codebook projection refreshed every ``search_max_age`` steps (the
    chosen rows are always projected with the current weights, so gradients are exact);
    projecting the 49k-row tables every step took a third of a CPU step. 1 refreshes every step.
    """

    steps: int = 5000
    batch_size: int = 16
    segment_seconds: float = 2.0
    lr: float = 2e-4
    betas: tuple[float, float] = (0.8, 0.99)
    weight_decay: float = 0.01
    lr_schedule: Literal["exponential", "cosine", "constant"] = "exponential"
    lr_final_ratio: float = 0.1
    warmup_steps: int = 100
    grad_clip: float = 1000.0
    disc_grad_clip: float = 10.0
    w_time: float = 1.0
    w_stft: float = 1.0
    w_mel: float = 15.0
    w_commit: float = 1.0
    w_semantic: float = 1.0
    w_consistency: float = 1.0
    w_phase: float = 0.0
    w_low_band: float = 0.0
    w_excess: float = 0.0
    w_stoi: float = 0.0
    w_pesq: float = 0.0
    low_band_hz: float = 1000.0
    w_pitch: float = 1.0
    harmonic_lr_scale: float = 10.0
    harmonic_warmup_steps: int = 1000
    search_max_age: int = 8
    w_adv: float = 1.0
    w_feat: float = 2.0
    gan: bool = True
    gan_start_step: int = 1000
    disc_channels: int = 16
    disc_periods: tuple[int, ...] = ()
    disc_lr_scale: float = 1.0
    gain_db: tuple[float, float] = (-12.0, 3.0)
    noise_floor: float = 0.0
    noise_snr_db: tuple[float, float] = (10.0, 40.0)
    speed_perturb: float = 0.0
    band_limit: float = 0.0
    channel_eq: float = 0.0
    reverb: float = 0.0
    n_words: int = 3000
    val_segments: int = 16
    checkpoint_every: int = 500
    log_every: int = 25
    seed: int = 0
    device: str | None = None
    bf16: bool | None = None
    num_threads: int | None = None
    time_limit_s: float | None = None
    stop_at: int | None = None
    init_from: str | None = None
    decoder_only: bool = False
    latents: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        cfg = cls(**{k: v for k, v in data.items() if k in known})
        cfg.betas = (float(cfg.betas[0]), float(cfg.betas[1]))
        cfg.gain_db = (float(cfg.gain_db[0]), float(cfg.gain_db[1]))
        cfg.noise_snr_db = (float(cfg.noise_snr_db[0]), float(cfg.noise_snr_db[1]))
        cfg.disc_periods = tuple(int(p) for p in cfg.disc_periods)
        return cfg


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Learning rate for (0-based) ``step``."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    span = max(cfg.steps - cfg.warmup_steps, 1)
    p = min(max((step - cfg.warmup_steps) / span, 0.0), 1.0)
    if cfg.lr_schedule == "exponential":
        return cfg.lr * cfg.lr_final_ratio**p
    if cfg.lr_schedule == "cosine":
        return cfg.lr * (cfg.lr_final_ratio + (1 - cfg.lr_final_ratio) * 0.5 * (1 + math.cos(math.pi * p)))
    raise UsageError(f"unknown lr_schedule {cfg.lr_schedule!r}", "use exponential, cosine or constant")


def segment_samples(cfg: TrainConfig, codec_cfg: CodecConfig) -> int:
    """``segment_seconds`` rounded to a positive multiple of the codec's ``pad_multiple``."""
    m = codec_cfg.pad_multiple
    return max(1, round(cfg.segment_seconds * codec_cfg.sample_rate / m)) * m


def native_bf16(device: torch.device) -> bool:
    """Whether bfloat16 matmuls are fast on ``device``."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"amx_bf16", "avx512_bf16"})
    except OSError:
        pass
    return False


def text_embeddings(texts: Iterable[str], vocab: Vocabulary) -> torch.Tensor:
    """Mean frozen input embedding of each text's tokens, ``(N, E)`` float32.

    A leading space makes the first word tokenize as a word-start token, like the whole-word
    tokens of the layer-1 codebook; special and whitespace-only tokens are dropped.
    """
    special = set(vocab.special_ids)
    to_tokens = getattr(vocab.tokenizer, "convert_ids_to_tokens", None)
    rows = []
    for text in texts:
        ids = [int(i) for i in vocab.tokenizer.encode(" " + text, add_special_tokens=False)]
        ids = [i for i in ids if i not in special and 0 <= i < vocab.embeddings.shape[0]]
        if to_tokens is not None:
            toks = to_tokens(ids)
            ids = [i for i, t in zip(ids, toks, strict=True) if t and t.strip("Ġ▁ \n")] or ids
        if not ids:
            raise UsageError(f"target text {text!r} has no tokens in {vocab.name}", "use another label")
        rows.append(vocab.embeddings[torch.tensor(ids)].float().mean(dim=0))
    return torch.stack(rows)


def _fsync_replace(tmp: Path, dst: Path) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, dst)


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    _fsync_replace(tmp, path)


def _flatten_optimizer(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer state as flat tensors (``prefix.state.<param>.<name>``) plus a JSON part."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for idx, st in sd["state"].items():
        for name, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{prefix}.state.{idx}.{name}"] = v.detach().cpu().contiguous().clone()
            else:
                scalars[f"{idx}.{name}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(
    opt: torch.optim.Optimizer, prefix: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    state: dict[int, dict[str, Any]] = {}
    head = f"{prefix}.state."
    for key, v in tensors.items():
        if key.startswith(head):
            idx, name = key[len(head) :].split(".", 1)
            state.setdefault(int(idx), {})[name] = v
    for key, v in meta["scalars"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = v
    groups = meta["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": state, "param_groups": groups})


def _clean_stale(out_dir: Path) -> None:
    """Remove temporaries of a killed run; put back a checkpoint folder a kill left renamed."""
    import shutil

    if not out_dir.is_dir():
        return
    for name in (CODEC_DIR, BEST_DIR):
        target = out_dir / name
        olds = sorted(out_dir.glob(f".{name}.old-*"), key=lambda p: p.stat().st_mtime)
        if not target.exists() and olds:
            # save_codec moves the old folder aside before moving the new one in.
            os.replace(olds.pop(), target)
        for p in [*olds, *out_dir.glob(f".{name}.*")]:
            if p.exists():
                shutil.rmtree(p, ignore_errors=True)
    for p in out_dir.glob(".train_state.*.tmp-*"):
        p.unlink(missing_ok=True)


class _RunLock:
    """An exclusive lock on ``out_dir/.lock`` so two runs never write one folder."""

    def __init__(self, out_dir: Path) -> None:
        self._file = None
        try:
            import fcntl
        except ImportError:  # not POSIX: no locking
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        f = open(out_dir / ".lock", "w")  # noqa: SIM115 (held for the run's lifetime)
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            f.close()
            raise UsageError(
                f"{out_dir}: another training run is using this folder", "stop it first, or choose another --out"
            ) from e
        self._file = f

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_train_state(out_dir: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
    """``(scalar state, tensors)`` of the checkpoint in ``out_dir``, or ``None`` when it has none."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(out_dir) / STATE_FILE
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
        state = json.loads(meta["train_state"])
    except (SafetensorError, OSError, ValueError, KeyError) as e:
        raise CheckpointError(
            f"{path}: unreadable training state ({e})", "delete the run folder and start again"
        ) from e
    if state.get("format") != STATE_FORMAT or state.get("version") != STATE_VERSION:
        raise CheckpointError(
            f"{path}: training state of another format/version ({state.get('format')} {state.get('version')})",
            "resume it with the uniaudio version that wrote it, or start a new run",
        )
    return state, tensors


def saved_train_config(out_dir: str | Path) -> TrainConfig | None:
    """The :class:`TrainConfig` of the run in ``out_dir`` (``None`` without one), read cheaply.

    For a CLI that resumes with the run's own ``steps``/``device`` unless told otherwise.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(out_dir) / STATE_FILE
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            state = json.loads((f.metadata() or {})["train_state"])
    except (SafetensorError, OSError, ValueError, KeyError) as e:
        raise CheckpointError(
            f"{path}: unreadable training state ({e})", "delete the run folder and start again"
        ) from e
    return TrainConfig.from_dict(state["train_config"])


class Trainer:
    """Trains one :class:`LLMCodec` whose codebooks are already installed.

    Args:
        model: the codec (codebooks set).
        data: training segments; its ``texts`` index ``text_table``. With ``cfg.latents``, a
            :class:`~uniaudio_cli.train.latents.LatentDataset`, whose batches carry latents.
        text_table: ``(N_texts, E)`` semantic target embeddings (see :func:`text_embeddings`);
            ``None`` with ``cfg.latents``.
        out_dir: run folder (see the module docstring).
        cfg: hyperparameters.
        progress: show a rich progress bar (else log every ``log_every`` steps).
    """

    def __init__(
        self,
        model: LLMCodec,
        data: SegmentDataset | LatentDataset,
        text_table: torch.Tensor | None,
        out_dir: str | Path,
        cfg: TrainConfig,
        progress: bool = True,
    ) -> None:
        from uniaudio_cli.runtime import resolve_device

        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.progress = progress
        self.device = resolve_device(cfg.device)
        self.lock: _RunLock | None = None
        if self.device.type == "cpu":
            # Denormal activations (a GAN discriminator produces them after a few steps) make
            # x86 float maths 10x slower; flushing them to zero changes nothing that matters.
            torch.set_flush_denormal(True)
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
            torch.set_num_threads(cfg.num_threads or cores)
        elif self.device.type == "cuda":
            # Every step has the same shapes, so cuDNN's autotuned kernels pay off at once.
            torch.backends.cudnn.benchmark = True
            # TF32 matmuls for the float32 (--no-bf16) path: 10-bit mantissas are plenty for training.
            torch.backends.cuda.matmul.allow_tf32 = True
        use_bf16 = native_bf16(self.device) if cfg.bf16 is None else cfg.bf16
        self.autocast_dtype = torch.bfloat16 if use_bf16 else None
        codec_cfg = model.cfg
        sr = codec_cfg.sample_rate

        self.model = model.to(self.device).train()
        self.data = data
        self.from_latents = cfg.latents is not None
        self.text_table = text_table.to(self.device, torch.float32) if text_table is not None else None
        self.aux = ConsistencyHead(codec_cfg.latent_dim, 80).to(self.device)
        n_fft = 1 << max(codec_cfg.hop_length * 2 - 1, 1).bit_length()
        self.frame_mel = FrameLogMel(sr, codec_cfg.hop_length, n_fft, 80).to(self.device)
        self.spectral = SpectralLoss(sr, low_band_hz=cfg.low_band_hz if cfg.w_low_band > 0 else None).to(self.device)
        self.phase = PhaseLoss().to(self.device) if cfg.w_phase > 0 else None
        self.stoi = IntelligibilityLoss(sr).to(self.device) if cfg.w_stoi > 0 else None
        self.quality = PerceptualQualityLoss(sr).to(self.device) if cfg.w_pesq > 0 else None
        self.pitch_hop = codec_cfg.small_stft_hop
        self.disc = (
            (
                CombinedDiscriminator(cfg.disc_periods, cfg.disc_channels, sr)
                if cfg.disc_periods
                else MultiResolutionDiscriminator(channels=cfg.disc_channels, sample_rate=sr)
            ).to(self.device)
            if cfg.gan
            else None
        )
        if cfg.decoder_only:
            self.model.encoder.requires_grad_(False)
            self.model.quantizer.requires_grad_(False)
            self.g_params = [p for p in self.model.decoder.parameters() if p.requires_grad]
        else:
            self.g_params = [p for p in self.model.parameters() if p.requires_grad] + list(self.aux.parameters())
        adamw = {"lr": cfg.lr, "betas": cfg.betas, "weight_decay": cfg.weight_decay}
        head = getattr(self.model.decoder, "head", None)
        pitch_ids = mix_ids = set()
        if isinstance(head, HarmonicISTFTHead):
            pitch_ids = {id(p) for p in head.pitch_proj.parameters()}
            mix_ids = {id(p) for p in head.mix.parameters()}
        groups = [
            {"params": [p for p in self.g_params if id(p) not in pitch_ids | mix_ids], "lr_scale": 1.0},
            {"params": [p for p in self.g_params if id(p) in pitch_ids], "lr_scale": cfg.harmonic_lr_scale},
            {"params": [p for p in self.g_params if id(p) in mix_ids], "lr_scale": cfg.harmonic_lr_scale, "mix": True},
        ]
        self.opt_g = torch.optim.AdamW([g for g in groups if g["params"]], **adamw)
        self.opt_d = torch.optim.AdamW(self.disc.parameters(), **adamw) if self.disc is not None else None

        self._init_consistency_bias()
        self.rng = np.random.default_rng(cfg.seed)
        self.step = 0
        self.best_val = math.inf
        self.elapsed_s = 0.0
        self._bad_steps = 0
        self._stop_signal: int | None = None
        self.val: tuple[torch.Tensor, torch.Tensor] | None = None
        if cfg.val_segments > 0:
            wav, tid = data.split_validation(cfg.val_segments)
            self.val = (wav.to(self.device), tid.to(self.device))

    @torch.no_grad()
    def _init_consistency_bias(self) -> None:
        # Log-mel targets sit around -5 with a zero-initialised head; at lr 2e-4 Adam would need
        # ~10^4 steps just to move the bias there, so start it at the data's mean per band.
        wav, _ = self.data.sample_batch(np.random.default_rng(self.cfg.seed + 1), self.cfg.batch_size)
        target = self.frame_mel(self.model.preprocess(wav.to(self.device)))
        self.aux.proj.bias.copy_(target.mean(dim=(0, 2)))

    # ------------------------------------------------------------------ state

    def _autocast(self) -> Any:
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def state_tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Everything needed to resume: ``(tensors, JSON-able scalars)``."""
        tensors = {f"model.{k}": v for k, v in trainable_state_dict(self.model).items()}
        tensors.update({f"aux.{k}": v.detach().cpu().contiguous() for k, v in self.aux.state_dict().items()})
        opt_meta: dict[str, Any] = {}
        t, opt_meta["opt_g"] = _flatten_optimizer(self.opt_g, "opt_g")
        tensors.update(t)
        if self.disc is not None and self.opt_d is not None:
            tensors.update({f"disc.{k}": v.detach().cpu().contiguous() for k, v in self.disc.state_dict().items()})
            t, opt_meta["opt_d"] = _flatten_optimizer(self.opt_d, "opt_d")
            tensors.update(t)
        for i, q in enumerate(self.model.quantizer.quantizers):
            if q.search_snapshot is not None:
                for name, t in q.search_snapshot.items():
                    tensors[f"search.{i}.{name}"] = t.detach().cpu().contiguous()
        tensors["rng.torch"] = torch.get_rng_state()
        if self.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        state = {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "step": self.step,
            "best_val_mel": None if math.isinf(self.best_val) else self.best_val,
            "elapsed_s": self.elapsed_s,
            "train_config": self.cfg.to_dict(),
            "codec_config": self.model.cfg.to_dict(),
            "numpy_rng": self.rng.bit_generator.state,
            "optimizers": opt_meta,
        }
        if isinstance(self.data, SegmentDataset):
            state["data"] = self.data.fingerprint()
        return tensors, state

    def load_state(self, state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        """Restore a checkpoint read by :func:`read_train_state`."""
        model_sd = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
        missing, unexpected = self.model.load_state_dict(model_sd, strict=False)
        missing = [k for k in missing if not k.endswith("codebook.weight")]
        if missing or unexpected:
            raise CheckpointError(
                f"{self.out_dir / STATE_FILE}: model weights do not match (missing {missing[:3]}, "
                f"unexpected {unexpected[:3]})",
                "the run folder was written by another codec configuration; start a new run",
            )
        self.aux.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("aux.")})
        _unflatten_optimizer(self.opt_g, "opt_g", tensors, state["optimizers"]["opt_g"])
        if self.disc is not None and self.opt_d is not None:
            self.disc.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("disc.")})
            _unflatten_optimizer(self.opt_d, "opt_d", tensors, state["optimizers"]["opt_d"])
        for i, q in enumerate(self.model.quantizer.quantizers):
            prefix = f"search.{i}."
            snap = {k[len(prefix) :]: v.to(self.device) for k, v in tensors.items() if k.startswith(prefix)}
            if snap:
                q.freeze_search(snap)
        torch.set_rng_state(tensors["rng.torch"])
        if "rng.cuda" in tensors and self.device.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
        self.rng.bit_generator.state = state["numpy_rng"]
        self.step = int(state["step"])
        best = state.get("best_val_mel")
        self.best_val = math.inf if best is None else float(best)
        self.elapsed_s = float(state.get("elapsed_s", 0.0))

    def save_checkpoint(self) -> None:
        """Write ``codec/``, maybe ``codec-best/``, and the training state, each atomically."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        val = self.validate()
        save_codec(self.model, self.out_dir / CODEC_DIR)
        if val is not None:
            self._write_metrics({"step": self.step, "val_mel": val})
            if val < self.best_val:
                self.best_val = val
                save_codec(self.model, self.out_dir / BEST_DIR)
        tensors, state = self.state_tensors()
        tmp = self.out_dir / f".{STATE_FILE}.tmp-{os.getpid()}"
        save_tensors(tensors, tmp, metadata={"format": STATE_FORMAT, "train_state": json.dumps(state)})
        _fsync_replace(tmp, self.out_dir / STATE_FILE)
        # Readable mirror only: resume reads the copy inside the safetensors file.
        _write_json_atomic(self.out_dir / STATE_JSON, state)
        log.info("checkpoint at step %d written to %s", self.step, self.out_dir)

    @torch.no_grad()
    def validate(self) -> float | None:
        """Multi-resolution log-mel L1 on the fixed validation segments (``None`` without them)."""
        if self.val is None:
            return None
        wav, extra = self.val
        self.model.eval()
        size = max(self.cfg.batch_size, 1)
        try:
            total = 0.0
            for chunk, more in zip(wav.split(size), extra.split(size), strict=True):
                with self._autocast():
                    if self.from_latents:
                        audio = self.model.decoder(more)[..., : chunk.shape[-1]]
                    else:
                        audio = self.model(chunk).audio
                total += float(self.spectral(audio.float(), chunk).mel) * chunk.shape[0]
        finally:
            self.model.train()
        return total / wav.shape[0]

    def _write_metrics(self, row: dict[str, Any]) -> None:
        with open(self.out_dir / METRICS_FILE, "a") as f:
            f.write(json.dumps(row) + "\n")

    # ------------------------------------------------------------------ training

    def _decode(self, z_q: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """Decoder pass ``(B, D, T') -> (B, 1, T)``, with the harmonic head's pitch prediction
        (pitch-bin logits ``(B, frames, bins)``, voicing logit ``(B, frames)``) when it has one."""
        decoder = self.model.decoder
        head = getattr(decoder, "head", None)
        if isinstance(head, HarmonicISTFTHead):
            h = decoder.features(z_q)
            pitch = head.pitch(h)
            return head.synthesize(h, pitch=pitch)[0], pitch
        return decoder(z_q), None

    def train_step(self) -> dict[str, torch.Tensor]:
        """One optimisation step; returns detached scalar losses."""
        cfg = self.cfg
        lr = lr_at(cfg, self.step)
        wav, extra = self.data.sample_batch(self.rng, cfg.batch_size)
        wav = wav.to(self.device, non_blocking=True)
        B = wav.shape[0]

        if cfg.decoder_only:
            model = self.model
            if self.from_latents:
                z_q = extra.to(self.device, non_blocking=True)
            else:
                with torch.no_grad(), self._autocast():
                    z_q = model.quantizer(model.encoder(model.preprocess(wav))).z_q
            with self._autocast():
                y, pitch = self._decode(z_q)
            y = y[..., : wav.shape[-1]].float()
            cons = sem = commit = y.new_zeros(())
        else:
            if cfg.search_max_age > 1 and self.step % cfg.search_max_age == 0:
                for q in self.model.quantizer.quantizers:
                    q.freeze_search()
            with self._autocast():
                quant = self.model.quantizer(self.model.encoder(self.model.preprocess(wav)))
                y, pitch = self._decode(quant.z_q)
            y = y[..., : wav.shape[-1]].float()
            with torch.no_grad():
                target_mel = self.frame_mel(self.model.preprocess(wav))
            assert self.text_table is not None, "full training needs the semantic text table"
            text_emb = self.text_table[extra.to(self.device)]
            cons = consistency_loss((quant.layers[0] + quant.layers[1]).float(), target_mel, self.aux)
            sem = semantic_loss(quant.pooled[0].float(), text_emb, self.model.quantizer.quantizers[0].cb_proj)
            commit = quant.commitment.float()
        spec = self.spectral(y, wav)
        l1 = l1_time(y, wav)
        phase = self.phase(y, wav) if self.phase is not None else y.new_zeros(())
        stoi = self.stoi(y, wav) if self.stoi is not None else y.new_zeros(())
        quality = self.quality(y, wav) if self.quality is not None else y.new_zeros(())
        f0_loss = (
            pitch_loss(*pitch, wav, self.model.sample_rate, self.pitch_hop) if pitch is not None else y.new_zeros(())
        )
        loss = (
            cfg.w_phase * phase
            + cfg.w_pitch * f0_loss
            + cfg.w_time * l1
            + cfg.w_stft * (spec.stft_mag + spec.stft_sc)
            + cfg.w_low_band * spec.low_mag
            + cfg.w_excess * spec.excess
            + cfg.w_stoi * stoi
            + cfg.w_pesq * quality
            + cfg.w_mel * spec.mel
            + cfg.w_commit * commit
            + cfg.w_semantic * sem
            + cfg.w_consistency * cons
        )
        metrics = {
            "l1": l1,
            "stft_mag": spec.stft_mag,
            "stft_sc": spec.stft_sc,
            "mel": spec.mel,
            "commit": commit,
            "semantic": sem,
            "consistency": cons,
        }
        if self.phase is not None:
            metrics["phase"] = phase
        if cfg.w_low_band > 0:
            metrics["low_mag"] = spec.low_mag
        if cfg.w_excess > 0:
            metrics["excess"] = spec.excess
        if self.stoi is not None:
            metrics["stoi"] = stoi
        if self.quality is not None:
            metrics["pesq_loss"] = quality
        if pitch is not None:
            metrics["pitch"] = f0_loss

        if self.disc is not None and self.opt_d is not None and self.step >= cfg.gan_start_step:
            for g in self.opt_d.param_groups:
                g["lr"] = lr * cfg.disc_lr_scale
            with self._autocast():
                logits, _ = self.disc(torch.cat([wav, y.detach()]))
            d_loss = hinge_d_loss([lg[:B].float() for lg in logits], [lg[B:].float() for lg in logits])
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            d_norm = torch.nn.utils.clip_grad_norm_(self.disc.parameters(), cfg.disc_grad_clip)
            if torch.isfinite(d_norm):
                self.opt_d.step()
            # The generator's pass needs gradients w.r.t. its input only, not the D weights.
            self.disc.requires_grad_(False)
            try:
                with self._autocast():
                    logits, feats = self.disc(torch.cat([wav, y]))
                adv = hinge_g_loss([lg[B:].float() for lg in logits])
                fm = feature_matching_loss(
                    [[f[:B].float() for f in fs] for fs in feats], [[f[B:].float() for f in fs] for fs in feats]
                )
                loss = loss + cfg.w_adv * adv + cfg.w_feat * fm
                metrics.update(adv=adv, feat=fm, d_loss=d_loss)
                self.opt_g.zero_grad(set_to_none=True)
                loss.backward()
            finally:
                self.disc.requires_grad_(True)
        else:
            self.opt_g.zero_grad(set_to_none=True)
            loss.backward()

        for g in self.opt_g.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)
            if g.get("mix") and self.step < cfg.harmonic_warmup_steps:
                # Until the pitch track is learned the oscillator only hurts, and a mix trained on
                # it would learn to shut it off for good.
                g["lr"] = 0.0
        norm = torch.nn.utils.clip_grad_norm_(self.g_params, cfg.grad_clip)
        if torch.isfinite(norm) and torch.isfinite(loss):
            self.opt_g.step()
            self._bad_steps = 0
        else:
            self._bad_steps += 1
            log.warning("step %d: non-finite loss or gradient, update skipped", self.step)
            if self._bad_steps >= 20:
                raise TrainingDiverged(
                    f"training diverged at step {self.step}: 20 non-finite steps in a row",
                    "resume from the last checkpoint with a lower lr, or set bf16 off",
                )
        metrics["loss"] = loss
        metrics["grad_norm"] = norm
        self.step += 1
        return {k: v.detach() for k, v in metrics.items()}

    @contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGINT/SIGTERM ask the loop to checkpoint and stop; a second one acts at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous: dict[int, Any] = {}

        def handler(signum: int, frame: Any) -> None:
            self._stop_signal = signum
            signal.signal(signum, previous.get(signum, signal.SIG_DFL))

        for s in (signal.SIGINT, signal.SIGTERM):
            previous[s] = signal.getsignal(s)
            signal.signal(s, handler)
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def train(self) -> Path:
        """Train up to ``cfg.steps``; returns ``out_dir/codec``.

        Raises :class:`TrainingInterrupted` (after checkpointing) on SIGINT/SIGTERM.
        """
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.out_dir.mkdir(parents=True, exist_ok=True)
        progress = Progress(
            TextColumn("[bold]train-codec"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[losses]}"),
            disable=not self.progress,
        )
        try:
            stopped = self._loop(progress)
        finally:
            if self.lock is not None:
                self.lock.release()
        if stopped is not None:
            raise TrainingInterrupted(
                f"training stopped by {signal.Signals(stopped).name} at step {self.step}; "
                f"checkpoint saved in {self.out_dir}",
                "run the same command with --resume to continue",
            )
        return self.out_dir / CODEC_DIR

    def _loop(self, progress: Any) -> int | None:
        """The step loop; returns the signal that stopped it, if any."""
        cfg = self.cfg
        sums: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}
        run_start = time.perf_counter()
        window_start, window_step = run_start, self.step
        elapsed_before = self.elapsed_s
        stopped = None
        with self._signals(), progress:
            task = progress.add_task("train", total=cfg.steps, completed=self.step, rate="", losses="")
            # A run resumed at or past --stop-at takes no step (re-running a segment is a no-op).
            while self.step < cfg.steps and (cfg.stop_at is None or self.step < cfg.stop_at):
                metrics = self.train_step()
                for k, v in metrics.items():
                    sums[k] = sums[k] + v if k in sums else v
                    counts[k] = counts.get(k, 0) + 1
                self.elapsed_s = elapsed_before + time.perf_counter() - run_start
                progress.update(task, completed=self.step)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    now = time.perf_counter()
                    rate = (self.step - window_step) / max(now - window_start, 1e-9)
                    window_start, window_step = now, self.step
                    row = {k: float(v) / counts[k] for k, v in sums.items()}
                    sums, counts = {}, {}
                    self._write_metrics(
                        {
                            "step": self.step,
                            "lr": lr_at(cfg, self.step - 1),
                            "steps_per_s": rate,
                            "elapsed_s": self.elapsed_s,
                            **row,
                        }
                    )
                    shown = " ".join(f"{k} {row[k]:.3f}" for k in ("mel", "semantic", "consistency", "adv") if k in row)
                    progress.update(task, rate=f"{rate:.2f} step/s", losses=shown)
                    if not self.progress:
                        log.info("step %d/%d %.2f step/s %s", self.step, cfg.steps, rate, shown)
                if self._stop_signal is not None:
                    stopped = self._stop_signal
                    break
                if cfg.stop_at is not None and self.step >= cfg.stop_at:
                    log.info("stopped at step %d (--stop-at)", self.step)
                    break
                if cfg.time_limit_s is not None and time.perf_counter() - run_start >= cfg.time_limit_s:
                    log.info("time limit of %.0f s reached at step %d", cfg.time_limit_s, self.step)
                    break
                if self.step % cfg.checkpoint_every == 0 and self.step < cfg.steps:
                    self.save_checkpoint()
            self.save_checkpoint()
        return stopped


def warm_start(model: LLMCodec, state_dict: dict[str, torch.Tensor], source: str) -> list[str]:
    """Copy every weight of ``state_dict`` whose name and shape match into ``model``.

    For continuing from committed weights when the full training state is gone, and for
    growing a trained model (e.g. more decoder blocks: a new ConvNeXt block starts close to
    the identity, so the grown model starts close to the trained one). Returns the names of
    the model's weights that were *not* in ``state_dict`` (left at their initialisation).

    Raises:
        CheckpointError: a weight has the right name but another shape, or nothing matched.
    """
    own = {k: v for k, v in model.state_dict().items() if not k.endswith("codebook.weight")}
    wrong = [
        f"{k} {tuple(v.shape)} != {tuple(own[k].shape)}"
        for k, v in state_dict.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    if wrong:
        raise CheckpointError(
            f"{source}: weights do not fit this codec configuration ({'; '.join(wrong[:3])})",
            "start from a checkpoint of the same sizes, or change only the number of layers",
        )
    matched = {k: v for k, v in state_dict.items() if k in own}
    if not matched:
        raise CheckpointError(f"{source}: no weight matches this codec", "pass a checkpoint of the same backbone")
    model.load_state_dict(matched, strict=False)
    return sorted(k for k in own if k not in matched)


def default_codec_config(spec: Any, base: CodecConfig | None = None) -> CodecConfig:
    """``base`` (default: the small backbone) with codebook sizes and dims taken from ``spec``."""
    base = base or CodecConfig()
    return dataclasses.replace(
        base,
        codebook_sizes=[len(spec.layer1_token_ids), spec.vocab_size, spec.vocab_size],
        codebook_dims=[spec.embedding_dim] * 3,
        vocab=spec,
    )


def build_trainer(
    data_dirs: list[Path],
    out_dir: Path,
    cfg: TrainConfig | None = None,
    codec_cfg: CodecConfig | None = None,
    resume: bool = False,
    llm: str | None = None,
    progress: bool = True,
    vocab: Vocabulary | None = None,
    changes: Mapping[str, Any] | None = None,
) -> Trainer:
    """Everything :func:`train_codec` does short of training (see there)."""
    from uniaudio_cli.bridge import build_vocab_spec, codebook_tables

    cfg = cfg or TrainConfig()
    out_dir = Path(out_dir)
    lock = _RunLock(out_dir)
    try:
        _clean_stale(out_dir)
        saved = read_train_state(out_dir)
        if saved is not None and not resume:
            raise UsageError(
                f"{out_dir}: holds a training run (step {saved[0]['step']})",
                "pass --resume to continue it, or choose another --out folder",
            )
        if resume and saved is None:
            log.info("%s has no checkpoint yet; starting a new run", out_dir)
        if saved is not None:
            # The run's own settings, then what this invocation changes: the checks below are of
            # the run as it will go on (a resumed --latents run need not be told --decoder-only).
            merged = saved[0]["train_config"] | {k: getattr(cfg, k) for k in RUNTIME_FIELDS}
            merged |= _recipe_changes(out_dir, TrainConfig.from_dict(merged), changes or {})
            cfg = TrainConfig.from_dict(merged)
        if cfg.latents is not None and not cfg.decoder_only:
            raise UsageError("--latents trains the decoder alone", "add --decoder-only")
        for augmentation in ("noise_floor", "speed_perturb", "band_limit", "channel_eq", "reverb"):
            if cfg.latents is not None and getattr(cfg, augmentation) > 0.0:
                flag = "--" + augmentation.replace("_", "-")
                raise UsageError(f"{flag} changes training audio, and --latents reads none", f"drop {flag}")
        if cfg.decoder_only and cfg.init_from is None and saved is None:
            raise UsageError(
                "--decoder-only freezes the encoder, which then needs trained weights",
                "pass --init-from CODEC_FOLDER with it",
            )
        init_sd: dict[str, torch.Tensor] | None = None
        if saved is not None:
            codec_cfg = CodecConfig.from_dict(saved[0]["codec_config"], source=str(out_dir / STATE_FILE))
        elif cfg.init_from is not None:
            from uniaudio_cli.codec.checkpoint import load_codec_weights

            init_cfg, init_sd = load_codec_weights(cfg.init_from)
            codec_cfg = init_cfg if codec_cfg is None else codec_cfg
            if cfg.decoder_only and codec_cfg.small_encoder_layers != init_cfg.small_encoder_layers:
                raise UsageError(
                    f"--decoder-only keeps {cfg.init_from}'s codes, and a grown encoder would change them",
                    "drop --encoder-layers, or train the whole codec (no --decoder-only)",
                )
            if codec_cfg.vocab is None:
                codec_cfg = dataclasses.replace(codec_cfg, vocab=init_cfg.vocab)

        # Packed latents replace the encoder and the codebooks: then no LLM is loaded, and the
        # codebook tables stay zero (never used).
        if cfg.latents is None:
            if vocab is None:
                from uniaudio_cli.llm import load_vocabulary

                vocab = load_vocabulary(llm)
            if codec_cfg is None or codec_cfg.vocab is None:
                codec_cfg = default_codec_config(build_vocab_spec(vocab, cfg.n_words), codec_cfg)
        assert codec_cfg is not None
        if codec_cfg.small_contrast != 1.0:
            # The post-filter is for listening: the losses must see what the decoder predicts.
            log.info("training without the post-filter (small_contrast %s -> 1.0)", codec_cfg.small_contrast)
            codec_cfg = dataclasses.replace(codec_cfg, small_contrast=1.0, small_contrast_smooth=0)
        torch.manual_seed(cfg.seed)
        model = LLMCodec(codec_cfg)
        if cfg.latents is None:
            assert vocab is not None
            model.set_codebooks(*codebook_tables(codec_cfg.vocab, vocab, source=str(out_dir)))
        if init_sd is not None:
            new = warm_start(model, {k: v.float() for k, v in init_sd.items()}, str(cfg.init_from))
            log.info("initialised from %s (%d weights new: %s)", cfg.init_from, len(new), ", ".join(new[:4]))
        if cfg.latents is not None and saved is None:
            check_pack_matches(cfg.latents, model)  # before the shards are read
        data: SegmentDataset | LatentDataset
        text_table: torch.Tensor | None
        if cfg.latents is not None:
            data = LatentDataset(cfg.latents, segment_samples(cfg, codec_cfg) // codec_cfg.hop_length)
            text_table = None
        else:
            data = SegmentDataset(
                data_dirs,
                segment_samples(cfg, codec_cfg),
                codec_cfg.sample_rate,
                default_exclude,
                cfg.gain_db,
                cfg.seed,
                cfg.noise_floor,
                cfg.noise_snr_db,
                cfg.speed_perturb,
                cfg.band_limit,
                cfg.channel_eq,
                cfg.reverb,
            )
            if saved is not None:
                _check_same_data(out_dir, saved[0].get("data"), data.fingerprint())
            assert vocab is not None
            text_table = text_embeddings(data.texts, vocab)
        trainer = Trainer(model, data, text_table, out_dir, cfg, progress)
        if saved is not None:
            trainer.load_state(*saved)
            log.info("resumed %s at step %d", out_dir, trainer.step)
            if cfg.latents is not None:
                check_pack_matches(cfg.latents, model)
    except BaseException:
        lock.release()
        raise
    trainer.lock = lock
    return trainer


def _check_same_data(out_dir: Path, recorded: dict[str, Any] | None, found: dict[str, Any]) -> None:
    """Refuse to resume a run on other data than it trained on: its seeded batches, and the
    figures measured on it, would silently stop meaning what they say. Folders that moved but
    hold the same clips pass; a state written before the data was recorded passes with a warning."""
    if recorded is None:
        log.warning("%s: the run did not record its data folders; resuming on %s", out_dir, ", ".join(found["dirs"]))
        return
    if (recorded["clips"], recorded["samples"]) == (found["clips"], found["samples"]):
        if recorded["dirs"] != found["dirs"]:
            log.info("%s: the data folders moved (%s); same clips", out_dir, ", ".join(found["dirs"]))
        return
    hours = 3600.0 * found["sample_rate"]
    raise UsageError(
        f"{out_dir}: the run trained on {recorded['clips']} clips ({recorded['samples'] / hours:.2f} h) "
        f"from {', '.join(recorded['dirs'])}, but --data gives {found['clips']} clips "
        f"({found['samples'] / hours:.2f} h) from {', '.join(found['dirs'])}",
        "resume with the run's --data folders, or start a new run from its weights with --init-from",
    )


def _recipe_changes(out_dir: Path, saved: TrainConfig, changes: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of ``changes`` that differ from the resumed run's ``saved`` config, each logged;
    raises for one outside :data:`RECIPE_FIELDS` (runtime fields are not compared)."""
    changed = {}
    for key, value in changes.items():
        if key in RUNTIME_FIELDS:
            continue
        if not hasattr(saved, key):
            raise UsageError(f"unknown training setting {key!r}", "see uniaudio train-codec --help")
        before = getattr(saved, key)
        # JSON round trip: tuples and lists, ints and floats compare as the state file holds them.
        if json.loads(json.dumps(value)) == json.loads(json.dumps(before)):
            continue
        if key not in RECIPE_FIELDS:
            raise UsageError(
                f"{out_dir}: {key} {value!r} differs from the resumed run's {before!r}",
                f"a resumed run keeps it (only {', '.join(RECIPE_FIELDS)} may change): drop the option, "
                "or start a new run from its weights with --init-from",
            )
        log.warning("%s: resuming with %s %r (the run had %r)", out_dir, key, value, before)
        changed[key] = value
    return changed


def train_codec(
    data_dirs: list[Path],
    out_dir: Path,
    cfg: TrainConfig | None = None,
    codec_cfg: CodecConfig | None = None,
    resume: bool = False,
    llm: str | None = None,
    progress: bool = True,
    vocab: Vocabulary | None = None,
    changes: Mapping[str, Any] | None = None,
) -> Path:
    """Train an LLM-Codec on audio folders; returns ``out_dir/codec`` (the inference checkpoint).

    Args:
        data_dirs: training folders (see :mod:`uniaudio_cli.train.data`); held-out clips are
            excluded by :func:`uniaudio_cli.train.data.default_exclude`.
        out_dir: run folder; checkpoints every ``cfg.checkpoint_every`` steps and at the end.
        cfg: hyperparameters (default :class:`TrainConfig`). When resuming, only its runtime
            fields (``steps`` = the total to reach, ``device``, ``bf16``, ``num_threads``,
            ``checkpoint_every``, ``log_every``, ``time_limit_s``) are taken; the rest come from
            the checkpoint, unless ``changes`` names them.
        codec_cfg: codec sizes (default: the small backbone). Without a ``vocab`` spec, its
            codebook sizes/dims and spec are derived from the LLM. Ignored when resuming.
        resume: continue the run in ``out_dir`` (starts a new one if it has no checkpoint).
        changes: when resuming, the settings asked for by name (a CLI's explicit options). Loss
            weights and the learning-rate schedule (:data:`RECIPE_FIELDS`) that differ from the
            run's are taken for the rest of it, each logged; any other that differs raises.
        llm: the LLM whose vocabulary gives the codebooks (``None``: the embedded default).
        progress: show a progress bar.
        vocab: an already-loaded vocabulary (skips loading ``llm``; used by tests).

    Raises:
        UsageError: ``out_dir`` already holds a run and ``resume`` is False, bad data folders, or
            a resume whose folders hold other clips than the run recorded.
        TrainingInterrupted: SIGINT/SIGTERM (a checkpoint was written first).
    """
    trainer = build_trainer(data_dirs, out_dir, cfg, codec_cfg, resume, llm, progress, vocab, changes)
    return trainer.train()
