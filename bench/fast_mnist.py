"""fast/mnist against the best hand-written single-file PyTorch script, on this CPU, in one script run.

Peers, each in a fresh process, in rotating order within each repetition, seeds 0..n-1:
  cnnlab fast/mnist              `cnnlab train fast/mnist` (whole run: report and all)
  script fp32                    bench/peers/mnist_fast_script.py as most people would run it
  script bf16+channels-last      the same script with cnnlab's CPU tricks switched on by hand

Time to 99.0% is the training time of a recipe that reaches 99.0% (the epochs only, for all
peers); the table also gives each run's accuracy, so a run that missed the target shows.

    CNNLAB_DATA=../shared/datasets python bench/fast_mnist.py [--repeats 5] [--epochs N] [--config fast/mnist]

Writes bench/results/fast_mnist.json and .md. Never run it while anything else uses the CPU."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchlib import cnnlab_train, hardware, hardware_line, mean_std, run_json, versions, write_results

TARGET = 0.99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--config", default="fast/mnist")
    parser.add_argument("--script-epochs", type=int, default=2)
    args = parser.parse_args()
    from cnnlab.data import DatasetConfig, load_dataset

    peers = ["cnnlab", "script-fp32", "script-bf16-channels-last"]
    runs = {peer: [] for peer in peers}
    with tempfile.TemporaryDirectory() as folder:
        dataset = load_dataset(DatasetConfig(name="mnist"))
        data = Path(folder) / "mnist.npz"
        np.savez(data, train_images=dataset.train_images, train_labels=dataset.train_labels,
                 test_images=dataset.test_images, test_labels=dataset.test_labels)
        for repeat in range(args.repeats):
            for peer in peers[repeat % 3:] + peers[:repeat % 3]:
                if peer == "cnnlab":
                    metrics = cnnlab_train(args.config, [f"train.seed={repeat}"])
                    outcome = {"train_time_s": metrics["train_time_s"], "test_accuracy": metrics["test_accuracy"],
                               "process_wall_s": metrics["process_wall_s"], "epochs": metrics["epochs"]}
                else:
                    extra = ["--bf16", "--channels-last"] if peer.endswith("channels-last") else []
                    outcome = run_json([sys.executable, "bench/peers/mnist_fast_script.py", "--data", str(data),
                                        "--seed", str(repeat), "--epochs", str(args.script_epochs), *extra])
                    outcome["epochs"] = args.script_epochs
                print(f"repeat {repeat + 1} {peer}: {outcome['train_time_s']:.1f}s acc {outcome['test_accuracy']:.4f}",
                      file=sys.stderr, flush=True)
                runs[peer].append(outcome)

    base = statistics.median(run["train_time_s"] for run in runs["cnnlab"])
    lines = [f"# MNIST to {TARGET:.1%}: `{args.config}` against a hand-written single-file script", "",
             f"Hardware: {hardware_line()}; torch {versions()['torch']}. "
             f"Command: `CNNLAB_DATA=../shared/datasets python bench/fast_mnist.py --repeats {args.repeats}`. "
             f"Seeds 0..{args.repeats - 1}, peers in rotating order.", "",
             "| peer | epochs | training time s (median) | mean ± std | whole process s (median) | test accuracy "
             "(mean ± std) | runs ≥ 99.0% | time ratio peer / cnnlab |", "|---|---|---|---|---|---|---|---|"]
    for peer, outcomes in runs.items():
        times = [run["train_time_s"] for run in outcomes]
        accuracies = [run["test_accuracy"] for run in outcomes]
        lines.append(f"| {peer} | {outcomes[0]['epochs']} | {statistics.median(times):.2f} | {mean_std(times)} | "
                     f"{statistics.median(run['process_wall_s'] for run in outcomes):.1f} | {mean_std(accuracies)} | "
                     f"{sum(a >= TARGET for a in accuracies)}/{len(accuracies)} | {statistics.median(times) / base:.2f} |")
    payload = {"hardware": hardware(), "versions": versions(), "repeats": args.repeats, "config": args.config,
               "command": " ".join(["python", *sys.argv]), "runs": runs}
    write_results("fast_mnist" if args.config == "fast/mnist" else "fast_mnist-" + args.config.replace("/", "-"),
                  payload, "\n".join(lines))


if __name__ == "__main__":
    main()
