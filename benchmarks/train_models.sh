#!/usr/bin/env bash
# Train and evaluate with the recipe of issue 14, in one of two configurations:
#   shipped  - permissive-licence training images only: the only weights the package may ship
#   research - every dev training image, non-commercial ones included: NEVER ship these weights
# Validation and test always use every image of their split (evaluating is not redistributing),
# and `edgecxr eval` reports every metric per source (mhh, ieee8023, nih, sbu).
# Usage: benchmarks/train_models.sh CONFIG [SEED] [ARCHS]   e.g. benchmarks/train_models.sh shipped 0 covid-densenet
# Resumable: rerun the same command after an interruption (runs/*/last.pt).
set -euo pipefail
CONFIG=${1:?shipped or research}
SEED=${2:-0}
ARCHS=${3:-"covid-densenet densenet121"}
EPOCHS=${EPOCHS:-30}
AUG=${AUG:-strong}          # augmentation strength: light | strong | robust | grain (see benchmarks/ablation.md)
LS=${LS:-0.1}               # label smoothing
EMA=${EMA:-0.99}            # weight averaging (EMA decay; 0 = off)
MIXUP=${MIXUP:-0}           # MixUp alpha (0 = off; see benchmarks/ablation.md)
EQ=""; [ "${EQUALIZE:-0}" = 1 ] && EQ=--equalize   # histogram equalisation in preprocessing
SMOOTH=${SMOOTH:-0}         # Gaussian low-pass of the input in preprocessing, sigma in px (0 = off; benchmarks/noise_probe.py)
BAL=--balanced; [ "${BALANCED:-1}" = 0 ] && BAL=--no-balanced   # class-balanced sampling (paper: balanced vs unbalanced)
CW=""; [ "${CLASS_WEIGHTED:-0}" = 1 ] && CW=--class-weighted-loss   # inverse-frequency class weights in the loss
FRACTION=${FRACTION:-1.0}   # share of training patients per class and source (size sweep: 0.25 / 0.5 / 1.0)
EXCLUDE=${EXCLUDE:-}         # training sources to leave out, space-separated (e.g. sbu); val and test keep them
XS=""; for S in $EXCLUDE; do XS="$XS --exclude-source $S"; done
TAG=${TAG:-}
DATA=${DATA:-../shared/cxr/dev/MANIFEST.csv}
EDGECXR=${EDGECXR:-edgecxr}
THREADS=${THREADS:-2}       # torch CPU threads of the training process
WORKERS=${WORKERS:-0}       # data-loader processes (a GPU machine: 1-2 per concurrent run; benchmarks/campaign.py)
case "$CONFIG" in
  shipped) FLAG=--permissive-only ;;
  research) FLAG=--no-permissive-only ;;
  *) echo "CONFIG must be shipped or research" >&2; exit 2 ;;
esac
for ARCH in $ARCHS; do
  RUN="runs/$CONFIG-$ARCH$TAG-s$SEED"
  $EDGECXR train "$DATA" $FLAG --arch "$ARCH" --epochs "$EPOCHS" --batch 16 --lr 1e-3 $BAL $CW --fraction "$FRACTION" $XS \
    --augment "$AUG" --label-smoothing "$LS" --mixup "$MIXUP" --ema "$EMA" --select macro_f1 --seed "$SEED" --threads "$THREADS" --workers "$WORKERS" $EQ --smooth "$SMOOTH" --out "$RUN"
  $EDGECXR eval "$RUN/best.safetensors" "$DATA" --split test --out "$RUN/eval-test"
  $EDGECXR eval "$RUN/best.safetensors" "$DATA" --split val --out "$RUN/eval-val" --n-boot 200
done
