"""Check that the ``published`` backbone computes what the reference LLM-Codec computes.

Extracts the reference ``codec/`` package (github.com/yangdongchao/LLM-Codec) from a local git
clone or bare mirror of it (``--mirror``, e.g. after ``git clone --bare
https://github.com/yangdongchao/LLM-Codec``) into ``.ref/LLM-Codec`` (git-ignored), builds the
reference ``MSCodecLM`` with the released architecture and uniaudio's ``LLMCodec`` from one
shared synthetic state dict in the published layout (strict loads on both sides, so the key
names and shapes are proven equal), then encodes LibriSpeech clips and a noise clip with both and prints:

* per-layer code agreement (% of codes equal),
* the max abs error of the encoder latent,
* the max abs / relative error of decoding the same codes, with the NoiseBlocks switched off
  and with them on under identical seeds.

Needs ``einops`` (imported by the reference code, not by uniaudio): ``pip install einops``.

    python bench/reference_equality.py --mirror GIT_DIR [--data DIR] [--seconds S] [--clips N] [--full-codebooks]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf
import torch

# runnable from a checkout without installing the package
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uniaudio_cli.codec.config import CodecConfig
from uniaudio_cli.codec.model import LLMCodec
from uniaudio_cli.codec.published import noise_disabled
from uniaudio_cli.codec.published_ckpt import (
    load_published_state_dict,
    make_synthetic_published_state_dict,
    save_as_pth,
)

ROOT = Path(__file__).resolve().parents[1]
REF_DIR = ROOT / ".ref" / "LLM-Codec"
LIBRISPEECH = ROOT.parent / "shared" / "data" / "librispeech"


def extract_reference(mirror: Path, dest: Path) -> None:
    """Write the reference ``codec/*.py`` and ``config.yaml`` from the bare mirror into ``dest``."""
    files = subprocess.run(
        ["git", "-C", str(mirror), "ls-tree", "-r", "--name-only", "HEAD", "codec", "config.yaml"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    for name in files:
        if not name.endswith((".py", ".yaml")):
            continue  # skip stale .pyc files
        blob = subprocess.run(
            ["git", "-C", str(mirror), "show", f"HEAD:{name}"], check=True, capture_output=True
        ).stdout
        out = dest / name
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(blob)


def load_clips(data: Path, seconds: float, count: int, sr: int) -> list[tuple[str, torch.Tensor]]:
    """``count`` clips of ``data`` cropped to ``seconds`` plus one white-noise clip, each ``(1, 1, T)``."""
    clips = []
    paths = sorted(data.rglob("*.flac"))[:count]
    if len(paths) < count:
        raise SystemExit(
            f"{data}: {len(paths)} .flac clips, --clips {count} asked (fix: pass --data DIR or fewer --clips)"
        )
    for path in paths:
        wav, file_sr = sf.read(path, dtype="float32", always_2d=True)
        if file_sr != sr:
            raise SystemExit(f"{path}: {file_sr} Hz, expected {sr}")
        wav = wav[: int(seconds * sr), 0]
        clips.append((path.name, torch.from_numpy(wav)[None, None]))
    gen = torch.Generator().manual_seed(1234)
    # odd length, to exercise the padding
    noise = 0.1 * torch.randn(1, 1, int(seconds * sr) - 123, generator=gen)
    clips.append(("white-noise", noise))
    return clips


def build_reference(cfg: CodecConfig, sd: dict[str, torch.Tensor], workdir: Path) -> torch.nn.Module:
    """Reference ``MSCodecLM`` with the codebook tables of ``sd`` and then ``sd`` loaded strictly."""
    sys.path.insert(0, str(REF_DIR))
    try:
        from codec.MSCodec import MSCodecLM  # type: ignore[import-not-found]
    except ModuleNotFoundError as e:
        raise SystemExit(f"reference import failed ({e}); run: pip install einops") from e
    # The reference reads layer 1's table from global_embedding_path and layers 2-3's from
    # local_embedding_path (a dict with 'weight').
    global_path, local_path = workdir / "layer1.pth", workdir / "embed_llm.pt"
    torch.save(sd["quantizer.quantizers.0.codebook.weight"].clone(), global_path)
    torch.save({"weight": sd["quantizer.quantizers.1.codebook.weight"].clone()}, local_path)
    ref = MSCodecLM(
        sample_rate=cfg.sample_rate,
        encoder_dim=cfg.encoder_dim,
        encoder_rates=cfg.encoder_rates,
        latent_dim=cfg.latent_dim,
        decoder_dim=cfg.decoder_dim,
        decoder_rates=cfg.decoder_rates,
        attn_window_size=cfg.attn_window_size,
        vq_strides=cfg.vq_strides,
        use_cblinear=True,
        local_embedding_path=str(local_path),
        global_embedding_path=str(global_path),
        noise=cfg.noise,
        depthwise=cfg.depthwise,
    )
    ref.load_state_dict(sd, strict=True)
    return ref.eval()


def ref_noise_off(ref: torch.nn.Module) -> list[torch.nn.Module]:
    """Make the reference NoiseBlocks the identity (instance-level patch); returns them."""
    blocks = [m for m in ref.modules() if type(m).__name__ == "NoiseBlock"]
    for m in blocks:
        m.forward = lambda x: x  # type: ignore[method-assign]
    return blocks


def ref_noise_on(blocks: list[torch.nn.Module]) -> None:
    for m in blocks:
        del m.forward  # back to the class method


def errors(ours: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """(max abs error, max abs error / max |ref|)."""
    err = (ours - ref).abs().max().item()
    return err, err / max(ref.abs().max().item(), 1e-12)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--seconds", type=float, default=3.0, help="length of each clip (default 3)")
    ap.add_argument("--clips", type=int, default=3, help="LibriSpeech clips (plus one noise clip)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the synthetic weights")
    ap.add_argument(
        "--full-codebooks",
        action="store_true",
        help="real table sizes (3248x768 and 32000x4096, slow); default 3248x768 and 4000x512",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--mirror", type=Path, required=True, help="a git clone or bare mirror of github.com/yangdongchao/LLM-Codec"
    )
    ap.add_argument(
        "--data", type=Path, default=LIBRISPEECH, help=f"folder of 16 kHz .flac speech (default {LIBRISPEECH})"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if subprocess.run(["git", "-C", str(args.mirror), "rev-parse", "HEAD"], capture_output=True).returncode != 0:
        raise SystemExit(f"{args.mirror}: not a git repository (fix: pass --mirror with a clone of LLM-Codec)")

    extract_reference(args.mirror, REF_DIR)
    local = (32000, 4096) if args.full_codebooks else (4000, 512)
    cfg = CodecConfig(
        backbone="published",
        latent_dim=512,
        codebook_sizes=[3248, local[0], local[0]],
        codebook_dims=[768, local[1], local[1]],
    )
    t0 = time.time()
    sd = make_synthetic_published_state_dict(cfg, seed=args.seed)

    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        ref = build_reference(cfg, sd, tmpdir)
        # ours goes through the real loader: file -> inferred config -> strict load
        loaded_cfg, loaded_sd = load_published_state_dict(save_as_pth(sd, tmpdir / "synthetic.pth"))
    for name in (
        "encoder_dim",
        "encoder_rates",
        "latent_dim",
        "decoder_dim",
        "decoder_rates",
        "vq_strides",
        "codebook_sizes",
        "codebook_dims",
        "attn_window_size",
        "noise",
        "depthwise",
    ):
        if getattr(loaded_cfg, name) != getattr(cfg, name):
            raise SystemExit(f"inferred {name} {getattr(loaded_cfg, name)} != {getattr(cfg, name)}")
    ours = LLMCodec(loaded_cfg)
    ours.load_state_dict(loaded_sd, strict=True)
    ours.eval()
    print(
        f"state dict: {len(sd)} tensors, strict-loaded into both models; codebooks "
        f"{cfg.codebook_sizes} x {cfg.codebook_dims}; setup {time.time() - t0:.1f}s"
    )

    total = [0, 0, 0]
    equal = [0, 0, 0]
    distinct = [0, 0, 0]  # sum over clips of distinct codes: equality of constant codes would prove little
    out_std, saturated = [], []
    worst = {"latent": 0.0, "dec_abs": 0.0, "dec_rel": 0.0, "noisy_abs": 0.0, "noisy_rel": 0.0}
    noise_blocks = ref_noise_off(ref)
    header = f"{'clip':<22}{'frames':>7}  {'codes equal (L1/L2/L3)':<26}{'latent':>10}{'decode':>10}{'rel':>10}"
    print(header)
    with torch.no_grad():
        for name, wav in load_clips(args.data, args.seconds, args.clips, cfg.sample_rate):
            t = time.time()
            ref_codes = ref.encode(wav)
            our_codes = ours.encode(wav)
            padded = ours.preprocess(wav)
            lat_err = (ours.encoder(padded) - ref.encoder(padded)).abs().max().item()
            agree = []
            for i, (a, b) in enumerate(zip(our_codes, ref_codes, strict=True)):
                total[i] += b.numel()
                equal[i] += int((a == b).sum())
                distinct[i] += b.unique().numel()
                agree.append(100.0 * (a == b).float().mean().item())
            # decode the reference codes with both, so encoder differences cannot leak in
            with noise_disabled(ours):
                ref_audio = ref.decode(ref_codes)
                dec_abs, dec_rel = errors(ours.decode(ref_codes), ref_audio)
            out_std.append(ref_audio.std().item())
            saturated.append((ref_audio.abs() > 0.999).float().mean().item())
            ref_noise_on(noise_blocks)
            torch.manual_seed(7)
            ref_noisy = ref.decode(ref_codes)
            torch.manual_seed(7)
            noisy_abs, noisy_rel = errors(ours.decode(ref_codes), ref_noisy)
            ref_noise_off(ref)
            worst["latent"] = max(worst["latent"], lat_err)
            worst["dec_abs"], worst["dec_rel"] = (
                max(worst["dec_abs"], dec_abs),
                max(worst["dec_rel"], dec_rel),
            )
            worst["noisy_abs"] = max(worst["noisy_abs"], noisy_abs)
            worst["noisy_rel"] = max(worst["noisy_rel"], noisy_rel)
            codes_txt = "/".join(f"{x:.1f}" for x in agree)
            print(
                f"{name:<22}{ref_codes[2].shape[-1]:>7}  {codes_txt:<26}{lat_err:>10.2e}{dec_abs:>10.2e}"
                f"{dec_rel:>10.2e}   ({time.time() - t:.1f}s)"
            )
    pct = [100.0 * e / n for e, n in zip(equal, total, strict=True)]
    print()
    print(
        "code agreement per layer: "
        + ", ".join(f"L{i + 1} {p:.2f}% of {n}" for i, (p, n) in enumerate(zip(pct, total, strict=True)))
    )
    print("distinct codes per clip, summed: " + ", ".join(f"L{i + 1} {d}" for i, d in enumerate(distinct)))
    print(
        f"decoded output (noise off): std {min(out_std):.3f}..{max(out_std):.3f}, "
        f"|x| > 0.999 in {100 * max(saturated):.2f}% of samples at most"
    )
    print(f"encoder latent max abs error: {worst['latent']:.3e}")
    print(f"decode (noise off) max abs error: {worst['dec_abs']:.3e}, relative to max |ref|: {worst['dec_rel']:.3e}")
    print(f"decode (noise on, same seed) max abs error: {worst['noisy_abs']:.3e}, relative: {worst['noisy_rel']:.3e}")
    ok = all(p == 100.0 for p in pct) and worst["dec_rel"] < 1e-4 and worst["noisy_rel"] < 1e-4
    print("RESULT:", "EQUAL" if ok else "DIFFERENT")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
