"""Accuracy of trained runs on their own training images, in eval mode (report 003's "train accuracy").

A Keras notebook's "train accuracy" after `fit` is either the last epoch's running figure (dropout on,
weights changing during the epoch) or `model.evaluate(x_train, y_train)` (dropout off, final weights).
cnnlab's history holds the first kind; this script measures the second for each seed of a run folder,
with the run's own model and preprocessing (`cnnlab.load_run(...).predict`), on the full training set.

    python bench/train_set_accuracy.py NAME RUN_DIR [RUN_DIR ...]

Writes bench/results/train_accuracy-NAME.json and .md."""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch

from benchlib import hardware, hardware_line, versions, write_results


def seed_rows(run, dataset) -> list[dict]:
    rows = []
    for seed_run in run.seeds or [run]:
        images = torch.from_numpy(np.ascontiguousarray(dataset.train_images))  # (N, C, H, W) uint8
        probabilities = seed_run.predict(images).probabilities
        correct = np.asarray(probabilities).argmax(axis=1) == np.asarray(dataset.train_labels)
        last = seed_run.history[-1]
        rows.append({"run": str(seed_run.path), "eval_train_accuracy": float(correct.mean()),
                     "running_train_accuracy": last["train_accuracy"],
                     "test_accuracy": seed_run.metrics["test_accuracy"]})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("runs", nargs="+")
    args = parser.parse_args()
    import cnnlab
    from cnnlab.data import DatasetConfig, load_dataset

    lines = ["| run | seeds | train accuracy, eval mode (mean ± std) | last epoch's running train accuracy | test "
             "accuracy | report's figures |", "|---|---|---|---|---|---|"]
    results = []
    for folder in args.runs:
        run = cnnlab.load_run(folder)
        dataset = load_dataset(DatasetConfig(name=run.metrics["dataset"]))
        rows = seed_rows(run, dataset)
        results.append({"run": folder, "model": run.metrics["model"], "seeds": rows})
        reported = run.metrics.get("reported_accuracy")

        def summary(key: str) -> str:
            values = [100 * row[key] for row in rows]
            spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
            return f"{statistics.mean(values):.2f}%{spread}"
        lines.append(f"| `{folder}` ({run.metrics['model']}) | {len(rows)} | {summary('eval_train_accuracy')} | "
                     f"{summary('running_train_accuracy')} | {summary('test_accuracy')} | "
                     f"{'test ' + format(reported, '.2%') if reported else '-'} |")
    markdown = "\n\n".join([
        f"# Training-set accuracy in eval mode: {args.name}",
        f"{hardware_line(hardware())}. Command: `python bench/train_set_accuracy.py {args.name} "
        f"{' '.join(args.runs)}`: each seed's final model (`cnnlab.load_run(...).predict`) on every training image "
        "of its dataset, dropout off and batch norm on its running statistics.",
        "\n".join(lines)])
    write_results(f"train_accuracy-{args.name}", {"hardware": hardware(), "versions": versions(),
                                                  "results": results}, markdown)


if __name__ == "__main__":
    main()
