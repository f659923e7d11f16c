"""Fit the codebook maps of the acoustic layers to a trained encoder's residuals.

A linear map of the LLM's embedding table into the latent space leaves the projected rows of
layers 2 and 3 in about 15 of the latent's 256 directions, placed where a linear image of the
table puts them rather than where the residuals are. A residual MLP beside the linear map
(``CodecConfig.codebook_map_hidden``) can move them; started at zero inside a full training run,
at that run's learning rate, it hardly moves. So it is first fitted here, with the encoder and
the semantic layer frozen: on the layer-1 residuals of the training clips (held-out rules
applied), each acoustic layer in turn takes its nearest rows as encoding does and pulls them
towards what they quantize (a k-means step through the map: every row moves with the map's
weights, not only the chosen ones). The decoder is untouched; a training run from the result
(``uniaudio train-codec --init-from OUT``) then teaches it the new codes.

    python -m uniaudio_cli.train.refit_maps --codec CODEC --data DIR... --out OUT --hidden 512
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from uniaudio_cli.errors import UsageError, run_tool

if TYPE_CHECKING:
    from uniaudio_cli.codec.model import LLMCodec

log = logging.getLogger(__name__)


def with_map_hidden(model: LLMCodec, hidden: int) -> LLMCodec:
    """A copy of ``model`` whose acoustic layers have a residual MLP of width ``hidden``
    (zero-initialised, so its codes are ``model``'s), its weights and frozen tables copied;
    ``model`` itself when it already has that width."""
    from uniaudio_cli.codec.model import LLMCodec

    if model.cfg.codebook_map_hidden == hidden:
        return model
    cfg = dataclasses.replace(model.cfg, codebook_map_hidden=hidden)
    out = LLMCodec(cfg).to(next(model.parameters()).device)
    own = out.state_dict()
    out.load_state_dict({k: v for k, v in model.state_dict().items() if k in own}, strict=False)
    for mine, theirs in zip(out.quantizer.quantizers, model.quantizer.quantizers, strict=True):
        mine.banned.copy_(theirs.banned)  # not in a state dict
    return out.eval()


@torch.no_grad()
def layer1_residuals(model: LLMCodec, clips: Iterable[torch.Tensor]) -> torch.Tensor:
    """What the acoustic layers quantize: for each ``(T,)`` waveform, the encoder's latent minus
    the semantic layer's contribution, cut into windows of ``w`` frames (``w`` the largest stride
    after the first; a clip's last partial window dropped) -> ``(N, w, D)`` float32."""
    q = model.quantizer
    w = window_frames(model)
    first = q.quantizers[0]
    parts = []
    for wav in clips:
        z = model.encoder(model.preprocess(wav.float()[None, None]))
        idx = first.nearest(first.pool(z))
        r = z - first.embed(idx)
        frames = r[0].t()
        n = frames.shape[0] // w * w
        if n:
            parts.append(frames[:n].reshape(-1, w, frames.shape[1]))
    if not parts:
        raise UsageError("no clip is long enough to fit the codebook maps on", "pass longer clips")
    return torch.cat(parts)


def window_frames(model: LLMCodec) -> int:
    """Frames per fitting window: the largest stride of the acoustic layers, which every other
    one must divide (true of the paper's 4/2/1)."""
    strides = model.quantizer.strides[1:]
    w = max(strides)
    if any(w % s for s in strides):
        raise UsageError(f"strides {strides}: the acoustic layers' strides must divide {w}", "use strides like 4/2/1")
    return w


def quantize_windows(model: LLMCodec, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize windows ``r`` ``(N, w, D)`` with the acoustic layers, greedily as
    :meth:`MultiScaleRVQ.encode` does: each layer pools the residual by its stride, takes its
    nearest rows (through the search's table, frozen or not) and subtracts them, repeated to
    frame rate. Returns the final residual ``(N, w, D)`` and the fitting loss: each layer's
    squared distance between its re-projected rows and what they quantize, weighted by its
    stride's share of the frames (its gradient reaches the maps, never the frozen rows)."""
    q = model.quantizer
    euclidean = q.residual_search == "euclidean"
    n, w, d = r.shape
    loss = r.new_zeros(())
    for layer in q.quantizers[1:]:
        pooled = r.reshape(n, w // layer.stride, layer.stride, d).mean(2).reshape(-1, d)
        with torch.no_grad():
            idx = layer.search(pooled.t()[None], euclidean=euclidean)[0]
        rows = layer.project(layer.codebook(idx))
        loss = loss + F.mse_loss(rows, pooled) / layer.stride
        r = r - rows.detach().reshape(n, w // layer.stride, d).repeat_interleave(layer.stride, dim=1)
    return r, loss


@torch.no_grad()
def quantization_error(model: LLMCodec, residuals: torch.Tensor) -> float:
    """Mean squared error per latent value after the acoustic layers quantize ``residuals``
    ``(N, w, D)`` (:func:`quantize_windows`, with the current maps)."""
    for layer in model.quantizer.quantizers[1:]:
        layer.unfreeze_search()
    total = sum(float(quantize_windows(model, chunk.float())[0].pow(2).sum()) for chunk in residuals.split(4096))
    return total / max(residuals.numel(), 1)


def fit_codebook_maps(
    model: LLMCodec,
    residuals: torch.Tensor,
    steps: int,
    lr: float = 1e-3,
    batch: int = 2048,
    refresh: int = 10,
    seed: int = 0,
    progress: bool = False,
) -> list[float]:
    """Fit the maps of ``model``'s acoustic layers (linear at ``lr / 10``, residual MLP at
    ``lr``) to ``residuals`` ``(N, w, D)`` (:func:`layer1_residuals`), in place.

    Each step draws ``batch`` windows and quantizes them (:func:`quantize_windows`) through
    search tables refreshed every ``refresh`` steps, and follows that loss. Returns, for every
    step, the per-value squared error left after the last layer.
    """
    layers = list(model.quantizer.quantizers[1:])
    mlp = [p for layer in layers if layer.cb_mlp is not None for p in layer.cb_mlp.parameters()]
    linear = [p for layer in layers for p in layer.cb_proj.parameters()]
    groups = [{"params": linear, "lr": lr * 0.1}] + ([{"params": mlp, "lr": lr}] if mlp else [])
    opt = torch.optim.Adam(groups)
    gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    start = time.time()
    try:
        for step in range(steps):
            if step % refresh == 0:
                for layer in layers:
                    layer.freeze_search()
            windows = residuals[torch.randint(len(residuals), (batch,), generator=gen)].float()
            r, loss = quantize_windows(model, windows)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(r.pow(2).mean()))
            if progress and (step + 1) % 100 == 0:
                recent = sum(losses[-100:]) / len(losses[-100:])
                log.info("step %d/%d: error %.4f (%.0f s)", step + 1, steps, recent, time.time() - start)
    finally:
        for layer in layers:
            layer.unfreeze_search()
    return losses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--codec", default=None, help="codec folder (default: the shipped one)")
    ap.add_argument("--data", type=Path, nargs="+", required=True, help="training folders (held-out rules apply)")
    ap.add_argument("--out", type=Path, required=True, help="new codec folder")
    ap.add_argument("--hidden", type=int, default=512, help="width of the residual MLP (0: refit the linear map)")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=2048, help="windows per step")
    ap.add_argument("--seconds", type=float, default=15.0, help="each clip's first seconds")
    ap.add_argument("--validation", type=int, default=64, help="clips kept out of the fit to measure it on")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--debug", action="store_true", help="tracebacks instead of one-line errors")
    run_tool(_run, ap.parse_args())


def _run(args: argparse.Namespace) -> None:
    from uniaudio_cli.audio import load_audio
    from uniaudio_cli.codec.api import load_codec
    from uniaudio_cli.codec.checkpoint import save_codec
    from uniaudio_cli.errors import OutputExistsError
    from uniaudio_cli.train.data import default_exclude, discover_clips

    if args.out.exists():
        raise OutputExistsError(f"{args.out}: exists", "choose a new --out folder")
    if args.hidden < 0 or args.steps < 1:
        raise UsageError("--hidden must be >= 0 and --steps >= 1", "fix the arguments")
    clips = [c for c in discover_clips(args.data) if not default_exclude(c)]
    if len(clips) <= args.validation:
        raise UsageError(f"{len(clips)} training clips in {args.data}", "pass the training data folders")
    torch.set_num_threads(args.threads)
    codec = load_codec(args.codec, device="cpu")
    model = with_map_hidden(codec.model.float(), args.hidden)
    # A fixed stride through the clips for validation: every source is represented.
    step = len(clips) // args.validation
    held = set(range(0, step * args.validation, step))
    cut = int(args.seconds * codec.sample_rate)

    def read(keep: bool) -> Iterable[torch.Tensor]:
        for i, c in enumerate(clips):
            if (i in held) == keep:
                yield torch.from_numpy(load_audio(c.path, codec.sample_rate, allow_silence=True)[:cut].copy())

    log.info("%d clips to fit on, %d to validate on", len(clips) - len(held), len(held))
    train_r = layer1_residuals(model, read(False))
    val_r = layer1_residuals(model, read(True))
    before = quantization_error(model, val_r)
    fit_codebook_maps(model, train_r, args.steps, lr=args.lr, batch=args.batch, progress=True)
    after = quantization_error(model, val_r)
    log.info("validation error per value: %.4f -> %.4f (%+.1f %%)", before, after, 100 * (after / before - 1))
    if not math.isfinite(after):
        raise UsageError("the fit diverged", "lower --lr")
    print(save_codec(model, args.out))


if __name__ == "__main__":
    main()
