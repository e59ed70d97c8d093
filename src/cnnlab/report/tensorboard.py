"""TensorBoard event files of a run, in RUN_DIR/tensorboard/: the per-epoch curves (losses, accuracies,
learning rate, epoch time), the confusion matrix as an image, and the hyperparameters (the run's config,
flattened to dotted keys) with the final metrics for TensorBoard's HParams tab.

`TensorBoardLogger` writes them while a run trains (`train.tensorboard: true`): a training callback for
the curves, and `write_evaluation` once the test set is evaluated. `convert_runs` (`cnnlab tensorboard
RUN...`) writes the same events for runs already trained, from their history.csv, metrics.json,
predictions.npz and config.yaml. The values are history.csv's own (six significant digits), so the
live and the converted curves are the same numbers. TensorBoard itself is an optional extra
(`pip install cnnlab[tensorboard]`), imported when first needed."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from PIL import Image

from cnnlab import output_folders, runs
from cnnlab.analysis.run_files import RunFiles, load_run
from cnnlab.errors import CnnlabError, ConfigError
from cnnlab.report import plots
from cnnlab.training.callbacks import Callback, TrainResult

# history.csv's columns as TensorBoard tags: the section before the slash groups the charts
SCALAR_TAGS = {"train_loss": "loss/train", "val_loss": "loss/validation", "train_accuracy": "accuracy/train",
               "val_accuracy": "accuracy/validation", "lr": "learning_rate", "epoch_time_s": "time/epoch_s"}
CONFUSION_TAG = "confusion_matrix"
FINAL_PREFIX = "final/"  # the final metrics' tags, shown in the HParams tab beside the hyperparameters
INSTALL_HINT = "pip install 'cnnlab[tensorboard]' (or pip install tensorboard)"


def summary_writer_class() -> Any:
    """TensorBoard's writer (torch.utils.tensorboard.SummaryWriter); ConfigError naming the extra when
    TensorBoard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(f"TensorBoard is not installed, so train.tensorboard and cnnlab tensorboard cannot write "
                          f"its event files: {INSTALL_HINT}, or set train.tensorboard=false.") from None
    return SummaryWriter


class TensorBoardLogger(Callback):
    """Writes a run's TensorBoard events into ``run_dir``/tensorboard/ as it trains: each epoch's row as
    scalars (flushed at once, so TensorBoard shows the epoch), and after the test evaluation
    (`write_evaluation`) the confusion matrix and the hyperparameters with the final metrics."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.writer: Any = None

    def on_epoch_end(self, row: dict[str, float]) -> None:
        if self.writer is None:
            self.writer = open_writer(self.run_dir)
        write_row(self.writer, row)
        self.writer.flush()

    def on_run_end(self, result: TrainResult) -> None:
        self.close()

    def write_evaluation(self) -> None:
        """The confusion matrix and the hyperparameters with the final metrics, from the run folder's
        files (called once its predictions and metrics are written)."""
        writer = open_writer(self.run_dir)
        try:
            write_final(writer, load_run(self.run_dir))
        finally:
            writer.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def open_writer(run_dir: Path) -> Any:
    """A SummaryWriter on ``run_dir``/tensorboard/ (a new event file beside any earlier ones)."""
    folder = Path(run_dir) / runs.TENSORBOARD_DIR
    if runs.is_link(folder):
        raise CnnlabError(f"{folder} is a symbolic link: cnnlab never writes through a link inside a run folder. "
                          f"Remove it (rm {folder}) and try again.")
    return summary_writer_class()(log_dir=str(folder))


def write_row(writer: Any, row: dict[str, float]) -> None:
    """One history row as scalars at step = its epoch, with history.csv's precision; NaN values (epochs
    without validation) are left out."""
    epoch = int(row["epoch"])
    for column, tag in SCALAR_TAGS.items():
        value = row.get(column)
        if value is not None and math.isfinite(value):
            writer.add_scalar(tag, history_value(value), epoch)


def history_value(value: float) -> float:
    """``value`` as history.csv stores it (six significant digits, `runs.write_csv_atomic`)."""
    return float(f"{value:.6g}")


def write_final(writer: Any, run: RunFiles) -> None:
    """A complete run's confusion matrix (counts) as an image and its hyperparameters with the final
    metrics; nothing for a run without predictions (diverged, interrupted)."""
    from torch.utils.tensorboard.summary import hparams

    if run.interpretation is None or run.metrics.get("status") != "complete":
        return
    epochs = int(run.history[-1]["epoch"]) if run.history else 0
    interpretation = run.interpretation
    figure = plots.plot_confusion(interpretation.confusion(), interpretation.class_names)
    pixels = np.asarray(Image.open(io.BytesIO(plots.figure_to_png(figure))).convert("RGB"))
    writer.add_image(CONFUSION_TAG, pixels, epochs, dataformats="HWC")
    final = final_metrics(run)
    for summary in hparams(hyperparameters(run.config or {}), final):
        writer.file_writer.add_summary(summary, epochs)
    for tag, value in final.items():
        writer.add_scalar(tag, value, epochs)
    writer.flush()


def final_metrics(run: RunFiles) -> dict[str, float]:
    """The run's test accuracy and loss, best validation accuracy and loss, epochs and training time."""
    metrics, history = run.metrics, run.history
    values = {"test_accuracy": metrics.get("test_accuracy"), "test_loss": metrics.get("test_loss"),
              "train_time_s": metrics.get("train_time_s"), "epochs": metrics.get("epochs")}
    validated = [row for row in history if math.isfinite(row.get("val_loss", math.nan))]
    if validated:
        values["best_val_accuracy"] = max(row["val_accuracy"] for row in validated)
        values["best_val_loss"] = min(row["val_loss"] for row in validated)
    return {FINAL_PREFIX + key: float(value) for key, value in values.items()
            if isinstance(value, (int, float)) and math.isfinite(value)}


def hyperparameters(config: dict, prefix: str = "") -> dict[str, Any]:
    """The config as TensorBoard hyperparameters: dotted keys; numbers and strings as they are, booleans
    as "true"/"false" (TensorBoard would show 1 and 0), lists as JSON text, empty values left out."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(hyperparameters(value, dotted + "."))
        elif isinstance(value, bool):
            flat[dotted] = "true" if value else "false"
        elif isinstance(value, (int, float, str)):
            flat[dotted] = value
        elif isinstance(value, (list, tuple)) and value:
            flat[dotted] = json.dumps(value)
    return flat


def convert_runs(folders: Iterable[Path]) -> list[Path]:
    """`cnnlab tensorboard`: each run folder's (or each seed's of a multi-seed folder) TensorBoard events
    written from its files, replacing the event files written there before; returns the tensorboard folders."""
    written = []
    for folder in folders:
        folder = runs.require_run_dir(Path(folder))
        if output_folders.output_kind(folder) == "seeds":
            seed_runs = sorted(path.parent for path in folder.glob(f"seed-*/{runs.METRICS_FILE}"))
            written += [convert_run(seed_run) for seed_run in seed_runs]
        else:
            written.append(convert_run(folder))
    return written


def convert_run(run_dir: Path) -> Path:
    """One run folder's events from its history.csv (and, for a complete run, its predictions and config)."""
    run = load_run(run_dir)
    if not run.history:
        raise CnnlabError(f"{run_dir} has no {runs.HISTORY_FILE} rows: there are no curves to convert (the run "
                          "stopped before its first epoch ended).")
    remove_events(Path(run_dir))
    writer = open_writer(run_dir)
    try:
        for row in run.history:
            write_row(writer, row)
        write_final(writer, run)
    finally:
        writer.close()
    return Path(run_dir) / runs.TENSORBOARD_DIR


def remove_events(run_dir: Path) -> None:
    """Delete the event files in ``run_dir``/tensorboard/ (only TensorBoard's, by their names)."""
    folder = run_dir / runs.TENSORBOARD_DIR
    if not folder.is_dir() or runs.is_link(folder):
        return
    for path in folder.iterdir():
        if path.name.startswith(runs.TENSORBOARD_EVENTS_PREFIX) and path.is_file() and not path.is_symlink():
            path.unlink()
