#!/usr/bin/env bash
# Copy the small evidence files of every finished reproduction run (config, metrics, history,
# environment) into docs/reproduction-runs/, then rebuild docs/reproduction.md from those copies,
# so the table can be regenerated and checked from the repository alone.
set -euo pipefail
dest=docs/reproduction-runs
mkdir -p "$dest"
for run in "$@"; do
  for dir in "$run"/*/; do
    [ -f "$dir/metrics.json" ] || continue
    grep -q '"status": "running"' "$dir/metrics.json" && continue
    name=$(basename "$dir")
    mkdir -p "$dest/$name"
    cp "$dir"/{config.yaml,metrics.json,history.csv,environment.json} "$dest/$name/"
  done
done
python3 bench/reproduction_table.py "$dest" --out docs/reproduction.md --append bench/reproduction_notes.md
