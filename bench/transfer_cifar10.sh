#!/usr/bin/env bash
# EfficientNet-Lite0 (ImageNet weights) on cifar10-jpeg, sized for a 2-core CPU: frozen features at
# the backbone's 224 px and at 128 px on all 50,000 training images; a linear head trained on cached
# 128 px features; full fine-tuning at 128 px (about 3x less compute than 224) for 2 epochs instead
# of the recipe's 10; and one-epoch recipe comparisons on a 10,000-image sample (batch-norm
# statistics kept or updated). On a GPU, drop model.input_size and train.epochs for the full recipe.
# Skips runs already complete; then python bench/transfer_table.py writes docs/transfer.md's table.
set -euo pipefail
export CNNLAB_DATA=${CNNLAB_DATA:-../shared/datasets}
OUT=${1:-runs/transfer}
features() {  # features OUT_NAME ARGS...
  local dir="$OUT/$1"; shift
  [ -f "$dir/metrics.json" ] || cnnlab features efficientnet-lite0 --dataset cifar10-jpeg "$@" --out "$dir" --quiet
}
features features-lite0-224px
features features-lite0-128px --input-size 128
train() {  # train OUT_NAME ARGS...
  local dir="$OUT/$1"; shift
  if [ -f "$dir/report.html" ] && grep -q '"status": "complete"' "$dir/metrics.json"; then return; fi
  cnnlab train "$@" --out "$dir" --quiet
}
train lite0-linear-128px transfer/efficientnet-lite0-linear dataset.name=cifar10-jpeg model.input_size=128
train lite0-finetune-128px-full-2ep transfer/efficientnet-lite0-finetune dataset.name=cifar10-jpeg model.input_size=128 \
  train.epochs=2 schedule.warmup_epochs=0.3
train lite0-finetune-160px-full-2ep transfer/efficientnet-lite0-finetune dataset.name=cifar10-jpeg model.input_size=160 \
  train.epochs=2 schedule.warmup_epochs=0.3
study() {  # study RUN_NAME OVERRIDES...: one epoch on a 10,000-image sample, 2,000 test images
  local name=$1; shift
  train "bn-study-9k/$name" transfer/efficientnet-lite0-finetune dataset.name=cifar10-jpeg model.input_size=128 \
    dataset.subset=10000 dataset.test_subset=2000 train.epochs=1 schedule.warmup_epochs=0.2 "$@"
}
study A model.backbone_lr_factor=0.1 model.batchnorm=train
study B model.backbone_lr_factor=1.0 optimizer.lr=3e-4 model.batchnorm=train
study C model.backbone_lr_factor=1.0 optimizer.lr=3e-4 model.batchnorm=frozen
study D model.backbone_lr_factor=1.0 optimizer.name=sgd optimizer.lr=0.02 optimizer.momentum=0.9 \
  optimizer.nesterov=true optimizer.weight_decay=5e-5 model.batchnorm=train
study E model.backbone_lr_factor=0.1 model.batchnorm=frozen
study F model.backbone_lr_factor=1.0 optimizer.lr=1e-3 model.batchnorm=frozen
