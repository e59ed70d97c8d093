"""A results table from finished run directories (figures read from their metrics.json and
environment.json), for runs that have no peer to race, such as a preset's CPU run.

    python bench/runs_table.py NAME "TITLE" RUN_DIR [RUN_DIR ...]

Writes bench/results/NAME.json and .md (BENCHMARKS.md picks them up)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchlib import hardware, write_results


def main() -> None:
    name, title, *folders = sys.argv[1:]
    rows = []
    for folder in map(Path, folders):
        metrics = json.loads((folder / "metrics.json").read_text())
        environment = json.loads((folder / "environment.json").read_text())
        rows.append({"model": metrics["model"], "dataset": metrics["dataset"], "train_size": metrics["train_size"],
                     "epochs": metrics["epochs"], "test_accuracy": metrics.get("test_accuracy"),
                     "train_time_s": metrics.get("train_time_s"), "test_time_s": metrics.get("test_time_s"),
                     "precision": (metrics.get("fast_path") or {}).get("precision", "fp32"),
                     "hardware": environment.get("gpu") or f"{environment['cpu']}, {environment['cpu_count']} cores",
                     "command": "cnnlab " + environment["command"].split("cnnlab", 1)[-1].strip()})
    lines = [f"# {title}", "", "| model | dataset | training images | epochs | test accuracy | training s | "
             "test-set inference s | precision | hardware | command |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['model']} | {row['dataset']} | {row['train_size']:,} | {row['epochs']} | "
                     f"{row['test_accuracy']:.2%} | {row['train_time_s']:.1f} | {row['test_time_s'] or 0:.1f} | "
                     f"{row['precision']} | {row['hardware']} | `{row['command']}` |")
    # the machine that writes the table: run it where the runs trained (each row names its CPU model too)
    write_results(name, {"hardware": hardware(), "rows": rows}, "\n".join(lines))


if __name__ == "__main__":
    main()
