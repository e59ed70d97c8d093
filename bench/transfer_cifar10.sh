#!/usr/bin/env bash
# EfficientNet-Lite0 (ImageNet weights) on cifar10-jpeg, sized for a 2-core CPU: images resized to
# 128 px instead of the backbone's 224 (about 3x less compute), fine-tuning on a 10,000-image sample
# for one epoch; frozen features also at 224 px on a 20,000-image training sample. On a GPU, drop model.input_size, dataset.subset and train.epochs for the full recipe.
# Skips runs already complete; then python bench/transfer_table.py writes docs/transfer.md's table.
set -euo pipefail
export CNNLAB_DATA=${CNNLAB_DATA:-../shared/datasets}
OUT=${1:-runs/transfer}
[ -f "$OUT/features-lite0-128px/metrics.json" ] ||
  cnnlab features efficientnet-lite0 --dataset cifar10-jpeg --input-size 128 --out "$OUT/features-lite0-128px" --quiet
# the backbone's own 224 px, on a 20,000-image training sample (the whole test set): 3x the compute per image
[ -f "$OUT/features-lite0-224px-20k/metrics.json" ] ||
  cnnlab features efficientnet-lite0 --dataset cifar10-jpeg --subset 20000 --out "$OUT/features-lite0-224px-20k" --quiet
train() {  # train OUT_NAME ARGS...
  local dir="$OUT/$1"; shift
  if [ -f "$dir/report.html" ] && grep -q '"status": "complete"' "$dir/metrics.json"; then return; fi
  cnnlab train "$@" --out "$dir" --quiet
}
train lite0-linear-128px transfer/efficientnet-lite0-linear dataset.name=cifar10-jpeg model.input_size=128
train lite0-finetune-128px-10k-1ep transfer/efficientnet-lite0-finetune dataset.name=cifar10-jpeg model.input_size=128 \
  dataset.subset=10000 train.epochs=1
# one epoch is mostly the recipe's warm-up: two epochs with a 0.3-epoch warm-up
train lite0-finetune-128px-10k-2ep transfer/efficientnet-lite0-finetune dataset.name=cifar10-jpeg model.input_size=128 \
  dataset.subset=10000 train.epochs=2 schedule.warmup_epochs=0.3
