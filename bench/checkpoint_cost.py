"""What a checkpoint costs: time per checkpoint write against time per training epoch.

Two cases, each trained for 3 epochs by `cnnlab train` (a checkpoint after every epoch, as always):
  digits        examples/digits.yaml (the offline default: a small CNN on 1,293 8x8 images)
  cifar10/model7  keras/cifar10/model7 on a 1,000-image cifar10-jpeg subset
The epoch time is the median of the 3 epochs (history.csv, checkpoint not included). The write time is
the median of 3 writes of the run's final checkpoint through training's own `Checkpointer` (serialise,
fsync, two renames) into the same folder; the checkpoint's size is reported too. The ratio says what
share of an epoch a checkpoint after it adds. Takes well under 2 minutes on 2 cores.

    CNNLAB_DATA=../shared/datasets python bench/checkpoint_cost.py

Writes bench/results/checkpoint_cost.json and .md."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchlib import ROOT, hardware, versions, write_results

CASES = [
    {"name": "digits", "config": str(ROOT / "examples/digits.yaml"), "overrides": ["train.epochs=3"]},
    {"name": "keras/cifar10/model7 (cifar10-jpeg, 1,000 images)", "config": "keras/cifar10/model7",
     "overrides": ["dataset.name=cifar10-jpeg", "dataset.subset=1000", "train.epochs=3",
                   "train.early_stopping=null"]},
]
REPEATS = 3


def write_times_s(checkpoint: Path, folder: Path) -> list[float]:
    """Seconds for each of REPEATS writes of ``checkpoint``'s state by training's `Checkpointer`."""
    sys.path.insert(0, str(ROOT / "src"))
    from cnnlab.training.checkpoint import Checkpointer

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    writer = Checkpointer(folder, every_s=0)
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        writer.save(state)
        times.append(time.perf_counter() - started)
    return times


def measure(case: dict) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "run"
        done = subprocess.run([sys.executable, "-m", "cnnlab", "train", case["config"], *case["overrides"], "--out",
                               str(out), "--quiet"], capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            raise RuntimeError(f"cnnlab train {case['config']} failed:\n{done.stderr[-3000:]}")
        metrics = json.loads((out / "metrics.json").read_text())
        metrics["epoch_times_s"] = [float(line.split(",")[6]) for line in (out / "history.csv").read_text().splitlines()[1:]]
        checkpoint = out / "checkpoint.pt"
        size_mb = checkpoint.stat().st_size / 1e6
        writes = write_times_s(checkpoint, out)
    epoch_s, write_s = statistics.median(metrics["epoch_times_s"]), statistics.median(writes)
    return {"case": case["name"], "params": metrics["params"], "checkpoint_mb": round(size_mb, 3),
            "epoch_times_s": metrics["epoch_times_s"], "write_times_s": writes, "median_epoch_s": epoch_s,
            "median_write_s": write_s, "write_per_epoch": write_s / epoch_s,
            "in_run_checkpoints": metrics.get("checkpoints_written"),
            "in_run_checkpoint_time_s": metrics.get("checkpoint_time_s")}


def main() -> None:
    started = time.perf_counter()
    results = [measure(case) for case in CASES]
    payload = {"hardware": hardware(), "versions": versions(), "repeats": REPEATS, "results": results,
               "wall_s": time.perf_counter() - started}
    lines = ["# Checkpoint cost", "",
             f"{payload['hardware']['cpu']}, {payload['hardware']['cores']} cores; torch {payload['versions']['torch']}. "
             f"Median of {REPEATS} epochs and of {REPEATS} checkpoint writes (serialise + fsync + rename).", "",
             "| case | params | checkpoint | epoch | checkpoint write | write / epoch |", "|---|---:|---:|---:|---:|---:|"]
    for row in results:
        lines.append(f"| {row['case']} | {row['params']:,} | {row['checkpoint_mb']:.2f} MB | {row['median_epoch_s']:.3f} s "
                     f"| {row['median_write_s'] * 1000:.1f} ms | {row['write_per_epoch']:.1%} |")
    write_results("checkpoint_cost", payload, "\n".join(lines))


if __name__ == "__main__":
    main()
