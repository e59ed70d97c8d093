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
# report 001's batch-size study (a sweep suite): its table, with the report's figures beside ours
sweeps=()
for run in "$@"; do
  for sweep in "$run"/*/sweep.md; do
    [ -f "$sweep" ] || continue
    name=$(basename "$(dirname "$sweep")")
    mkdir -p "$dest/$name"
    # a section of docs/reproduction.md: one heading level down, without the run folder's figure link
    { echo "## $name (\`cnnlab suite suites/$name.yaml\`)"; echo; sed -e '1d' -e '/^!\[/d' "$sweep"; } > "$dest/$name/sweep.md"
    sweeps+=("$dest/$name/sweep.md")
  done
done
python3 bench/reproduction_table.py "$dest" --out docs/reproduction.md --append "${sweeps[@]}" bench/reproduction_notes.md
