"""Run folders built by hand as training writes them, with the images of each confused pair saved for the
galleries (tests/report/test_html_page.py and test_browser.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from cnnlab import runs
from cnnlab.analysis.interpretation import Interpretation
from cnnlab.report.confusion_gallery import gallery_indices


def make_gallery_run(run_dir: Path, class_names: list[str], n: int = 200, seed: int = 0) -> Path:
    """A run folder as training writes it, with the images of each confused pair in examples.npz."""
    interpretation = interpretation_of(n, len(class_names), seed, class_names)
    run_dir.mkdir(parents=True)
    runs.write_npz_atomic(run_dir / runs.PREDICTIONS_FILE,
                          probabilities=interpretation.probabilities.astype(np.float32),
                          labels=interpretation.labels, class_names=np.array(class_names))
    indices = np.union1d(interpretation.example_indices(10), gallery_indices(interpretation, 3 * 8 * 8))
    images = np.random.default_rng(seed).integers(0, 256, size=(len(indices), 3, 8, 8), dtype=np.uint8)
    runs.write_npz_atomic(run_dir / runs.EXAMPLES_FILE, indices=indices, images=images)
    runs.write_json_atomic(run_dir / runs.METRICS_FILE, {
        "cnnlab": {"kind": "run", "version": "test"}, "name": run_dir.name, "dataset": "hand-made", "model": "none",
        "status": "complete", "epochs": 2, "epochs_planned": 2, "test_accuracy": interpretation.accuracy,
        "test_loss": interpretation.loss, "train_time_s": 1.0})
    history = [{"epoch": epoch, "train_loss": 1.0 / epoch, "train_accuracy": 0.5, "val_loss": 1.1 / epoch,
                "val_accuracy": 0.5, "lr": 0.01, "epoch_time_s": 0.5} for epoch in (1, 2)]
    runs.write_csv_atomic(run_dir / runs.HISTORY_FILE, history, runs.HISTORY_COLUMNS)
    runs.write_text_atomic(run_dir / runs.CONFIG_FILE, yaml.safe_dump({"name": run_dir.name}))
    return run_dir


def interpretation_of(n: int, n_classes: int, seed: int = 0, class_names: list[str] | None = None) -> Interpretation:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, size=n)
    logits = rng.normal(size=(n, n_classes))
    logits[np.arange(n), labels] += 1.0
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return Interpretation.from_arrays(probabilities, labels, class_names or [f"c{k}" for k in range(n_classes)])


def make_seeds_folder(folder: Path, seeds: tuple[int, ...] = (1, 2)) -> Path:
    """A multi-seed folder: one gallery run per seed in seed-<s>/ and the aggregate metrics.json."""
    names = [f"seed-{seed}" for seed in seeds]
    for seed, name in zip(seeds, names):
        make_gallery_run(folder / name, ["a", "b", "c"], seed=seed)
    statistics = {"mean": 0.5, "std": 0.1, "min": 0.4, "max": 0.6, "values": [0.4, 0.6]}
    runs.write_json_atomic(folder / runs.METRICS_FILE, {
        "cnnlab": {"kind": "seeds", "version": "test"}, "name": "seeds", "dataset": "digits", "model": "mlp",
        "status": "complete", "seeds": list(seeds), "n_seeds": len(seeds), "runs": names, "test_accuracy": 0.5,
        "statistics": {"test_accuracy": statistics, "test_loss": statistics}})
    return folder
