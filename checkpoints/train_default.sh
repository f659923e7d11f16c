#!/usr/bin/env bash
# Reproduces the committed codecs on a CPU. Resumable: run it again after a kill. Needs
# ../shared/data (and espeak-ng for stage 1 from scratch).
#
# Stage 1 is v1 (the first default, kept in checkpoints/llm-codec-smollm2-v1, 2,500 steps from
# scratch); it is taken from the weights committed at a28724e unless FROM_SCRATCH=1 retrains it.
# Stage 2 is the default codec, v2 (checkpoints/llm-codec-smollm2): the decoder grown to 4 blocks
# at the 100 Hz STFT rate, continued on ../shared/data with batch 8, lr 2e-4 cosine to 2e-5,
# log-magnitude weight 5. The committed v2 ran 6,818 steps of a 9,000-step schedule
# (STEPS=9000 TIME_LIMIT=5940), then was resumed with STEPS=14000 (stopped by the time limit at
# 10,034 and 10,550, resumed each time) to the end; its weights are codec-best at step 14,000.
# Stage 3 trains only the decoder of stage 2's weights (--decoder-only: every code, and so every
# classification result, stays stage 2's) for 11,000 more steps, lr 1e-4 cosine to 1e-5;
# its best validation checkpoint is the input of stage 4. STAGE3=0 stops after stage 2.
# Stage 4 grows the decoder by two blocks at the 100 Hz STFT rate (--fine-layers 6; the new blocks
# start near the identity) and trains only the decoder again, 10,000 steps, lr 1e-4 cosine to 1e-5;
# its best validation checkpoint is the input of stage 5. STAGE4=0 stops after stage 3.
# Stage 5 trains stage 4's decoder alone for 12,000 more steps, lr 7e-5 cosine to 7e-6.
# STAGE5=0 stops after stage 4.
# Stage 6 grows the decoder by two more blocks (--fine-layers 8) and trains it alone again, 11,000
# steps, lr 1e-4 cosine to 1e-5; the committed default is its best validation checkpoint.
# STAGE6=0 stops after stage 5.
# Stage 7 trains the whole codec again (encoder, quantizer and decoder) from stage 6 with the
# harmonic decoder head (--harmonic): its pitch head learns the YIN pitch of the target, and that
# loss reaches the encoder, so the codes carry the pitch better. Batch 8, lr 1e-4 cosine over 4,000
# steps, stopped at step 3,500 (STOP7); the committed default is that checkpoint written with the
# plain head (export --drop-oscillator: the oscillator's mix had learned to stay near zero).
# Its codes differ from stage 6's, so the prototype centre is remade below. STAGE7=0 stops after
# stage 6.
# Stage 8 resumes stage 7's run (full training state, same recipe) with longer cosine schedules,
# as the committed default was made: --steps 9500 up to step 5,843, --steps 15000 up to 6,004,
# then --steps 16500 until STOP8 (the learning rate goes back up to about 7e-5 at the first change).
# Its checkpoint at STOP8, written with the plain head, was the default until stage 9. STAGE8=0
# stops after stage 7.
# Stage 9 starts a new run from stage 8's plain-head weights (--init-from, so a fresh optimizer and
# a fresh pitch head; the full training state of stage 8 was not kept), same recipe with lr 6e-5
# cosine: --steps 8000 up to step 3,907 on one and then two threads, then --steps 7000 to the end
# (the schedule shortened so that it ends annealed within one session). The committed default is
# its last checkpoint (step 7,000), written with the plain head. STAGE9=0 stops after stage 8.
# Stage 10 starts a new run from stage 9's last checkpoint with its harmonic head (its pitch head
# is kept; the optimizer is fresh), same recipe, one thread: --steps 6500 up to step 865, then
# --steps 5000 to the end (shortened to end within one session). The committed default is its last
# checkpoint (step 5,000), written with the plain head. STAGE10=0 stops after stage 9.
# Stage 11 starts a new run from stage 10's last checkpoint with its harmonic head in the same way,
# same recipe, one thread, 4,500 steps. The committed default is its last checkpoint, written with
# the plain head. STAGE11=0 stops after stage 10.
# Stage 12 starts a new run from stage 11's last checkpoint with its harmonic head in the same way,
# with twice the peak learning rate (1.2e-4 cosine), one thread, 4,500 steps. The committed default
# is its last checkpoint, written with the plain head. STAGE12=0 stops after stage 11.
# Stage 13 starts a new run from stage 12's plain-head float16 export (the committed stage-12
# default; its full training state was lost), so with a fresh pitch head and optimizer, stage 12's
# recipe (lr 1.2e-4 cosine, one thread, 4,500 steps). The committed default is its last
# checkpoint, written with the plain head. STAGE13=0 stops after stage 12.
# Stage 14 starts a new run from stage 13's export in the same way (lr 1.2e-4 cosine, two threads):
# --steps 4500 up to step 510, --steps 2200 to its end, then --steps 4500 to its end (the learning
# rate back up to about 7e-5 at the last change). It was not committed; it is stage 15's input.
# STAGE14=0 stops after stage 13.
# Stage 15 starts a new run from stage 14's last checkpoint with its harmonic head and grows the
# decoder by two blocks at the 100 Hz STFT rate (--fine-layers 10), same recipe on two threads:
# --steps 4000 to its end, then --steps 8000 up to step 7,034 and on to the end. Its last checkpoint
# (step 8,000), written with the plain head and with the Euclidean search for the codes of layers
# 2 and 3 (export --residual-search euclidean), was the default for part of the sixth session of
# 2026-12-04. STAGE15=0 stops after stage 14.
# Stage 16 starts a new run from stage 15's last checkpoint with its harmonic head and trains with
# the Euclidean residual search (--residual-search euclidean, kept in the exported config): lr
# 5e-5 cosine over 2,400 steps (the first 241 on one thread, the rest on two). The committed
# default is its last checkpoint, written with the plain head; its codes differ from stage 15's,
# so the prototype centre is remade. STAGE16=0 stops after stage 15.
# Stage 17 starts a new run from stage 16's last checkpoint with its harmonic head, the same recipe
# with the search, lr 5e-5 cosine over 6,000 steps (resumed twice across sessions: one thread to
# step 487, then two threads). The committed default is its last checkpoint (step 6,000), written
# with the plain head; the prototype centre is remade. STAGE17=0 stops after stage 16.
# Stage 18 grows the decoder by two more blocks at the 100 Hz STFT rate (--fine-layers 12) and
# trains the whole codec from stage 17's last checkpoint with its harmonic head, lr 1.2e-4 cosine
# over 8,000 steps, stopped at step 7,219 (resumed across sessions). STAGE18=0 stops after stage 17.
# Stage 19 starts a new run from stage 18's last checkpoint with its harmonic head, lr 5e-5 cosine
# over 6,000 steps (resumed across sessions). The committed default is its last checkpoint,
# written with the plain head; the prototype centre is remade. STAGE19=0 stops after stage 18.
# The committed default is stage 19's export with the decoder's spectral-contrast post-filter on
# (export --contrast 1.1, set in config.json only: the weights, codes and prototype centre are
# stage 19's). POSTFILTER=0 ships stage 19 without it.
# Stage 25 fits a residual MLP codebook map (width 512) for layers 2 and 3 to the post-filtered
# stage 19's encoder residuals (python -m uniaudio_cli.train.refit_maps, 2,000 steps, encoder,
# decoder and layer 1 frozen), then trains the whole codec from it with a fresh pitch head, lr 5e-5
# cosine over 6,000 steps, bf16 autocast. STAGE25=0 stops after stage 19 with its post-filter.
# Stage 27 resumes stage 25's full training state (a copy of its run) with the cosine stretched to
# 12,000 steps (the learning rate back up to 2.75e-5) and a differentiable STOI loss, weight 5
# (--w-stoi). Its last checkpoint (step 12,000), written with the plain head and the post-filter
# at 1.1, was the default until stage 29. STAGE27=0 stops after stage 25.
# Stages 28 and 29 resume stage 27's full training state (copies of the run) with the STOI weight
# doubled to 10: the cosine stretched to 18,000 steps (the learning rate back up to 1.6e-5), then to
# 24,000 (back up to 1.1e-5). Stage 29's last checkpoint (step 24,000), written with the plain
# head and the post-filter at 1.1, was the default until stage 32.
# STAGE28=0 stops after stage 27.
# Stage 31 resumes stage 29's full training state (a copy) with the cosine stretched to 30,000
# (back up to 9.2e-6). Stage 32 starts a new run from stage 31's last checkpoint with its harmonic
# head (fresh optimiser and consistency head), lr 3e-5 cosine over 6,000 steps, STOI weight 10.
# Stage 32's last checkpoint (step 6,000), written with the plain head and the post-filter at 1.1,
# was the default until stage 34. STAGE31=0 stops after stage 29.
# Stages 33 and 34 repeat stage 32's restart, each from the last checkpoint of the stage before
# (fresh optimiser, lr 3e-5 cosine over 6,000 steps, STOI weight 10). The committed default is
# stage 34's last checkpoint (step 6,000), written with the plain head and the post-filter at 1.1;
# the prototype centre is remade. STAGE33=0 stops after stage 32.
# Stage 37 trains only the decoder of stage 34's shipped weights (--decoder-only: every code, and so
# every classification result and the prototype centre, stays stage 34's) with the excess loss
# (--w-excess 15, energy the output adds over the target), lr 5e-5 cosine over 4,500 steps; the
# committed default is its last checkpoint, written with the plain head and the post-filter at 1.1.
# STAGE37=0 stops after stage 34.
# Stage 42 trains stage 37's decoder again (--decoder-only: the codes stay stage 34's) with the same
# losses and half the training segments played 0.9-1.1 times as fast (--speed-perturb 0.5), lr 5e-5
# cosine over 4,500 steps; the committed default is its last checkpoint, written with the plain
# head and the post-filter at 1.05. STAGE42=0 stops after stage 37.
# Stage 46 trains stage 42's decoder again (--decoder-only: the codes stay stage 34's) with stage 42's
# recipe and a quarter of the segments band-limited as 8 kHz recordings are (--band-limit 0.25), lr
# 5e-5 cosine over 4,500 steps; the committed default is its last checkpoint, written with the plain
# head and the post-filter on the spectral envelope (exponent 1.1 on the log magnitude averaged over
# 17 bins, --contrast 1.1 --contrast-smooth 17; chosen on the training clips with
# bench/postfilter.py --smooth 0 13 17 25). STAGE46=0 stops after stage 42.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
V1=${V1:-runs/v1}
RUN=${RUN:-runs/v2}

if [ "${FROM_SCRATCH:-0}" = 1 ]; then
    [ -f .data/synth/metadata.csv ] || python -m uniaudio_cli.train.synth_data .data/synth --clips 1500 --seed 0
    uniaudio train-codec --data "$DATA" .data/synth --out "$V1/run" --resume \
        --steps 2500 --gan-start 2500 --time-limit 7000 --quiet
    V1_CODEC="$V1/run/codec-best"
else
    V1_CODEC="$V1/codec"
    if [ ! -f "$V1_CODEC/model.safetensors" ]; then
        mkdir -p "$V1_CODEC"
        for f in config.json model.safetensors; do
            git show "a28724e:checkpoints/llm-codec-smollm2/$f" > "$V1_CODEC/$f"
        done
    fi
fi

# train_stage RUN ARGS...: train (resuming RUN when it holds a training state), then export its
# best checkpoint to RUN/export as float16.
train_stage() {
    local run=$1 resume=()
    shift
    [ -f "$run/train_state.safetensors" ] && resume=(--resume)
    uniaudio train-codec --data "$DATA" --out "$run" "${resume[@]}" "$@" \
        --checkpoint-every 500 --time-limit "${TIME_LIMIT:-6000}" --quiet
    python -m uniaudio_cli.codec.export "$run/codec-best" "$run/export" --dtype float16 --force
}

# pitch_stage RUN INIT LR "STEPS STOP"...: a whole-codec run with the pitch loss, new from INIT's
# weights (lr LR cosine; the array GROW adds options to that start, e.g. --fine-layers 10), through
# schedule segments: --steps STEPS until step STOP. Each segment resumes where a kill left it, and
# one already done takes no step. Exports the last checkpoint with the plain head to RUN/export.
GROW=()
pitch_stage() {
    local run=$1 init=$2 lr=$3 segment steps stop
    shift 3
    for segment in "$@"; do
        read -r steps stop <<< "$segment"
        local start=(--resume)
        [ -f "$run/train_state.safetensors" ] || start=(--init-from "$init" --harmonic "${GROW[@]}" \
            --batch-size 8 --lr "$lr" --lr-schedule cosine --w-stft 5 --no-gan)
        uniaudio train-codec --data "$DATA" --out "$run" "${start[@]}" --steps "$steps" \
            --stop-at "$stop" --checkpoint-every 500 --quiet
    done
    python -m uniaudio_cli.codec.export "$run/codec" "$run/export" --drop-oscillator --dtype float16 --force
}

# decoder_stage RUN INIT LR STEPS [ARGS...]: the decoder alone (--decoder-only) from INIT's weights,
# batch 8, lr LR cosine over STEPS, log-magnitude weight 5, no GAN (stages 3 to 6).
decoder_stage() {
    local run=$1 init=$2 lr=$3 steps=$4
    shift 4
    train_stage "$run" --init-from "$init" --decoder-only "$@" \
        --batch-size 8 --lr "$lr" --lr-schedule cosine --w-stft 5 --no-gan --steps "$steps"
}

# continue_stage RUN FROM STEPS [ARGS...]: FROM's full training state continued in a copy at RUN
# (made once), its cosine stretched to end at STEPS; ARGS change the recipe (e.g. --w-stoi 10).
continue_stage() {
    local run=$1 from=$2 steps=$3
    shift 3
    [ -f "$run/train_state.safetensors" ] || { mkdir -p "$run" && cp -r "$from/." "$run/"; }
    uniaudio train-codec --data "$DATA" --out "$run" --resume "$@" --steps "$steps" --stop-at "$steps" \
        --checkpoint-every 500 --quiet
}

# export_pf RUN [P [N]]: RUN's last checkpoint written as the default is shipped (plain head,
# post-filter at P, 1.1 unless given, on the envelope over N bins, 0 (the whole magnitude) unless
# given; float16) to RUN/export-pf, which becomes FINAL.
export_pf() {
    python -m uniaudio_cli.codec.export "$1/codec" "$1/export-pf" --drop-oscillator --contrast "${2:-1.1}" \
        --contrast-smooth "${3:-0}" --dtype float16 --force
    FINAL="$1/export-pf"
}

# finish: the last stage run becomes the default, with its prototype centre remade.
finish() {
    local out=checkpoints/llm-codec-smollm2
    mkdir -p "$out" && cp "$FINAL/config.json" "$FINAL/model.safetensors" "$out/"
    python checkpoints/make_prototype_center.py --codec "$out"
    exit 0
}

train_stage "$RUN" --init-from "$V1_CODEC" --fine-layers 4 \
    --batch-size 8 --lr 2e-4 --lr-schedule cosine --w-stft 5 --no-gan --steps "${STEPS:-12000}"
FINAL="$RUN/export"

[ "${STAGE3:-1}" = 1 ] || finish
RUN3=${RUN3:-runs/v2-decoder}
decoder_stage "$RUN3" "$RUN/export" 1e-4 "${STEPS3:-11000}"
FINAL="$RUN3/export"

[ "${STAGE4:-1}" = 1 ] || finish
RUN4=${RUN4:-runs/v2-decoder6}
decoder_stage "$RUN4" "$RUN3/export" 1e-4 "${STEPS4:-10000}" --fine-layers 6
FINAL="$RUN4/export"

[ "${STAGE5:-1}" = 1 ] || finish
RUN5=${RUN5:-runs/v2-decoder-long}
decoder_stage "$RUN5" "$RUN4/export" 7e-5 "${STEPS5:-12000}"
FINAL="$RUN5/export"

[ "${STAGE6:-1}" = 1 ] || finish
RUN6=${RUN6:-runs/v2-decoder8}
decoder_stage "$RUN6" "$RUN5/export" 1e-4 "${STEPS6:-11000}" --fine-layers 8
FINAL="$RUN6/export"

[ "${STAGE7:-1}" = 1 ] || finish
RUN7=${RUN7:-runs/v2-pitch}
train_stage "$RUN7" --init-from "$RUN6/export" --harmonic --batch-size 8 --lr 1e-4 \
    --lr-schedule cosine --w-stft 5 --no-gan --steps 4000 --stop-at "${STOP7:-3500}"
python -m uniaudio_cli.codec.export "$RUN7/codec" "$RUN7/export-plain" --drop-oscillator --dtype float16 --force
FINAL="$RUN7/export-plain"

[ "${STAGE8:-1}" = 1 ] || finish
for segment in "9500 5843" "15000 6004" "16500 ${STOP8:-14000}"; do
    read -r steps stop <<< "$segment"
    uniaudio train-codec --data "$DATA" --out "$RUN7" --resume --steps "$steps" \
        --stop-at "$stop" --checkpoint-every 500 --quiet
done
python -m uniaudio_cli.codec.export "$RUN7/codec" "$RUN7/export8" --drop-oscillator --dtype float16 --force
FINAL="$RUN7/export8"

[ "${STAGE9:-1}" = 1 ] || finish
RUN9=${RUN9:-runs/stage9}
pitch_stage "$RUN9" "$RUN7/export8" 6e-5 "8000 3907" "7000 7000"
FINAL="$RUN9/export"

[ "${STAGE10:-1}" = 1 ] || finish
RUN10=${RUN10:-runs/stage10}
# From stage 9's last checkpoint with its harmonic head (its pitch head kept).
pitch_stage "$RUN10" "$RUN9/codec" 6e-5 "6500 865" "5000 5000"
FINAL="$RUN10/export"

[ "${STAGE11:-1}" = 1 ] || finish
RUN11=${RUN11:-runs/stage11}
pitch_stage "$RUN11" "$RUN10/codec" 6e-5 "4500 4500"
FINAL="$RUN11/export"

[ "${STAGE12:-1}" = 1 ] || finish
RUN12=${RUN12:-runs/stage12}
pitch_stage "$RUN12" "$RUN11/codec" 1.2e-4 "4500 4500"
FINAL="$RUN12/export"

[ "${STAGE13:-1}" = 1 ] || finish
RUN13=${RUN13:-runs/stage13}
# From stage 12's export (plain head, float16): what was committed, and what stage 13 started from.
pitch_stage "$RUN13" "$RUN12/export" 1.2e-4 "4500 4500"
FINAL="$RUN13/export"
[ "${STAGE14:-1}" = 1 ] || finish
RUN14=${RUN14:-runs/stage14}
pitch_stage "$RUN14" "$RUN13/export" 1.2e-4 "4500 510" "2200 2200" "4500 4500"
[ "${STAGE15:-1}" = 1 ] || finish
RUN15=${RUN15:-runs/stage15}
GROW=(--fine-layers 10)
pitch_stage "$RUN15" "$RUN14/codec" 1.2e-4 "4000 4000" "8000 7034" "8000 8000"
GROW=()
python -m uniaudio_cli.codec.export "$RUN15/codec" "$RUN15/export-euclidean" --drop-oscillator \
    --residual-search euclidean --dtype float16 --force
FINAL="$RUN15/export-euclidean"
[ "${STAGE16:-1}" = 1 ] || finish
RUN16=${RUN16:-runs/stage16}
GROW=(--residual-search euclidean)
pitch_stage "$RUN16" "$RUN15/codec" 5e-5 "2400 2400"
FINAL="$RUN16/export"
[ "${STAGE17:-1}" = 1 ] || finish
RUN17=${RUN17:-runs/stage17}
pitch_stage "$RUN17" "$RUN16/codec" 5e-5 "6000 6000"
FINAL="$RUN17/export"
[ "${STAGE18:-1}" = 1 ] || finish
RUN18=${RUN18:-runs/stage18}
GROW=(--residual-search euclidean --fine-layers 12)
pitch_stage "$RUN18" "$RUN17/codec" 1.2e-4 "8000 7219"
FINAL="$RUN18/export"
[ "${STAGE19:-1}" = 1 ] || finish
RUN19=${RUN19:-runs/stage19}
GROW=(--residual-search euclidean)
pitch_stage "$RUN19" "$RUN18/codec" 5e-5 "6000 6000"
FINAL="$RUN19/export"
[ "${POSTFILTER:-1}" = 1 ] || finish
python -m uniaudio_cli.codec.export "$FINAL" "$RUN19/export-pf" --contrast 1.1 --dtype float16 --force
FINAL="$RUN19/export-pf"
[ "${STAGE25:-1}" = 1 ] || finish
RUN25=${RUN25:-runs/stage25}
[ -f "$RUN25-refit/model.safetensors" ] || python -m uniaudio_cli.train.refit_maps --codec "$FINAL" \
    --data "$DATA" --out "$RUN25-refit" --hidden 512 --steps 2000
GROW=(--residual-search euclidean --bf16)
pitch_stage "$RUN25" "$RUN25-refit" 5e-5 "6000 6000"
FINAL="$RUN25/export"
[ "${STAGE27:-1}" = 1 ] || finish
RUN27=${RUN27:-runs/stage27}
continue_stage "$RUN27" "$RUN25" 12000 --w-stoi 5
export_pf "$RUN27"
[ "${STAGE28:-1}" = 1 ] || finish
RUN28=${RUN28:-runs/stage28}
continue_stage "$RUN28" "$RUN27" 18000 --w-stoi 10
RUN29=${RUN29:-runs/stage29}
# The state carries --w-stoi 10 on; the resume only stretches the cosine to the new end.
continue_stage "$RUN29" "$RUN28" 24000
export_pf "$RUN29"
[ "${STAGE31:-1}" = 1 ] || finish
RUN31=${RUN31:-runs/stage31}
continue_stage "$RUN31" "$RUN29" 30000
RUN32=${RUN32:-runs/stage32}
GROW=(--residual-search euclidean --bf16 --w-stoi 10)
pitch_stage "$RUN32" "$RUN31/codec" 3e-5 "6000 6000"
export_pf "$RUN32"
[ "${STAGE33:-1}" = 1 ] || finish
RUN33=${RUN33:-runs/stage33}
RUN34=${RUN34:-runs/stage34}
pitch_stage "$RUN33" "$RUN32/codec" 3e-5 "6000 6000"
pitch_stage "$RUN34" "$RUN33/codec" 3e-5 "6000 6000"
export_pf "$RUN34"
[ "${STAGE37:-1}" = 1 ] || finish
RUN37=${RUN37:-runs/stage37}
GROW=(--residual-search euclidean --bf16 --w-stoi 10 --w-excess 15 --decoder-only)
pitch_stage "$RUN37" "$FINAL" 5e-5 "4500 4500"
export_pf "$RUN37"
[ "${STAGE42:-1}" = 1 ] || finish
RUN42=${RUN42:-runs/stage42}
GROW=(--residual-search euclidean --bf16 --w-stoi 10 --w-excess 15 --speed-perturb 0.5 --decoder-only)
pitch_stage "$RUN42" "$FINAL" 5e-5 "4500 4500"
export_pf "$RUN42" 1.05
[ "${STAGE46:-1}" = 1 ] || finish
RUN46=${RUN46:-runs/stage46}
GROW=(--residual-search euclidean --bf16 --w-stoi 10 --w-excess 15 --speed-perturb 0.5 --band-limit 0.25 --decoder-only)
pitch_stage "$RUN46" "$FINAL" 5e-5 "4500 4500"
export_pf "$RUN46" 1.1 17
finish
