"""Multi-seed experiments read back: the statistics over a folder's seed runs and the aggregate folder
as comparisons read it.

A multi-seed folder (written by `cnnlab.studies.seeds`) holds one ordinary run folder per seed,
``seed-<s>/``, and the aggregate: ``metrics.json`` with cnnlab's marker of kind "seeds", ``history.csv``
(the mean over the seeds of each column, per epoch), ``config.yaml`` and the report. Standard deviations
are sample standard deviations over the seeds (ddof=1); with one seed there is none (null)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cnnlab import output_folders, runs
from cnnlab.analysis.interpretation import Interpretation
from cnnlab.analysis.run_files import RunFiles, read_config, read_metrics
from cnnlab.errors import CnnlabError

SEEDS_KIND = "seeds"  # the kind in the aggregate's marker (output_folders.KINDS)
STD_DDOF = 1  # sample standard deviation: the seeds are a sample of the seeds one could have run
STD_NOTE = "sample standard deviation over the seeds (ddof=1); null with one seed"
BAND_NOTE = "min-max over the seeds"  # what the report's shaded band around each mean curve spans
STATISTIC_KEYS = ("test_accuracy", "test_loss", "train_time_s", "epochs")
# copied from the first seed's run: the same for every seed of one config
SHARED_KEYS = ("name", "dataset", "model", "params", "trainable_params", "epochs_planned", "device",
               "test_time_augmentation", "reported_accuracy", "reported_accuracy_kind", "reported_time_s",
               "reported_dataset", "source", "recipe_differences")


def seed_run_name(seed: int) -> str:
    """The folder of ``seed``'s run inside a multi-seed folder."""
    return f"seed-{seed}"


def is_seed_aggregate(folder: Path) -> bool:
    """Whether ``folder`` is a multi-seed folder, by its marker."""
    return output_folders.output_kind(Path(folder)) == SEEDS_KIND


def statistics(values: Sequence[float | None]) -> dict[str, Any]:
    """mean, std (ddof=1; None below two values), min, max and the values themselves (None for a missing one,
    left out of the statistics)."""
    present = np.array([float(value) for value in values if value is not None], dtype=float)
    if not len(present):
        return {"mean": None, "std": None, "min": None, "max": None, "values": list(values)}
    return {"mean": float(present.mean()), "std": float(present.std(ddof=STD_DDOF)) if len(present) > 1 else None,
            "min": float(present.min()), "max": float(present.max()), "values": list(values)}


def aggregate_metrics(seed_metrics: Sequence[dict[str, Any]], seeds: Sequence[int], run_names: Sequence[str],
                      status: str = "complete") -> dict[str, Any]:
    """The aggregate's metrics.json from each seed run's metrics (in the order of ``seeds``): the shared
    keys of the first run, the means as ``test_accuracy``/``test_loss``/``train_time_s`` (so any reader of a
    run's metrics reads the headline figure), ``epochs`` as the most any seed trained, and ``statistics``."""
    first = seed_metrics[0]
    stats = {key: statistics([metrics.get(key) for metrics in seed_metrics]) for key in STATISTIC_KEYS}
    aggregate = {key: first[key] for key in SHARED_KEYS if key in first}
    aggregate.update(
        status=status, seeds=list(seeds), n_seeds=len(seeds), runs=list(run_names),
        test_accuracy=stats["test_accuracy"]["mean"], test_loss=stats["test_loss"]["mean"],
        train_time_s=stats["train_time_s"]["mean"], epochs=stats["epochs"]["max"], statistics=stats,
        std=STD_NOTE, curve_band=BAND_NOTE, cnnlab=output_folders.output_marker(SEEDS_KIND))
    if aggregate["epochs"] is not None:
        aggregate["epochs"] = int(aggregate["epochs"])
    return aggregate


def history_bands(histories: Sequence[Sequence[dict[str, float]]]) -> dict[str, dict[str, np.ndarray]]:
    """Per history column (train_loss, val_accuracy, ...): ``epochs`` and the ``mean``, ``std`` (ddof=1),
    ``min``, ``max`` and ``count`` over the seeds that measured it at that epoch (early stopping may end
    runs at different epochs; epochs without validation are skipped)."""
    columns = [column for column in runs.HISTORY_COLUMNS if column != "epoch"]
    length = max((len(history) for history in histories), default=0)
    bands: dict[str, dict[str, np.ndarray]] = {}
    for column in columns:
        table = np.full((len(histories), length), np.nan)
        for row_number, history in enumerate(histories):
            table[row_number, :len(history)] = [row.get(column, math.nan) for row in history]
        count = np.isfinite(table).sum(axis=0)
        measured = count > 0
        values = table[:, measured]
        with np.errstate(invalid="ignore", divide="ignore"):
            bands[column] = {
                "epochs": np.arange(1, length + 1)[measured], "count": count[measured],
                "mean": np.nanmean(values, axis=0) if values.size else np.zeros(0),
                "std": _nan_std(values), "min": np.nanmin(values, axis=0) if values.size else np.zeros(0),
                "max": np.nanmax(values, axis=0) if values.size else np.zeros(0)}
    return bands


def mean_history(histories: Sequence[Sequence[dict[str, float]]]) -> list[dict[str, float]]:
    """history.csv of the aggregate: per epoch, the mean over the seeds of every column."""
    bands = history_bands(histories)
    length = max((len(history) for history in histories), default=0)
    rows = [{"epoch": epoch} for epoch in range(1, length + 1)]
    for column, band in bands.items():
        for epoch, mean in zip(band["epochs"], band["mean"]):
            rows[int(epoch) - 1][column] = float(mean)
    return rows


def load_seed_aggregate(folder: Path) -> RunFiles:
    """A multi-seed folder as a comparison reads a run: the aggregate's metrics, its mean history, its
    config, and the predictions of its first seed's run (confusion matrix and worst images are one seed's;
    ``metrics["predictions_seed"]`` says which)."""
    folder = runs.require_run_dir(Path(folder))
    metrics = read_metrics(folder)
    names = metrics.get("runs")
    if not isinstance(names, list) or not names or not all(isinstance(name, str) for name in names):
        raise CnnlabError(f"{folder / runs.METRICS_FILE} is damaged or was not written by cnnlab: a multi-seed "
                          "folder lists its seed runs under \"runs\". Run the multi-seed experiment again.")
    first = folder / Path(names[0]).name  # a seed run is a subfolder, never elsewhere
    if not (first / runs.PREDICTIONS_FILE).exists():
        raise CnnlabError(f"{first} is incomplete: {runs.PREDICTIONS_FILE} is missing. Compare only multi-seed "
                          "folders whose runs finished.")
    seeds = metrics.get("seeds") or [None]
    metrics = {**metrics, "predictions_seed": seeds[0]}
    return RunFiles(folder, metrics, runs.read_history(folder), config=read_config(folder),
                    interpretation=Interpretation.from_run(first))


def _nan_std(values: np.ndarray) -> np.ndarray:
    """Sample std per column over its finite values; NaN where fewer than two seeds measured it."""
    result = np.full(values.shape[1], np.nan)
    for column in range(values.shape[1]):
        finite = values[:, column][np.isfinite(values[:, column])]
        if len(finite) > 1:
            result[column] = finite.std(ddof=STD_DDOF)
    return result
