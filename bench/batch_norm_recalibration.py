"""Are a run's test-time batch-norm statistics what costs it accuracy? Recompute them and see.

For each seed of a run folder: the final model's test accuracy as trained (its running statistics), then
with every batch norm's statistics recomputed on the final weights as the exact average over one pass of
the training images (train-mode batches of the run's batch size, no gradient, nothing else changed), the
"precise batch norm" of Wu and Johnson (2021). Both in float32 on the CPU, with the run's own input
normalisation. If the second figure is much higher, the moving averages lagged behind the weights.

    python bench/batch_norm_recalibration.py NAME RUN_DIR [RUN_DIR ...]

Writes bench/results/batch_norm_recalibration-NAME.json and .md."""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch
from torch import nn

from benchlib import hardware, hardware_line, versions, write_results


def accuracy(module: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int = 1000) -> float:
    module.eval()
    with torch.no_grad():
        predicted = torch.cat([module(images[i:i + batch]).argmax(1) for i in range(0, len(images), batch)])
    return float((predicted == labels).float().mean())


def recalibrate(module: nn.Module, images: torch.Tensor, batch: int) -> None:
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over every batch of the pass
    module.train()
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for start in range(0, len(images), batch):
            module(images[order[start:start + batch]])
    module.eval()


def seed_row(path, dataset) -> dict:
    from cnnlab.analysis.trained_run import load_trained_model

    trained = load_trained_model(path)
    train_images = trained.normalize(torch.from_numpy(np.ascontiguousarray(dataset.train_images)))
    test_images = trained.normalize(torch.from_numpy(np.ascontiguousarray(dataset.test_images)))
    test_labels = torch.from_numpy(np.asarray(dataset.test_labels)).long()
    before = accuracy(trained.module, test_images, test_labels)
    recalibrate(trained.module, train_images, trained.config["train"]["batch_size"])
    after = accuracy(trained.module, test_images, test_labels)
    row = {"run": str(path), "test_accuracy_as_trained": before, "test_accuracy_recalibrated": after}
    print(row, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("runs", nargs="+")
    args = parser.parse_args()
    import cnnlab
    from cnnlab.data import DatasetConfig, load_dataset

    torch.manual_seed(0)
    lines = ["| run | seeds | test accuracy as trained (fp32) | with recomputed batch-norm statistics | each seed |",
             "|---|---|---|---|---|"]
    results = []
    for folder in args.runs:
        run = cnnlab.load_run(folder)
        dataset = load_dataset(DatasetConfig(name=run.metrics["dataset"]))
        rows = [seed_row(seed.path, dataset) for seed in run.seeds or [run]]
        results.append({"run": folder, "model": run.metrics["model"], "seeds": rows})

        def summary(key: str) -> str:
            values = [100 * row[key] for row in rows]
            return f"{statistics.mean(values):.2f}%" + (f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else "")
        each = "; ".join(f"{100 * r['test_accuracy_as_trained']:.2f}% -> {100 * r['test_accuracy_recalibrated']:.2f}%"
                         for r in rows)
        lines.append(f"| `{folder}` ({run.metrics['model']}) | {len(rows)} | {summary('test_accuracy_as_trained')} | "
                     f"{summary('test_accuracy_recalibrated')} | {each} |")
    markdown = "\n\n".join([
        f"# Batch-norm statistics recomputed after training: {args.name}",
        f"{hardware_line(hardware())}. Command: `python bench/batch_norm_recalibration.py {args.name} "
        f"{' '.join(args.runs)}`: each seed's final weights, test accuracy with its running statistics, then with "
        "every batch norm's statistics averaged exactly over one pass of the training images (train-mode batches "
        "of the run's size, no gradient); float32.",
        "\n".join(lines)])
    write_results(f"batch_norm_recalibration-{args.name}", {"hardware": hardware(), "versions": versions(),
                                                            "results": results}, markdown)


if __name__ == "__main__":
    main()
