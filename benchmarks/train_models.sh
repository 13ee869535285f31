#!/usr/bin/env bash
# Reproduce the shipped model and its baseline (from scratch, CPU, permissive-licence images only).
# Usage: benchmarks/train_models.sh [SEED]   (needs ../shared/cxr beside the checkout)
set -euo pipefail
SEED=${1:-0}
DATA=${DATA:-../shared/cxr/dev/MANIFEST.csv}
for ARCH in covid-densenet densenet121; do
  edgecxr train "$DATA" --permissive-only --arch "$ARCH" --epochs 14 --batch 16 --lr 1e-3 --balanced \
    --seed "$SEED" --out "runs/$ARCH-s$SEED"
  edgecxr eval "runs/$ARCH-s$SEED/best.safetensors" "$DATA" --permissive-only --split test \
    --out "runs/$ARCH-s$SEED/eval-test"
done
