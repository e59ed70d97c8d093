"""A 20-trial `cnnlab tune` study on `digits`, one worker against two, on this machine's cores.

Each repetition runs both peers once, in rotating order, each as a fresh `cnnlab tune` process in a new
study folder (the same command and sampler seed; worker k of a command samples with seed + k, so two
workers draw other trials than one, and the table gives the work each study did beside its time):
  1 worker    `cnnlab tune digits ... --workers 1`: one process, PyTorch on every core
  2 workers   `cnnlab tune digits ... --workers 2`: two processes, one thread each (what --workers sets)

Wall time is the whole command (start-up, every trial, the study report); CPU time is user + sys of the
command and all its children. The ratio is median(1 worker) / median(2 workers).

    python bench/tune_workers.py [--repeats 3] [--trials 20]

Writes bench/results/tune_workers.json and .md. Never run it while anything else uses the CPU."""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import hardware, hardware_line, versions, write_results

PARAMS = ["--param", "optimizer.lr=loguniform:1e-4:1e-1", "--param", "train.batch_size=choice:32,64,128"]


def run_study(folder: Path, workers: int, trials: int) -> dict:
    """One `cnnlab tune` command: wall and CPU seconds, and what its study did (from tune.json)."""
    command = ["cnnlab", "tune", "digits", *PARAMS, "--trials", str(trials), "--seed", "0",
               "--workers", str(workers), "--out", str(folder), "--quiet"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    study = json.loads((folder / "tune.json").read_text())
    states = [trial["state"] for trial in study["trials"]]
    return {"workers": workers, "wall_s": wall, "cpu_s": cpu, "complete": states.count("complete"),
            "pruned": states.count("pruned"), "other": len(states) - states.count("complete") - states.count("pruned"),
            "epochs": sum(trial.get("epochs") or 0 for trial in study["trials"]),
            "workers_seen": len({trial.get("worker") for trial in study["trials"]}),
            "command": " ".join(command[:-3] + ["--out", "FOLDER", "--quiet"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    peers = [1, 2]
    runs: dict[int, list[dict]] = {peer: [] for peer in peers}
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(args.repeats):
            for workers in peers[repeat % 2:] + peers[:repeat % 2]:
                outcome = run_study(Path(folder) / f"r{repeat}-w{workers}", workers, args.trials)
                print(f"repeat {repeat + 1} workers {workers}: {outcome['wall_s']:.1f} s wall, {outcome['cpu_s']:.1f} s "
                      f"CPU, {outcome['complete']} complete, {outcome['pruned']} pruned", file=sys.stderr, flush=True)
                runs[workers].append(outcome)
    medians = {workers: statistics.median(run["wall_s"] for run in outcomes) for workers, outcomes in runs.items()}
    lines = [f"# `cnnlab tune` on digits: {args.trials} trials, one worker against two", "",
             f"Hardware: {hardware_line()}; torch {versions()['torch']}. Command: `python bench/tune_workers.py "
             f"--repeats {args.repeats} --trials {args.trials}`; each study: `{runs[1][0]['command']}` with "
             "`--workers 1` or `2`, both peers once per repetition in rotating order, nothing else running.", "",
             "| workers | wall s (median) | wall s, each repetition | CPU s (median, all processes) | trials complete / "
             "pruned (each repetition) | epochs trained (each) | wall ratio 1 worker / this |",
             "|---|---|---|---|---|---|---|"]
    for workers, outcomes in runs.items():
        walls = ", ".join(f"{run['wall_s']:.1f}" for run in outcomes)
        trials = ", ".join(f"{run['complete']}/{run['pruned']}" for run in outcomes)
        epochs = ", ".join(str(run["epochs"]) for run in outcomes)
        cpu = statistics.median(run["cpu_s"] for run in outcomes)
        lines.append(f"| {workers} | {medians[workers]:.1f} | {walls} | {cpu:.1f} | {trials} | {epochs} | "
                     f"{medians[1] / medians[workers]:.2f} |")
    payload = {"hardware": hardware(), "versions": versions(), "repeats": args.repeats, "trials": args.trials,
               "command": " ".join(["python", *sys.argv]), "runs": {str(key): value for key, value in runs.items()}}
    write_results("tune_workers", payload, "\n".join(lines))


if __name__ == "__main__":
    main()
