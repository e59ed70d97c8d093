#!/usr/bin/env bash
# Issue 17's GPU measurements in one run of at most 8 minutes (bench/gpu_bench.py says what and how):
# fast/mnist over 5 seeds (target: 99% in under 1 s of training), fast/cifar10 against airbench94 on the
# same cifar10-jpeg arrays over 5 seeds each in rotating order, and transfer/efficientnet-lite0-finetune
# at 224 px (one seed; target >= 97%). Until it has run on a GPU, BENCHMARKS.md says "not measured".
#
# Preparation, in the session lent a GPU, before any device call (no device time; needs the registry):
#   bash bench/prepare_gpu_carry.sh     # fills the git-ignored .gpu-carry/ (data + wheels), prints its size
#                                       # (2026-12-02: 48 MiB, 51 MiB with the checkout, of the 64 MiB limit)
#   OMP_NUM_THREADS=1 taskset -c 0 bash bench/gpu.sh --smoke --budget-s 1800   # optional CPU check (3-6 min on
#                                       # one core; tiny subsets; results to a temporary folder, never bench/results)
# The one device call (about 1-2 min of machine start + at most 8 min of script in 15 min of device time):
#   run(command="bash bench/gpu.sh", carry=[".gpu-carry"], timeout_s=540)
# then give_back. Its files (gpu_fast_mnist, gpu_fast_cifar10, gpu_transfer as .json + .md, and
# gpu_bench.log) come back under files_at: copy the .json and .md into bench/results/ and run
# `python bench/collect_benchmarks.py`. A section that overran its budget says so in its file.
# Budgets (bench/gpu_bench.py --help): mnist at most 70 s, cifar10 at most 210 s, the transfer the rest of
# 470 s (expect about 3 minutes: it may be stopped before its 10 epochs, and then reports the epochs done and
# their validation accuracy, no test figure). `bash bench/gpu.sh --sections transfer` runs it alone.
#
# On the GPU machine: carried wheels go to $SITE (the device README's recipe), cnnlab runs from src/,
# CNNLAB_DATA is the carried data folder, and each section's files are also written to $OUT as it ends.
set -euo pipefail
started=$(date +%s)
cd "$(dirname "$0")/.."
CARRY=.gpu-carry
SITE=${TMPDIR:-/tmp}/cnnlab-gpu-site
TOTAL_S=470  # of the issue's 8 minutes, 10 s left for what follows the Python run

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "nvidia-smi: not found"
# the carried wheels this Python takes: pure-Python ones and those built for its version (cp312 there)
python_tag=$(python3 -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
mapfile -t wheels < <(compgen -G "$CARRY/wheels/*-none-any.whl"; compgen -G "$CARRY/wheels/*-$python_tag-*.whl")
if [ "${#wheels[@]}" -gt 0 ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${wheels[@]}"
  export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
if [ -d "$CARRY/data" ]; then
  export CNNLAB_DATA=$PWD/$CARRY/data
else
  export CNNLAB_DATA=${CNNLAB_DATA:-../shared/datasets}
fi
export CNNLAB_GPU_LAUNCHER="bash bench/gpu.sh${*:+ $*}"
copy=()
log=/dev/null
if [ -n "${OUT:-}" ]; then
  copy=(--copy-to "$OUT")
  log=$OUT/gpu_bench.log
fi
budget=$((TOTAL_S - ($(date +%s) - started)))
python3 bench/gpu_bench.py --budget-s "$budget" "${copy[@]}" "$@" 2>&1 | tee "$log"
echo "bench/gpu.sh: $(($(date +%s) - started)) s"
