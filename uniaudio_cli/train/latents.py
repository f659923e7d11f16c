"""Decoder training from packed latents, for a machine that has neither the data nor the LLM.

A rented GPU machine receives the repository and a few tens of MiB beside it, not the training
audio (hundreds of MiB) nor the LLM whose embedding rows are the codebooks. Training the decoder
alone needs neither: only pairs of (quantized latent, waveform), which the frozen encoder and
quantizer make once, here. So:

1. ``python -m uniaudio_cli.train.latents pack --codec CODEC --data DIR... --out PACK`` encodes the
   training clips (held-out rules applied) and writes them as shards of at most ``--shard-mib``
   (``shard-000.safetensors``...), plus ``val.safetensors`` (fixed validation segments of clips
   kept out of the shards) and ``pack.json``. A shard holds ``starts`` (the first frame of each
   clip) and, compressed with the standard library's LZMA so that twice as much audio travels,
   the frames as int8 with a float16 scale per frame (``latents_q`` ``(N, D)``, ``latent_scale``
   ``(N,)``; 0.6 % mean error, far below what the decoder resolves) and the waveform as int16
   first differences (``audio`` ``(N * hop,)``, lossless): about 29 KB per second of audio.
2. ``uniaudio train-codec --latents PACK --init-from CODEC --decoder-only ...`` trains the decoder
   on them (:class:`LatentDataset`); the encoder and codebooks are never run.
3. ``python -m uniaudio_cli.train.latents export-decoder RUN/codec-best decoder.safetensors``
   keeps the decoder's weights alone, in float16 (small enough to come back from the machine);
   ``merge-decoder`` puts them into a full checkpoint again.

Everything is safetensors (no pickle), and the pack records the ``codes_sha256`` of the codec
that wrote it, which the trainer checks against its ``--init-from`` weights.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import lzma
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from uniaudio_cli.errors import CheckpointError, UsageError, run_tool
from uniaudio_cli.paths import save_tensors

if TYPE_CHECKING:
    from uniaudio_cli.codec.model import LLMCodec

log = logging.getLogger(__name__)

PACK_FILE = "pack.json"
VAL_FILE = "val.safetensors"
PACK_FORMAT = "uniaudio-latent-pack"
PACK_VERSION = 2
DECODER_FORMAT = "uniaudio-codec-decoder"


class LatentDataset:
    """Packed (latent, waveform) pairs served as random aligned segments.

    Args:
        pack_dir: a folder :func:`pack_latents` wrote.
        segment_frames: latent frames per segment (``T' = T / hop``).
    """

    def __init__(self, pack_dir: str | Path, segment_frames: int) -> None:
        from safetensors.torch import load_file

        self.root = Path(pack_dir)
        meta = read_pack_meta(self.root)
        self.meta = meta
        self.hop = int(meta["hop"])
        self.latent_dim = int(meta["latent_dim"])
        self.segment_frames = int(segment_frames)
        shards = sorted(self.root.glob("shard-*.safetensors"))
        if not shards:
            raise UsageError(f"{self.root}: no shard-*.safetensors", "run the pack step again, or carry the shards")
        latents, audio, starts, offset = [], [], [], 0
        for path in shards:
            t = load_file(str(path))
            lat, wav = _unpack_shard(t, self.latent_dim)
            n = lat.shape[0]
            if wav.shape[0] != n * self.hop:
                raise CheckpointError(f"{path}: shapes do not match {PACK_FILE}", "pack the data again")
            latents.append(lat)
            audio.append(wav)
            starts.append(t["starts"].long() + offset)
            offset += n
        #: ``(N, D)`` float16 frames of every clip, back to back.
        self.latents = torch.cat(latents)
        #: ``(N * hop,)`` int16 samples.
        self.audio = torch.cat(audio)
        bounds = torch.cat([torch.cat(starts), torch.tensor([offset])])
        lengths = (bounds[1:] - bounds[:-1]).numpy()
        usable = lengths >= self.segment_frames
        if not usable.any():
            raise UsageError(f"{self.root}: no clip is {segment_frames} frames long", "pack longer segments")
        self.clip_start = bounds[:-1].numpy()[usable]
        self.clip_frames = lengths[usable]
        # Clips drawn in proportion to their usable span: uniform over the audio in time.
        w = (self.clip_frames - self.segment_frames + 1).astype(np.float64)
        self._cdf = np.cumsum(w / w.sum())
        self._cdf[-1] = 1.0
        log.info("latent pack %s: %d clips, %.2f h", self.root, len(self.clip_start), self.hours)

    @property
    def hours(self) -> float:
        return self.latents.shape[0] * self.hop / float(self.meta["sample_rate"]) / 3600.0

    def sample_batch(self, rng: np.random.Generator, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(wav (B, 1, T) float32, latents (B, D, T') float32)``, ``T = T' * hop``."""
        idx = np.minimum(np.searchsorted(self._cdf, rng.random(batch_size), side="right"), len(self._cdf) - 1)
        Tf = self.segment_frames
        first = [int(self.clip_start[i] + rng.integers(0, self.clip_frames[i] - Tf + 1)) for i in idx]
        lat = torch.stack([self.latents[f : f + Tf] for f in first]).transpose(1, 2).float()
        wav = torch.stack([self.audio[f * self.hop : (f + Tf) * self.hop] for f in first]).float() / 32768.0
        return wav.unsqueeze(1), lat

    def split_validation(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The pack's fixed validation segments (clips kept out of the shards), at most ``n``:
        ``(wav (n, 1, T), latents (n, D, T'))`` cropped to this dataset's segment length."""
        from safetensors.torch import load_file

        t = load_file(str(self.root / VAL_FILE))
        Tf = min(self.segment_frames, t["latents"].shape[-1])
        return (
            t["audio"][:n, None, : Tf * self.hop].float() / 32768.0,
            t["latents"][:n, :, :Tf].float(),
        )


def _pack_shard(latents: torch.Tensor, audio: torch.Tensor, starts: list[int]) -> dict[str, torch.Tensor]:
    """``latents`` ``(N, D)``, ``audio`` ``(N * hop,)`` int16 -> the compressed shard tensors."""
    lat = latents.float()
    scale = lat.abs().amax(dim=1).clamp_min(1e-8) / 127.0
    q = torch.round(lat / scale[:, None]).to(torch.int8)
    delta = torch.diff(audio.to(torch.int32), prepend=torch.zeros(1, dtype=torch.int32)).to(torch.int16)
    return {
        "latents_q": _lzma(q.numpy()),
        "latents_shape": torch.tensor(q.shape, dtype=torch.int64),
        "latent_scale": scale.to(torch.float16),
        "audio": _lzma(delta.numpy()),
        "starts": torch.tensor(starts, dtype=torch.int64),
    }


def _unpack_shard(t: dict[str, torch.Tensor], latent_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The inverse of :func:`_pack_shard`: ``(latents (N, D) float16, audio (N * hop,) int16)``."""
    n, d = (int(v) for v in t["latents_shape"])
    if d != latent_dim:
        raise CheckpointError(f"latent pack: frames of {d} values, {PACK_FILE} says {latent_dim}", "pack again")
    q = torch.from_numpy(np.frombuffer(_unlzma(t["latents_q"]), dtype=np.int8).reshape(n, d).copy())
    lat = (q.float() * t["latent_scale"].float()[:, None]).to(torch.float16)
    delta = np.frombuffer(_unlzma(t["audio"]), dtype=np.int16)
    # The running sum wraps around exactly as the int16 differences did.
    audio = torch.from_numpy(np.cumsum(delta, dtype=np.int16))
    return lat, audio


def _lzma(a: np.ndarray) -> torch.Tensor:
    return torch.frombuffer(bytearray(lzma.compress(a.tobytes(), preset=6)), dtype=torch.uint8)


def _unlzma(t: torch.Tensor) -> bytes:
    return lzma.decompress(t.numpy().tobytes())


def check_pack_matches(pack_dir: str | Path, model: LLMCodec) -> None:
    """Raise unless the pack in ``pack_dir`` was written by this model's encoder and quantizer
    (a decoder trained on another codec's latents would be wrong for this one's codes). Reads
    ``pack.json`` only, so it can run before the shards are loaded."""
    from uniaudio_cli.codec.api import codes_sha256

    meta = read_pack_meta(Path(pack_dir))
    cfg = model.cfg
    if meta["hop"] != cfg.hop_length or meta["latent_dim"] != cfg.latent_dim:
        raise UsageError(
            f"{pack_dir}: latents of hop {meta['hop']} / dim {meta['latent_dim']}, "
            f"the codec has {cfg.hop_length} / {cfg.latent_dim}",
            "pack the data with the codec passed to --init-from",
        )
    mine = codes_sha256(model)
    if meta["codes_sha256"] != mine:
        raise UsageError(
            f"{pack_dir}: packed by a codec whose codes_sha256 is {meta['codes_sha256'][:12]}, "
            f"not --init-from's {mine[:12]}",
            "pack the data with the codec passed to --init-from",
        )


def read_pack_meta(pack_dir: Path) -> dict:
    """``pack.json`` of a pack, checked for format and version."""
    path = Path(pack_dir) / PACK_FILE
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UsageError(
            f"{path}: not a latent pack ({e})", "write one with python -m uniaudio_cli.train.latents pack"
        ) from e
    if meta.get("format") != PACK_FORMAT or meta.get("format_version") != PACK_VERSION:
        raise CheckpointError(
            f"{path}: format {meta.get('format')!r} v{meta.get('format_version')}, "
            f"expected {PACK_FORMAT} v{PACK_VERSION}",
            "pack the data again with this version of uniaudio",
        )
    return meta


def pack_latents(
    model: LLMCodec,
    data_dirs: Iterable[str | Path],
    out_dir: str | Path,
    max_minutes: float | None = None,
    shard_mib: float = 56.0,
    val_segments: int = 16,
    val_seconds: float = 2.04,
    sources: Iterable[str] | None = None,
    seed: int = 0,
) -> Path:
    """Encode training clips with ``model`` (its codebooks installed, e.g. ``load_codec().model``)
    and write a latent pack to ``out_dir`` (see the module docstring).

    Clips come in a seeded random order, so ``max_minutes`` takes an unbiased subset; clips
    shorter than ``val_seconds`` are zero-padded (at a random offset, as the trainer pads them)
    before encoding. ``sources`` keeps only those data folders (e.g. ``speech_extra``).
    """
    from uniaudio_cli.train.data import _read_int16, default_exclude, discover_clips

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out}: exists and is not empty", "choose another --out or remove it")
    out.mkdir(parents=True, exist_ok=True)
    cfg = model.cfg
    sr, hop = cfg.sample_rate, cfg.hop_length
    wanted = set(sources) if sources is not None else None
    clips = [c for c in discover_clips(data_dirs) if not default_exclude(c) and (wanted is None or c.source in wanted)]
    if not clips:
        raise UsageError("no training clips in the data folders", "check --data and --sources")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(clips))
    min_samples = round(val_seconds * sr / cfg.pad_multiple) * cfg.pad_multiple
    val_frames = min_samples // hop
    budget = None if max_minutes is None else max_minutes * 60 * sr
    shard_bytes = shard_mib * 2**20
    # Compressed size per frame, measured on speech (int8 latents ~0.48, audio ~0.65 of raw).
    frame_bytes = cfg.latent_dim * 0.5 + hop * 2 * 0.7
    val_lat: list[torch.Tensor] = []
    val_wav: list[torch.Tensor] = []
    cur_lat: list[torch.Tensor] = []
    cur_wav: list[torch.Tensor] = []
    cur_starts: list[int] = []
    cur_frames = total = shards = 0

    def flush() -> None:
        nonlocal cur_lat, cur_wav, cur_starts, cur_frames, shards
        if not cur_lat:
            return
        save_tensors(
            _pack_shard(torch.cat(cur_lat), torch.cat(cur_wav), cur_starts), out / f"shard-{shards:03d}.safetensors"
        )
        shards += 1
        cur_lat, cur_wav, cur_starts, cur_frames = [], [], [], 0

    device = next(model.parameters()).device
    with torch.no_grad():
        for i in order:
            info = clips[int(i)]
            try:
                wav = _read_int16(info.path, sr)
            except Exception as e:
                log.warning("skipping %s: %s", info.path, e)
                continue
            if wav.size == 0:
                continue
            if wav.size < min_samples:
                padded = np.zeros(min_samples, dtype=np.int16)
                pos = int(rng.integers(0, min_samples - wav.size + 1))
                padded[pos : pos + wav.size] = wav
                wav = padded
            x = torch.from_numpy(wav.astype(np.float32) / 32768.0)[None, None].to(device)
            x = model.preprocess(x)
            z_q = model.quantizer(model.encoder(x)).z_q[0].T.to("cpu", torch.float16)  # (T', D)
            frames = z_q.shape[0]
            audio = torch.zeros(frames * hop, dtype=torch.int16)
            n = min(wav.size, frames * hop)
            audio[:n] = torch.from_numpy(wav[:n])
            if len(val_lat) < val_segments and frames >= val_frames:
                val_lat.append(z_q[:val_frames].T.contiguous())
                val_wav.append(audio[: val_frames * hop])
                continue
            if cur_frames and (cur_frames + frames) * frame_bytes > shard_bytes:
                flush()
            cur_starts.append(cur_frames)
            cur_lat.append(z_q)
            cur_wav.append(audio)
            cur_frames += frames
            total += frames * hop
            if budget is not None and total >= budget:
                break
    flush()
    if not val_lat:
        raise UsageError("no clip long enough for validation", "lower val_seconds")
    save_tensors({"latents": torch.stack(val_lat), "audio": torch.stack(val_wav)}, out / VAL_FILE)
    from uniaudio_cli.codec.api import codes_sha256

    meta = {
        "format": PACK_FORMAT,
        "format_version": PACK_VERSION,
        "sample_rate": sr,
        "hop": hop,
        "latent_dim": cfg.latent_dim,
        "codes_sha256": codes_sha256(model),
        "shards": shards,
        "minutes": round(total / sr / 60, 2),
        "val_segments": len(val_lat),
        "sources": sorted({c.source for c in clips}),
    }
    (out / PACK_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def export_decoder(
    codec_dir: str | Path, out_file: str | Path, dtype: torch.dtype = torch.float16, force: bool = False
) -> Path:
    """Write a checkpoint's decoder weights alone (``decoder.*``) with its config in the file's
    metadata: what a training machine sends back, a third of the full checkpoint."""
    from uniaudio_cli.codec.checkpoint import load_codec_weights

    out = Path(out_file)
    if out.exists() and not force:
        raise UsageError(f"{out}: exists", "choose another output, or pass --force")
    cfg, sd = load_codec_weights(codec_dir)
    dec = {k: v.to(dtype).contiguous() for k, v in sd.items() if k.startswith("decoder.")}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    save_tensors(dec, tmp, metadata={"format": DECODER_FORMAT, "config": json.dumps(cfg.to_dict())})
    tmp.replace(out)
    return out


def merge_decoder(
    base_dir: str | Path,
    decoder_file: str | Path,
    out_dir: str | Path,
    dtype: torch.dtype | None = None,
    force: bool = False,
) -> Path:
    """A full checkpoint: ``base_dir``'s encoder and quantizer with the decoder of
    ``decoder_file`` (from :func:`export_decoder`). The decoder's config must agree with the
    base's on everything but the decoder's own sizes. The result keeps the base's post-filter
    (``small_contrast``, ``small_contrast_smooth``): training always runs without it, so the
    decoder's config says 1.0."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from uniaudio_cli.codec.checkpoint import build_codec, load_codec_weights, save_codec
    from uniaudio_cli.codec.config import CodecConfig

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not force:
        raise UsageError(f"{out}: exists and is not empty", "choose another output, or pass --force")
    base_cfg, sd = load_codec_weights(base_dir)
    try:
        with safe_open(str(decoder_file), "pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for a bad file
        raise CheckpointError(
            f"{decoder_file}: not a safetensors file ({e})", "pass a file export-decoder wrote"
        ) from e
    if meta.get("format") != DECODER_FORMAT:
        raise CheckpointError(f"{decoder_file}: not a decoder export", "write it with export-decoder")
    dec_cfg = CodecConfig.from_dict(json.loads(meta["config"]), source=str(decoder_file))
    mine = {
        k: v
        for k, v in base_cfg.to_dict().items()
        if not k.startswith(("decoder_", "small_fine", "small_decoder", "small_harmonic", "small_contrast"))
    }
    theirs = {k: v for k, v in dec_cfg.to_dict().items() if k in mine}
    if mine != theirs:
        diff = sorted(k for k in mine if mine[k] != theirs.get(k))
        raise CheckpointError(
            f"{decoder_file}: made for another codec ({', '.join(diff)} differ)",
            "merge it into the codec it was trained from",
        )
    dec = load_file(str(decoder_file))
    merged = {k: v for k, v in sd.items() if not k.startswith("decoder.")} | {k: v.float() for k, v in dec.items()}
    cfg = dataclasses.replace(
        dec_cfg, small_contrast=base_cfg.small_contrast, small_contrast_smooth=base_cfg.small_contrast_smooth
    )
    model = build_codec(cfg, merged, str(decoder_file))
    return save_codec(model, out_dir, dtype=dtype)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="encode training clips into a latent pack")
    p.add_argument("--codec", default=None, help="codec folder (default: the shipped one)")
    p.add_argument("--data", type=Path, nargs="+", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--minutes", type=float, default=None, help="stop after this much audio")
    p.add_argument("--shard-mib", type=float, default=56.0)
    p.add_argument("--sources", nargs="*", default=None, help="only these data folders")
    e = sub.add_parser("export-decoder", help="a checkpoint's decoder alone, float16")
    e.add_argument("codec", type=Path)
    e.add_argument("out", type=Path)
    e.add_argument("--force", action="store_true", help="overwrite an existing output")
    m = sub.add_parser("merge-decoder", help="a decoder export back into a full checkpoint")
    m.add_argument("base", type=Path)
    m.add_argument("decoder", type=Path)
    m.add_argument("out", type=Path)
    m.add_argument("--float16", action="store_true")
    m.add_argument("--force", action="store_true", help="overwrite an existing output")
    ap.add_argument("--debug", action="store_true", help="tracebacks instead of one-line errors")
    run_tool(_run, ap.parse_args())


def _run(args: argparse.Namespace) -> None:
    if args.cmd == "pack":
        from uniaudio_cli.codec.api import load_codec

        torch.set_num_threads(1)
        out = pack_latents(
            load_codec(args.codec, device="cpu").model,
            args.data,
            args.out,
            args.minutes,
            args.shard_mib,
            sources=args.sources,
        )
        print(json.dumps(read_pack_meta(out)))
    elif args.cmd == "export-decoder":
        out = export_decoder(args.codec, args.out, force=args.force)
        print(f"{out}: {out.stat().st_size / 2**20:.1f} MiB")
    else:
        out = merge_decoder(args.base, args.decoder, args.out, torch.float16 if args.float16 else None, args.force)
        print(out)


if __name__ == "__main__":
    main()
