#!/usr/bin/env bash
# Train every MNIST model of the lab reports (report 000/002, Keras and PyTorch parts) with the
# report's recipe on this machine's CPU. The reports used 20 epochs; on 2 CPU cores the larger
# models cost minutes per epoch, so EPOCHS below gives the epochs actually used per model.
# Each run directory holds the measured figures; bench/reproduction_table.py turns them into the table.
set -euo pipefail
OUT=${1:-runs/reproduction}
export CNNLAB_DATA=${CNNLAB_DATA:-../shared/datasets}
RUNS=(
  "keras/mnist/model1 20" "torch/mnist/model1 20" "keras/mnist/model4 3" "torch/mnist/model3 3"
  "keras/mnist/model2 2" "keras/mnist/model3 2" "torch/mnist/model2 2"
  "keras/mnist/model5 1" "torch/mnist/model3 12" "torch/mnist/model4 12" "torch/mnist/model4 20"
)
bash "$(dirname "$0")/train_missing.sh" "$OUT" "" "${RUNS[@]}"
