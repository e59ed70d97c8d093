#!/usr/bin/env bash
# Every lab report's study at its recipe on one GPU within minutes: see bench/reproduce_gpu.py.
# Usage (a session lent a GPU, from the repository root): bash bench/reproduce_gpu.sh [--workers 12] [--seeds 3]
set -euo pipefail
export CNNLAB_DATA=${CNNLAB_DATA:-../shared/datasets}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 bench/reproduce_gpu.py "$@"
