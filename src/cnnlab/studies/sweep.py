"""The sweep table of a suite: one parameter over a list of values (report 001's batch-size study)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab import runs
from cnnlab.report import plots
from cnnlab.report.document import (FigureWriter, Heading, Paragraph, Table, format_percent, render_html,
                                    render_markdown)

SWEEP_COLUMNS = ["value", "reported_accuracy", "val_accuracy", "test_accuracy", "test_loss", "epochs", "epoch_time_s", "train_time_s", "run_dir"]


def sweep_rows(run_dirs: list[Path], values: list[Any], reported: list[Any] | None = None) -> list[dict[str, Any]]:
    """One row per value: the report's figure (if given), last-epoch validation accuracy, test
    accuracy, mean seconds per epoch."""
    rows = []
    for run_dir, value, figure in zip(run_dirs, values, reported or [None] * len(values)):
        metrics = runs.read_json(run_dir / runs.METRICS_FILE)
        history = runs.read_history(run_dir)
        epoch_times = [row["epoch_time_s"] for row in history if math.isfinite(row["epoch_time_s"])]
        rows.append({
            "value": value,
            "reported_accuracy": figure,
            "val_accuracy": history[-1]["val_accuracy"] if history else float("nan"),
            "test_accuracy": metrics.get("test_accuracy"),
            "test_loss": metrics.get("test_loss"),
            "epochs": metrics.get("epochs"),
            "epoch_time_s": float(np.mean(epoch_times)) if epoch_times else float("nan"),
            "train_time_s": metrics.get("train_time_s"),
            "run_dir": str(run_dir),
        })
    return rows


def plot_sweep(rows: list[dict[str, Any]], parameter: str):
    """Accuracy (left axis) and seconds per epoch (right axis) against the swept value."""
    figure = plots.new_figure(6, 3.4)
    axes = figure.add_subplot(1, 1, 1)
    numeric = all(isinstance(row["value"], (int, float)) and not isinstance(row["value"], bool) for row in rows)
    positions = [row["value"] for row in rows] if numeric else list(range(len(rows)))
    axes.plot(positions, [row["test_accuracy"] for row in rows], "o-", label="test accuracy")
    axes.plot(positions, [row["val_accuracy"] for row in rows], "s--", label="validation accuracy")
    if numeric and min(positions) > 0 and max(positions) / min(positions) >= 20:
        axes.set_xscale("log")
    if not numeric:
        axes.set_xticks(positions, [str(row["value"]) for row in rows])
    axes.set_xlabel(parameter)
    axes.set_ylabel("accuracy")
    axes.legend(loc="upper left", fontsize=8)
    times = figure.axes[0].twinx()
    times.plot(positions, [row["epoch_time_s"] for row in rows], "^:", color="tab:red", label="s / epoch")
    times.set_ylabel("seconds per epoch", color="tab:red")
    figure.tight_layout()
    return figure


def write_sweep(run_dirs: list[Path], values: list[Any], parameter: str, out_dir: Path,
                reported: list[Any] | None = None) -> dict[str, Path]:
    """Write sweep.csv, sweep.md and sweep.html (table and plot) into ``out_dir``."""
    out_dir = Path(out_dir)
    rows = sweep_rows(run_dirs, values, reported)
    paths = {"sweep_csv": out_dir / "sweep.csv", "sweep_md": out_dir / "sweep.md", "sweep_html": out_dir / "sweep.html"}
    runs.write_csv_atomic(paths["sweep_csv"], rows, SWEEP_COLUMNS)
    figures = FigureWriter(out_dir)
    table = Table([parameter, "report's figure", "validation accuracy", "test accuracy", "epochs", "s / epoch",
                   "training time (s)"], [
        [str(row["value"]), format_percent(row["reported_accuracy"]), format_percent(_finite(row["val_accuracy"])),
         format_percent(row["test_accuracy"]),
         str(row["epochs"]), f"{row['epoch_time_s']:.2f}", f"{row['train_time_s']:.2f}"] for row in rows])
    blocks = [Heading(f"Sweep over {parameter}", 1),
              Paragraph(f"One run per value of {parameter}; everything else as in the base experiment."),
              table, figures.add("sweep", plot_sweep(rows, parameter), f"Accuracy and time per epoch against {parameter}")]
    runs.write_text_atomic(paths["sweep_md"], render_markdown(blocks))
    runs.write_text_atomic(paths["sweep_html"], render_html(blocks, f"cnnlab sweep: {parameter}", figures.pngs))
    return paths


def _finite(value: Any) -> Any:
    return value if value is not None and math.isfinite(value) else None
