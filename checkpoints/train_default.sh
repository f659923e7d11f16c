#!/usr/bin/env bash
# Reproduces the shipped default codec (checkpoints/llm-codec-smollm2) on a CPU.
# Needs espeak-ng (synthetic speech) and ../shared/data. Resumable: run it again after a kill.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
RUN=${RUN:-runs/default}
[ -f .data/synth/metadata.csv ] || python -m uniaudio_cli.train.synth_data .data/synth --clips 1500 --seed 0
uniaudio train-codec --data "$DATA" .data/synth --out "$RUN" --resume \
    --steps "${STEPS:-2500}" --gan-start "${GAN_START:-2500}" --time-limit "${TIME_LIMIT:-7000}" --quiet
python -m uniaudio_cli.codec.export "$RUN/codec-best" checkpoints/llm-codec-smollm2 --dtype float16
