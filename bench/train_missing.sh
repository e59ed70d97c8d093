#!/usr/bin/env bash
# Shared by the reproduction scripts: train each "MODEL EPOCHS" item into OUT/<model>-<epochs>ep with
# EXTRA overrides, skipping runs whose directory is already complete.
# Usage: bench/train_missing.sh OUT "EXTRA OVERRIDES" "model epochs" ["model epochs" ...]
set -euo pipefail
out=$1 extra=$2
shift 2
for item in "$@"; do
  read -r model epochs <<< "$item"
  dir="$out/$(echo "$model" | tr / -)-${epochs}ep"
  if [ -f "$dir/report.html" ] && grep -q '"status": "complete"' "$dir/metrics.json"; then
    echo "skip $model (complete)"; continue
  fi
  # shellcheck disable=SC2086  # EXTRA is a list of key=value words
  cnnlab train "$model" $extra "train.epochs=$epochs" --out "$dir" --quiet
done
