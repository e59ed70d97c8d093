#!/usr/bin/env bash
# Train zoo models at their report's own recipe with 3 seeds, one model at a time (CIFAR-10 as cifar10-jpeg),
# then copy the small evidence files (config, metrics, history; environment of each seed) of the aggregate and of
# every seed into docs/reproduction-runs/ and rebuild docs/reproduction.md from them. Interrupted? Run it again:
# complete seeds are skipped and an interrupted one resumes from its checkpoint.
# Usage: CNNLAB_DATA=../shared/datasets bash bench/reproduce_seeds.sh MODEL[:SEEDS] [MODEL[:SEEDS] ...]
# SEEDS defaults to 3; give 1 for a model whose run costs more than 10 minutes here (bench/results/epoch_costs.md).
# To keep one core free for other work: OMP_NUM_THREADS=1 taskset -c 1 bash bench/reproduce_seeds.sh ...
set -euo pipefail
out=runs/reproduction
for entry in "$@"; do
  model="${entry%%:*}"
  seeds=3
  [[ "$entry" == *:* ]] && seeds="${entry##*:}"
  name="$(echo "$model" | tr / -)-recipe"
  dataset=()
  case "$model" in *cifar10*|report004/*) dataset=(dataset.name=cifar10-jpeg) ;; esac
  if ! cnnlab train "$model" "${dataset[@]}" --seeds "$seeds" --out "$out/$name" --quiet; then
    echo "failed: $model" >&2
    continue
  fi
  dest="docs/reproduction-runs/$name"
  mkdir -p "$dest"
  cp "$out/$name"/{config.yaml,metrics.json,history.csv} "$dest/"
  cp "$out/$name/seed-0/environment.json" "$dest/"  # the hardware and the command, for the table
  for seed in "$out/$name"/seed-*/; do
    mkdir -p "$dest/$(basename "$seed")"
    cp "$seed"/{config.yaml,metrics.json,history.csv,environment.json} "$dest/$(basename "$seed")/"
  done
done
python3 bench/reproduction_table.py docs/reproduction-runs --out docs/reproduction.md \
  --append docs/reproduction-runs/*/sweep.md bench/reproduction_notes.md
