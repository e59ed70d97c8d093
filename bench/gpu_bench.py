"""Issue 17's GPU measurements in one run within a wall-clock budget (8 minutes with bench/gpu.sh):

  mnist     `cnnlab train fast/mnist`, seeds 0..4: training time, test accuracy, runs >= 99.0% and
            runs >= 99.0% in under 1 s of training (the target)
  cifar10   `cnnlab train fast/cifar10 dataset.name=cifar10-jpeg` against airbench94 (bench/peers/airbench94.py,
            the PyPI package) on the same cifar10-jpeg arrays, seeds 0..4, each run a fresh process, the two
            peers in rotating order; medians and the ratio of median training times
  transfer  `cnnlab train transfer/efficientnet-lite0-finetune dataset.name=cifar10-jpeg` at its recipe's
            224 px, seed 0 (target: >= 97.0% test accuracy)

Each section has a wall-clock budget inside the whole one. A run starts only when the time the longest
earlier run of its section took still fits; what would overrun is skipped and the results say so. A run
still going at its section's end is stopped with SIGTERM (cnnlab then keeps its history: the epochs done
and their validation accuracy are reported, never a test figure). A section that fails is recorded with
its error and the next one runs. Each section's files are written as soon as it ends:
bench/results/gpu_fast_mnist, gpu_fast_cifar10, gpu_transfer (.json and .md), and into --copy-to.

    bash bench/gpu.sh                                    # on a lent GPU: see its header
    python bench/gpu_bench.py --budget-s 470 [--sections mnist cifar10 transfer] [--copy-to DIR]
    OMP_NUM_THREADS=1 taskset -c 0 python bench/gpu_bench.py --smoke   # CPU, tiny subsets, results to a temp folder

--smoke trains on the CPU on 512 images (128 for the transfer) for 1 epoch, 2 seeds, and writes its files
to a fresh temporary folder, never bench/results: it checks the plumbing, not a figure."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchlib import RESULTS, ROOT, hardware, versions
from cnnlab.data import DatasetConfig, load_dataset
from cnnlab.models import zoo
from gpu_tables import cifar10_markdown, mnist_markdown, transfer_markdown

SECTIONS = ("mnist", "cifar10", "transfer")
RESULT_NAMES = {"mnist": "gpu_fast_mnist", "cifar10": "gpu_fast_cifar10", "transfer": "gpu_transfer"}
TRANSFER_MODEL = "transfer/efficientnet-lite0-finetune"
STOP_GRACE_S = 15  # after SIGTERM, for cnnlab to finish its step and write its checkpoint and history
CLOSING_S = 15  # kept back at the end of the whole budget: a stopped run's grace, then the last files
# --smoke: CPU, one thread, tiny samples; the transfer keeps its 224 px input, on fewer images
SMOKE_DATA = ["dataset.subset=512", "dataset.test_subset=512", "train.epochs=1", "train.threads=1"]
SMOKE_TRANSFER = ["dataset.subset=128", "dataset.test_subset=64", "train.epochs=1", "train.threads=1"]


class Budget:
    """The whole run's deadline, and each section's share of it."""

    def __init__(self, total_s: float):
        self.end = time.perf_counter() + total_s - CLOSING_S

    def section_end(self, cap_s: float | None) -> float:
        return self.end if cap_s is None else min(self.end, time.perf_counter() + cap_s)


def run_process(command: list[str], end: float, cwd: Path = ROOT) -> dict:
    """Run ``command`` until ``end`` (perf_counter seconds); past it, SIGTERM, then SIGKILL after a grace.
    Returns returncode, stdout, stderr, wall_s and stopped_at_budget."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stopped = False
    try:
        stdout, stderr = process.communicate(timeout=max(1.0, end - started))
    except subprocess.TimeoutExpired:
        stopped = True
        process.send_signal(signal.SIGTERM)
        try:
            stdout, stderr = process.communicate(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
    return {"returncode": process.returncode, "stdout": stdout, "stderr": stderr,
            "wall_s": time.perf_counter() - started, "stopped_at_budget": stopped}


def train_cnnlab(config: str, overrides: list[str], end: float) -> dict:
    """`cnnlab train` in a fresh process into a temporary folder, stopped at ``end``; its metrics and history."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "run"
        done = run_process([sys.executable, "-m", "cnnlab", "train", config, *overrides, "--out", str(out),
                            "--quiet"], end)
        metrics_file, history_file = out / "metrics.json", out / "history.csv"
        if done["returncode"] != 0 and not (done["stopped_at_budget"] and history_file.exists()):
            raise RuntimeError(f"cnnlab train {config} {' '.join(overrides)} failed ({done['returncode']}"
                               f"{', stopped at the budget' if done['stopped_at_budget'] else ''}):\n"
                               f"{done['stderr'][-2000:]}")
        metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
        lines = history_file.read_text().splitlines() if history_file.exists() else []
    header = lines[0].split(",") if lines else []
    history = [{key: float(value) if value else None for key, value in zip(header, line.split(","))}
               for line in lines[1:]]
    keep = ("status", "train_time_s", "test_time_s", "test_accuracy", "epochs", "epochs_planned", "fast_path",
            "device", "train_size", "validation_size", "test_size", "params")
    return {**{key: metrics.get(key) for key in keep}, "history": history, "process_wall_s": done["wall_s"],
            "stopped_at_budget": done["stopped_at_budget"], "overrides": overrides}


def run_airbench(data: Path, seed: int, end: float, smoke: bool) -> dict:
    """bench/peers/airbench94.py in a fresh process; its JSON line."""
    done = run_process([sys.executable, str(ROOT / "bench/peers/airbench94.py"), "--data", str(data),
                        "--seed", str(seed), *(["--smoke"] if smoke else [])], end)
    if done["returncode"] != 0:
        stopped = ", stopped at the budget" if done["stopped_at_budget"] else ""
        raise RuntimeError(f"airbench94 seed {seed} failed ({done['returncode']}{stopped}):\n{done['stderr'][-2000:]}")
    return {**json.loads(done["stdout"].strip().splitlines()[-1]), "process_wall_s": done["wall_s"]}


def race(peers: dict, seeds: list[int], end: float) -> tuple[dict, list[str]]:
    """Every peer once per seed, in rotating order; ``peers`` maps a name to ``run(seed, end) -> dict``.
    A repetition starts only if the longest earlier one still fits before ``end``; a run stopped at the
    budget ends the race; a peer that fails is recorded and left out of later repetitions."""
    names, runs, notes, longest_s = list(peers), {name: [] for name in peers}, [], 0.0
    for repeat, seed in enumerate(seeds):
        if time.perf_counter() + longest_s > end:
            notes.append(f"seeds {', '.join(map(str, seeds[repeat:]))} not run: a repetition took up to "
                         f"{longest_s:.0f} s and {max(0.0, end - time.perf_counter()):.0f} s of the section's "
                         "budget were left")
            break
        started, order = time.perf_counter(), names[repeat % len(names):] + names[:repeat % len(names)]
        for position, name in enumerate(order):
            try:
                outcome = {**peers[name](seed, end), "seed": seed, "position": position}
            except RuntimeError as error:
                notes.append(f"{name} seed {seed} failed, so it ran no further seeds: {error}")
                names.remove(name)
                continue
            if outcome.get("stopped_at_budget"):
                notes.append(f"{name} seed {seed} was stopped at the section's budget (left out)")
                return runs, notes
            runs[name].append(outcome)
            print(f"{name} seed {seed}: train {outcome['train_time_s']:.2f} s, test accuracy "
                  f"{outcome['test_accuracy']:.4f}", file=sys.stderr, flush=True)
        if not names:
            break
        longest_s = max(longest_s, time.perf_counter() - started)
    return runs, notes


def export_for_airbench(folder: Path, smoke: bool) -> tuple[Path, dict]:
    """cifar10-jpeg's arrays, as cnnlab loads them, in the files airbench's CifarLoader reads:
    FOLDER/cifar10/{train,test}.pt. The training images go in a fixed random order (seed 0): the archive
    stores them class by class, and airbench fits its whitening layer on the first 5,000, which in the
    original CIFAR-10 files are a random sample."""
    subsets = {"subset": 512, "test_subset": 512} if smoke else {}
    dataset = load_dataset(DatasetConfig(name="cifar10-jpeg", **subsets))
    order = np.random.default_rng(0).permutation(len(dataset.train_labels))
    target = folder / "cifar10"
    target.mkdir(parents=True)
    for split, images, labels in (("train", dataset.train_images[order], dataset.train_labels[order]),
                                  ("test", dataset.test_images, dataset.test_labels)):
        torch.save({"images": torch.from_numpy(np.ascontiguousarray(images.transpose(0, 2, 3, 1))),
                    "labels": torch.from_numpy(labels.astype(np.int64)), "classes": list(dataset.classes)},
                   target / f"{split}.pt")
    return folder, {"dataset": "cifar10-jpeg", "source": dataset.source, "train_images": len(order),
                    "test_images": len(dataset.test_labels), "train_order": "fixed random permutation (seed 0)",
                    **subsets}


def section_mnist(args, end: float) -> dict:
    overrides = ["train.device=cpu", *SMOKE_DATA] if args.smoke else ["train.device=cuda"]
    peers = {"cnnlab fast/mnist": lambda seed, until: train_cnnlab("fast/mnist", [*overrides, f"train.seed={seed}"],
                                                                   until)}
    runs, notes = race(peers, args.seeds, end)
    return {"runs": runs["cnnlab fast/mnist"], "notes": notes}


def section_cifar10(args, end: float) -> dict:
    device = ["train.device=cpu", *SMOKE_DATA] if args.smoke else ["train.device=cuda"]
    overrides = ["dataset.name=cifar10-jpeg", *device]
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()  # the first load on a fresh machine also decodes and caches the JPEGs
        data, export = export_for_airbench(Path(scratch), args.smoke)
        export["export_s"] = time.perf_counter() - started
        peers = {"cnnlab fast/cifar10": lambda seed, until: train_cnnlab("fast/cifar10",
                                                                         [*overrides, f"train.seed={seed}"], until),
                 "airbench94": lambda seed, until: run_airbench(data, seed, until, args.smoke)}
        runs, notes = race(peers, args.seeds, end)
    return {"runs": runs, "notes": notes, "airbench_data": export}


def section_transfer(args, end: float) -> dict:
    names = [entry.name for entry in zoo.list_entries()]
    if TRANSFER_MODEL not in names:
        raise RuntimeError(f"{TRANSFER_MODEL} is not in the zoo (src/cnnlab/models/zoo/transfer.py)")
    device = ["train.device=cpu", *SMOKE_TRANSFER] if args.smoke else ["train.device=cuda"]
    overrides = ["dataset.name=cifar10-jpeg", *device, "train.seed=0"]
    run = train_cnnlab(TRANSFER_MODEL, overrides, end)
    notes = [f"stopped at the budget after {len(run['history'])} of {run['epochs_planned']} epochs: no test "
             "accuracy"] if run["stopped_at_budget"] else []
    return {"runs": [run], "notes": notes, "input_size": zoo.get_entry(TRANSFER_MODEL).backbone["input_size"]}


SECTION_RUNNERS = {"mnist": section_mnist, "cifar10": section_cifar10, "transfer": section_transfer}
SECTION_TABLES = {"mnist": mnist_markdown, "cifar10": cifar10_markdown, "transfer": transfer_markdown}


def write_section(name: str, payload: dict, folders: list[Path]) -> None:
    """The section's .json and .md in every folder (atomic replace), and the table on stdout."""
    markdown = SECTION_TABLES[name](payload)
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        for suffix, text in ((".json", json.dumps(payload, indent=2, default=str)), (".md", markdown)):
            path = folder / f"{RESULT_NAMES[name]}{suffix}"
            temporary = path.with_suffix(suffix + ".tmp")
            temporary.write_text(text + "\n")
            temporary.replace(path)
    print(markdown, flush=True)


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-s", type=float, default=470, help="the whole run's wall-clock budget")
    parser.add_argument("--mnist-budget-s", type=float, default=70)
    parser.add_argument("--cifar10-budget-s", type=float, default=210)
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                        help="in this order; the transfer takes what is left of the whole budget")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2 3 4 (--smoke: 0 1)")
    parser.add_argument("--copy-to", type=Path, help="also write each section's files here (the device's $OUT)")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny subsets, results to a temporary folder")
    args = parser.parse_args()
    args.seeds = args.seeds or ([0, 1] if args.smoke else [0, 1, 2, 3, 4])
    return args


def main() -> None:
    args = parse_arguments()
    budget, machine = Budget(args.budget_s), hardware()
    if not args.smoke and not machine["gpu"]:
        raise SystemExit("no CUDA GPU here: this script measures on a GPU (use --smoke to check it on a CPU)")
    folders = [Path(tempfile.mkdtemp(prefix="cnnlab-gpu-smoke-"))] if args.smoke else [RESULTS]
    folders += [args.copy_to] if args.copy_to else []
    caps = {"mnist": args.mnist_budget_s, "cifar10": args.cifar10_budget_s, "transfer": None}
    common = {"hardware": machine, "versions": versions(), "smoke": args.smoke, "budget_s": args.budget_s,
              "command": " ".join(["python", "bench/gpu_bench.py", *sys.argv[1:]]),
              "launcher": os.environ.get("CNNLAB_GPU_LAUNCHER"), "data": os.environ.get("CNNLAB_DATA")}
    for name in args.sections:
        end, started = budget.section_end(caps[name]), time.perf_counter()
        cap_s = end - started
        try:
            outcome = SECTION_RUNNERS[name](args, end) if cap_s > 0 else {
                "runs": [], "notes": [f"section not run: the whole {args.budget_s:.0f} s budget was spent"]}
        except Exception as error:  # one section's failure must not cost the others' device time
            outcome = {"runs": [], "notes": [], "error": f"{type(error).__name__}: {error}"}
        payload = {**common, "section": name, "section_budget_s": cap_s,
                   "section_wall_s": time.perf_counter() - started, **outcome}
        write_section(name, payload, folders)
    print(f"files in {', '.join(map(str, folders))}", file=sys.stderr)


if __name__ == "__main__":
    main()
