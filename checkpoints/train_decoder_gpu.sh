#!/bin/bash
# Train the default codec's decoder on a lent GPU, in one device call, from a latent pack:
# several recipes side by side on the one GPU (each alone leaves most of it idle).
#
# The device machine gets the repository and at most 64 MiB in all: neither the training audio nor
# the LLM whose embedding rows are the codebooks. The decoder needs neither, only (latent, waveform)
# pairs, packed here first (uniaudio_cli/train/latents.py; .gpu/ is git-ignored):
#
#   python -m uniaudio_cli.train.latents pack --data ../shared/data --out .gpu/pack --minutes 45 \
#       --shard-mib 22 --sources speech_extra librispeech fsdd ravdess
#
# (3 min on one core; 22-29 KB per second of audio; a 22 MiB shard holds about 14 minutes.) The
# tree and what is carried must stay under 64 MiB, so one call carries one shard. The tree is
# 36 MiB since the stage-29 default (`git ls-files -z | xargs -0 du -cb | tail -1`), val.safetensors
# about 2 MiB: size the shards to what is left, with a margin:
#
#   run  command="bash checkpoints/train_decoder_gpu.sh"  timeout_s=590
#        carry=[".gpu/pack/pack.json", ".gpu/pack/val.safetensors", ".gpu/pack/shard-000.safetensors"]
#
# First run (2026-12-04, one H200): 18 minutes of audio are too little. Every decoder came back
# worse than the one it started from; without the GAN the pack's validation loss was lowest at
# step 2,000 and rose after (the model card has the figures). Carry more shards first, each in a
# call that runs `true`, sent the moment the one before returns: what a call carried stays on
# the machine while it is warm (30 s after a call), and the trainer reads every shard-*.safetensors
# in the pack. A machine given back in between starts bare.
#
# Each variant below trains in SPANS (seconds each, resuming in between) and sends a float16
# decoder (14.5 MiB since the decoder has 12 fine blocks) back after the spans its EXPORT list
# names: at most 4 decoders, because at most 8 files and 64 MiB come back (a dry run here:
# PACK=.gpu/packdry SPANS="20 20" DEVICE_OPT="--device cpu" OUT=runs/gpu-dry bash THIS). Each
# variant's log (with its metrics.jsonl appended) comes back too.
# The recipes: the hinge GAN from step 0 with HiFi-GAN's period discriminators beside the
# spectrogram ones, because what the decoder loses is periodicity (card, "What limits PESQ": the
# true harmonic fine structure below 1 kHz alone takes PESQ-WB 1.41 -> 1.73, and pYIN finds 40 %
# of the input's voiced frames unvoiced in the output); the same on twice the batch; and the
# spectral losses alone, as the control that says what the GAN itself adds.
# Back here, for each returned decoder (files_at of the reply):
#
#   python -m uniaudio_cli.train.latents merge-decoder checkpoints/llm-codec-smollm2 DECODER runs/gpu-K --float16
#   python bench/codec_compare.py checkpoints/llm-codec-smollm2 runs/gpu-K ...
#
# and commit the one with the best held-out PESQ-WB / STOI (codes are unchanged: decoder only).
set -uo pipefail
cd "$(dirname "$0")/.."
PACK=${PACK:-.gpu/pack}
INIT=${INIT:-checkpoints/llm-codec-smollm2}
SPANS=${SPANS:-"235 235"}  # seconds of training per span
SEGMENT=${SEGMENT:-1.0}
PRECISION=${PRECISION:---no-bf16}  # float32 (TF32 convolutions): the step is launch-bound, not arithmetic-bound
DEVICE_OPT=${DEVICE_OPT:-}  # e.g. "--device cpu" for a dry run here
DEST=${OUT:-runs/gpu-out}
# Each variant's training state: a new folder per invocation, so a second run on one machine
# (a dry run, then another) never resumes the first one's state with other INIT or PACK.
if [ -z "${RUNS:-}" ]; then
  RUNS=$(mktemp -d -t uniaudio-gpu-XXXXXX)
  trap 'rm -rf "$RUNS"' EXIT  # what matters comes back through $DEST
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}  # three trainers share the CPU cores
mkdir -p "$DEST"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

GAN=(--gan --gan-start 0 --disc-channels 32 --disc-periods 2,3,5,7,11)

# variant NAME "SPANS TO EXPORT" TRAIN-CODEC OPTIONS...
variant() {
  local name=$1 export_spans=$2
  shift 2
  local run=$RUNS/$name log=$DEST/$name.log k=0 span
  for span in $SPANS; do
    k=$((k + 1))
    local resume=()
    [ -f "$run/train_state.safetensors" ] && resume=(--resume)
    python3 -m uniaudio_cli train-codec --latents "$PACK" --out "$run" "${resume[@]}" --init-from "$INIT" \
      --decoder-only $PRECISION --segment-seconds "$SEGMENT" --lr-schedule constant --w-stft 5 \
      --steps 10000000 --checkpoint-every 1000 --time-limit "$span" --quiet $DEVICE_OPT "$@" >>"$log" 2>&1 \
      || { echo "$name: span $k failed (see $name.log)"; break; }
    if [[ " $export_spans " == *" $k "* ]]; then
      python3 -m uniaudio_cli.train.latents export-decoder "$run/codec" "$DEST/decoder-$name-$k.safetensors" >>"$log" 2>&1
    fi
    echo "$name span $k:"; tail -n 2 "$run/metrics.jsonl" 2>/dev/null | cut -c1-400
  done
  { echo "--- metrics.jsonl"; cat "$run/metrics.jsonl" 2>/dev/null; } >>"$log"
}

variant gan "2" "${GAN[@]}" --batch-size 16 --lr 1e-4 &
variant gan32 "1 2" "${GAN[@]}" --batch-size 32 --lr 1e-4 &
variant spec "2" --no-gan --batch-size 32 --lr 1e-4 &
wait
ls -la "$DEST"
echo "done in ${SECONDS} s"
