"""Every lab report's study at its recipe on one GPU, several processes at once, then the same evidence
files as the CPU runs (config, metrics, history, environment) under docs/reproduction-runs/.

Small CNNs leave a large GPU idle, so each (model, seed) is its own `cnnlab train` process and up to
``--workers`` of them share the GPU; the longest jobs start first. A run per seed goes to
runs/reproduction-gpu/<model>-recipe-gpu-seed<S>; `bench/reproduction_table.py` puts the seeds of one
model back together (mean ± std) as one row beside the CPU rows. Run again after an interruption: a
finished seed is skipped and an unfinished one resumes from its checkpoint.

    CNNLAB_DATA=../shared/datasets python bench/reproduce_gpu.py --workers 12 --seeds 3
    python bench/reproduce_gpu.py --dry-run        # the job list with its estimated GPU cost, no training
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cnnlab.models import zoo

OUT = Path("runs/reproduction-gpu")
EVIDENCE = Path("docs/reproduction-runs")
REPRODUCTION_DATASET = {"mnist": "mnist", "cifar10": "cifar10-jpeg"}
EVIDENCE_FILES = ("config.yaml", "metrics.json", "history.csv", "environment.json")


def report_entries() -> list:
    """Zoo entries with a report's figure that train from scratch (pretrained backbones need weights files)."""
    return [entry for entry in zoo.list_entries() if entry.reported_accuracy is not None and entry.backbone is None
            and entry.source.startswith("report") and entry.dataset in REPRODUCTION_DATASET]


def steps(entry) -> int:
    """Training steps of one seed at the recipe: the GPU cost is mostly per step for these small networks."""
    train = entry.recipe.get("train") or {}
    images = {"mnist": 60_000, "cifar10": 50_000}[entry.dataset] * (1 - train.get("validation_split", 0.1))
    return int(train.get("epochs", 1) * -(-images // train.get("batch_size", 32)))


def job_folder(entry, seed: int) -> Path:
    return OUT / f"{entry.name.replace('/', '-')}-recipe-gpu-seed{seed}"


def command(entry, seed: int) -> list[str]:
    folder = job_folder(entry, seed)
    if (folder / "checkpoint.pt").exists():  # interrupted earlier: continue it
        return ["cnnlab", "train", "--resume", str(folder), "--quiet"]
    return ["cnnlab", "train", entry.name, f"dataset.name={REPRODUCTION_DATASET[entry.dataset]}",
            f"train.seed={seed}", "train.device=cuda", "--out", str(folder), "--quiet"]


def finished(folder: Path) -> bool:
    metrics = folder / "metrics.json"
    return metrics.exists() and json.loads(metrics.read_text()).get("status") == "completed"


def run_job(job: tuple) -> str:
    entry, seed = job
    folder = job_folder(entry, seed)
    if finished(folder):
        return f"skip {folder} (finished)"
    started = time.perf_counter()
    result = subprocess.run(command(entry, seed), capture_output=True, text=True)
    status = "ok" if result.returncode == 0 else f"failed ({result.returncode}): {result.stderr.strip()[-300:]}"
    if result.returncode == 0:
        destination = EVIDENCE / folder.name
        destination.mkdir(parents=True, exist_ok=True)
        for name in EVIDENCE_FILES:
            shutil.copy2(folder / name, destination / name)
    return f"{status} {folder} in {time.perf_counter() - started:.0f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=12, help="training processes sharing the GPU")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only", nargs="*", help="zoo names to run (default: every report model with a figure)")
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()
    entries = [entry for entry in report_entries() if not args.only or entry.name in args.only]
    jobs = sorted(((entry, seed) for entry in entries for seed in range(args.seeds)),
                  key=lambda job: -steps(job[0]))  # longest first, so the tail is short
    if args.dry_run:
        for entry, seed in jobs:
            print(f"{steps(entry):>9,} steps  {' '.join(command(entry, seed))}")
        return
    started = time.perf_counter()
    with ThreadPoolExecutor(args.workers) as pool:
        for line in pool.map(run_job, jobs):
            print(line, flush=True)
    print(f"{len(jobs)} jobs in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    subprocess.run([sys.executable, "bench/reproduction_table.py", str(EVIDENCE), "--out", "docs/reproduction.md",
                    "--append", *map(str, sorted(EVIDENCE.glob("*/sweep.md"))), "bench/reproduction_notes.md"],
                   check=True)


if __name__ == "__main__":
    main()
