#!/bin/bash
# Train the default codec's decoder on a lent GPU, in one device call, from a latent pack.
#
# The device machine gets the repository and at most 64 MiB in all: neither the training audio nor
# the LLM whose embedding rows are the codebooks. The decoder needs neither, only (latent, waveform)
# pairs, packed here first (uniaudio_cli/train/latents.py; .gpu/ is git-ignored):
#
#   python -m uniaudio_cli.train.latents pack --data ../shared/data --out .gpu/pack --shard-mib 28
#
# (about 29 KB per second of audio: keep the tracked tree, about 32 MiB, plus the shards carried
# in one call under 64 MiB; shards carried in earlier calls stay while the machine is warm).
# Then, with the device tool:
#
#   run  command="bash checkpoints/train_decoder_gpu.sh"  carry=[".gpu/pack"]  timeout_s=590
#
# It trains SPANS spans of SPAN_S seconds each, resuming in between, and sends a float16 decoder
# (11.4 MiB) back after each span, plus metrics.jsonl. The recipe: the hinge GAN from step 0 with
# HiFi-GAN's period discriminators beside the spectrogram ones, because what the decoder loses is
# periodicity (card, "What limits PESQ": the true harmonic fine structure below 1 kHz alone takes
# PESQ-WB 1.41 -> 1.73, and pYIN finds 40 % of the input's voiced frames unvoiced in the output). Back here, for each returned decoder:
#
#   python -m uniaudio_cli.train.latents merge-decoder checkpoints/llm-codec-smollm2 DECODER runs/gpu-K --float16
#   uniaudio eval codec .data/heldout/speech/librispeech --codec runs/gpu-K --max-files 100 --json -q
#
# and commit the one with the best held-out PESQ-WB / STOI (codes are unchanged: decoder only).
set -euo pipefail
cd "$(dirname "$0")/.."
PACK=${PACK:-.gpu/pack}
INIT=${INIT:-checkpoints/llm-codec-smollm2}
RUN=${RUN:-/tmp/gpu-run}
SPANS=${SPANS:-4}
SPAN_S=${SPAN_S:-110}
BATCH=${BATCH:-16}
SEGMENT=${SEGMENT:-1.0}
LR=${LR:-1e-4}
GAN=${GAN:---gan}
DEST=${OUT:-runs/gpu-out}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
mkdir -p "$DEST"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
for k in $(seq 1 "$SPANS"); do
  R=()
  [ -f "$RUN/train_state.safetensors" ] && R=(--resume)
  python3 -m uniaudio_cli train-codec --latents "$PACK" --out "$RUN" "${R[@]}" --init-from "$INIT" \
    --decoder-only --batch-size "$BATCH" --segment-seconds "$SEGMENT" --lr "$LR" --lr-schedule constant \
    --w-stft 5 "$GAN" --gan-start 0 --disc-channels 32 --disc-periods 2,3,5,7,11 \
    --steps 10000000 --checkpoint-every 1000 --time-limit "$SPAN_S" --quiet
  python3 -m uniaudio_cli.train.latents export-decoder "$RUN/codec" "$DEST/decoder-$k.safetensors"
  tail -n 2 "$RUN/metrics.jsonl"
done
cp "$RUN/metrics.jsonl" "$DEST/metrics.jsonl"
