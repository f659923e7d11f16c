#!/bin/bash
# Train the default codec's decoder on a lent GPU, in one device call, from a latent pack.
#
# The device machine gets the repository and at most 64 MiB in all: neither the training audio nor
# the LLM whose embedding rows are the codebooks. The decoder needs neither, only (latent, waveform)
# pairs, packed here first (uniaudio_cli/train/latents.py; .gpu/ is git-ignored):
#
#   python -m uniaudio_cli.train.latents pack --data ../shared/data --out .gpu/pack --minutes 45 \
#       --shard-mib 28 --sources speech_extra librispeech fsdd ravdess
#
# (2 min on one core; 22-29 KB per second of audio; shard-000 holds about 18 minutes.) The tree
# (about 32 MiB) and what is carried must stay under 64 MiB, so one call carries one shard:
#
#   run  command="bash checkpoints/train_decoder_gpu.sh"  timeout_s=590
#        carry=[".gpu/pack/pack.json", ".gpu/pack/val.safetensors", ".gpu/pack/shard-000.safetensors"]
#
# (about 58 MiB in all). For more data, carry shard-001... first in calls that run `true`, one
# right after the other: files carried earlier stay on the machine while it is warm (30 s).
#
# It trains SPANS spans of SPAN_S seconds each, resuming in between, and sends a float16 decoder
# (11.4 MiB) back after each span, plus metrics.jsonl. The recipe: the hinge GAN from step 0 with
# HiFi-GAN's period discriminators beside the spectrogram ones, because what the decoder loses is
# periodicity (card, "What limits PESQ": the true harmonic fine structure below 1 kHz alone takes
# PESQ-WB 1.41 -> 1.73, and pYIN finds 40 % of the input's voiced frames unvoiced in the output).
# Back here, for each returned decoder (files_at of the reply):
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
SPANS=${SPANS:-3}
SPAN_S=${SPAN_S:-130}
DEADLINE_S=${DEADLINE_S:-560}  # stop starting spans that could not end before this
BATCH=${BATCH:-16}
SEGMENT=${SEGMENT:-1.0}
LR=${LR:-1e-4}
GAN=${GAN:---gan}
EXTRA=${EXTRA:-}  # more train-codec options, e.g. "--w-phase 3"
DEST=${OUT:-runs/gpu-out}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
mkdir -p "$DEST"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
for k in $(seq 1 "$SPANS"); do
  if (( SECONDS + SPAN_S + 45 > DEADLINE_S )); then
    echo "span $k skipped: it would end after ${DEADLINE_S} s"
    break
  fi
  R=()
  [ -f "$RUN/train_state.safetensors" ] && R=(--resume)
  python3 -m uniaudio_cli train-codec --latents "$PACK" --out "$RUN" "${R[@]}" --init-from "$INIT" \
    --decoder-only --batch-size "$BATCH" --segment-seconds "$SEGMENT" --lr "$LR" --lr-schedule constant \
    --w-stft 5 "$GAN" --gan-start 0 --disc-channels 32 --disc-periods 2,3,5,7,11 \
    --steps 10000000 --checkpoint-every 1000 --time-limit "$SPAN_S" --quiet $EXTRA
  python3 -m uniaudio_cli.train.latents export-decoder "$RUN/codec" "$DEST/decoder-$k.safetensors"
  tail -n 2 "$RUN/metrics.jsonl"
done
[ -f "$RUN/metrics.jsonl" ] && cp "$RUN/metrics.jsonl" "$DEST/metrics.jsonl"
echo "done in ${SECONDS} s"
