#!/usr/bin/env bash
# Train the lab reports' CIFAR-10 models on cifar10-jpeg (the offline JPEG copy: results are labelled
# cifar10-jpeg) with each report's recipe, on this machine's CPU. The reports used 10-100 epochs on a
# GPU; on 2 CPU cores the epochs below are what fits, and docs/reproduction.md says so in each row.
# Models not listed here were not run on CPU (minutes to tens of minutes per epoch): run them with
# the suites in suites/ on a GPU.
set -euo pipefail
OUT=${1:-runs/reproduction-cifar10}
export CNNLAB_DATA=${CNNLAB_DATA:-../shared/datasets}
RUNS=(
  "keras/cifar10/model1 5" "torch/cifar10/model1 3" "cifar10/dense 2" "cifar10/bn-cnn 2"
  "report004/baseline 1" "cifar10/bn-cnn-zscore 2" "cifar10/bn-cnn-augment 2"
  "keras/cifar10/model6 1" "cifar10/cnn-batchnorm 1" "report004/narrow 1" "report004/wide 1"
  "cifar10/bn-cnn-l2 2" "report004/three-convs 1" "report004/three-blocks 1" "report004/three-blocks-augment 1"
  "report004/three-blocks-schedule 1" "report004/three-blocks-dropout 1" "report004/three-blocks-batchnorm 1"
  "cifar10/cnn 1" "cifar10/cnn-dropout 1" "torch/cifar10/model4 1" "torch/cifar10/model5 1"
  "keras/cifar10/model7 1" "keras/cifar10/model9 1" "keras/cifar10/model8 1"
  "torch/cifar10/praisnet 1" "torch/cifar10/praisynet 1" "keras/cifar10/model5 1"
)
bash "$(dirname "$0")/train_missing.sh" "$OUT" "dataset.name=cifar10-jpeg" "${RUNS[@]}"
