"""Figures for reports: curves, bars and matrices (pictures of images: ``cnnlab.report.image_plots``).
Every function returns a new matplotlib ``Figure`` drawn with the Agg canvas; nothing touches pyplot's
global state, so figures can be built in threads, tests and notebooks alike. ``save_figure`` writes one as PNG.

Figures are laid out in inches and saved at twice the resolution they are shown at (the PNG records it, so a
page shows a figure at its size in inches, sharp on high-density screens); text is at least 9 pt at that size.
Class names and every other datum reach a figure through ``cnnlab.report.labels`` (escaped, and cut with an
ellipsis to the room they have); layouts whose room depends on the names (confusion matrix, per-class bars)
measure them and grow with the number of classes, so nothing is clipped from 2 to 100 classes."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from cnnlab import runs
from cnnlab.report.labels import (  # noqa: F401 - plain_text, plain_labels, unicode_safe: used from here too
    LAYOUT_DPI, MAX_LABEL_CHARS, MAX_LINE_CHARS, MIN_FONT_PT, fit_labels, fit_text, plain_labels, plain_text,
    unicode_safe, widest_pt,
)

SAVE_DPI = 2 * LAYOUT_DPI  # pixels per inch of the saved PNG: twice the drawn size, for high-density screens
# zlib's level 3 writes a 2x report's figures in two thirds of the time of the default 6, for a quarter more bytes
PNG_COMPRESS_LEVEL = 3
FONT_PT = 10.0  # ordinary figure text; MIN_FONT_PT (9) for legends, cell numbers and long tick lists
TITLE_PT = 11.0
# Above this many classes the numbers no longer fit in the confusion-matrix cells.
MAX_ANNOTATED_CLASSES = 20
LABEL_WIDTH_IN = 1.6  # the widest a class-name tick label may be; longer names end in an ellipsis
ROW_IN = MIN_FONT_PT * 1.45 / 72  # the least height per class of a list of labels: 9 pt text and a gap
PANEL_IN = 3.6  # width of one panel of the training curves


def new_figure(width_in: float, height_in: float) -> Figure:
    figure = Figure(figsize=(width_in, height_in), dpi=LAYOUT_DPI)
    FigureCanvasAgg(figure)
    return figure


def figure_to_png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    # No Software tag, so a rebuilt report is byte-identical whatever the matplotlib version.
    figure.savefig(buffer, format="png", dpi=SAVE_DPI, metadata={"Software": None},
                   pil_kwargs={"compress_level": PNG_COMPRESS_LEVEL})
    return buffer.getvalue()


def save_figure(figure: Figure, path: Path) -> bytes:
    """Write ``figure`` as a PNG atomically; return the bytes written."""
    png = figure_to_png(figure)
    runs.write_bytes_atomic(Path(path), png)
    return png


def integer_epochs(axes: Axes) -> None:
    """Whole-number ticks on an epoch axis (never 0.96, 1.00, 1.04 around a single epoch)."""
    axes.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    axes.set_xlabel("epoch")


def place_axes(figure: Figure, left_in: float, bottom_in: float, width_in: float, height_in: float) -> Axes:
    """An axes at a position given in inches from the figure's lower left corner."""
    figure_width, figure_height = figure.get_size_inches()
    return figure.add_axes((left_in / figure_width, bottom_in / figure_height,
                            width_in / figure_width, height_in / figure_height))


def plot_history(history: Sequence[Mapping[str, float]], best_epoch: int | None = None,
                 restored: bool = False) -> Figure:
    """Loss and accuracy per epoch, training against validation, and the learning rate when recorded, in
    panels side by side; ``best_epoch`` (early stopping's; else the lowest validation loss) marked on both
    curves, "weights restored" when the final weights are that epoch's."""
    rates = np.array([row.get("lr", math.nan) for row in history], dtype=float)
    panels = ("loss", "accuracy", "lr") if np.isfinite(rates).any() else ("loss", "accuracy")
    figure = new_figure(PANEL_IN * len(panels), 3.4)
    epochs = np.array([row.get("epoch", i + 1) for i, row in enumerate(history)], dtype=float)
    marked = _marked_epoch(history, epochs, best_epoch, restored)
    # placed, not tight_layout: that draws the figure once more only to measure it
    panel_axes = [place_axes(figure, PANEL_IN * number + 0.85, 0.55, PANEL_IN - 1.0, 2.5)
                  for number in range(len(panels))]
    for number, (axes, metric) in enumerate(zip(panel_axes, panels)):
        integer_epochs(axes)
        axes.grid(alpha=0.3)
        if metric == "lr":
            _plot_rates(axes, epochs, rates)
            continue
        for split, style in (("train", "-o"), ("val", "-s")):
            values = np.array([row.get(f"{split}_{metric}", math.nan) for row in history], dtype=float)
            measured = np.isfinite(values)  # with validate_every > 1, epochs without validation are NaN
            if measured.any():
                axes.plot(epochs[measured], values[measured], style, markersize=3,
                          label="training" if split == "train" else "validation")
        if marked is not None:
            axes.axvline(marked[0], color="tab:green", linestyle="--", linewidth=1.2,
                         label=marked[1] if number == 0 else None)
        axes.set_ylabel(metric)
        axes.set_title(metric.capitalize(), fontsize=TITLE_PT)
        if axes.get_lines():
            axes.legend(fontsize=MIN_FONT_PT)
    return figure


def _marked_epoch(history: Sequence[Mapping[str, float]], epochs: np.ndarray, best_epoch: int | None,
                  restored: bool) -> tuple[float, str] | None:
    """The epoch to mark and its legend text: early stopping's best epoch, else the lowest validation loss."""
    if best_epoch is not None:
        return float(best_epoch), f"best epoch {int(best_epoch)}" + (", weights restored" if restored else "")
    losses = np.array([row.get("val_loss", math.nan) for row in history], dtype=float)
    if np.isfinite(losses).sum() < 2:
        return None
    epoch = int(epochs[np.nanargmin(losses)])
    return float(epoch), f"lowest validation loss (epoch {epoch})"


def _plot_rates(axes: Axes, epochs: np.ndarray, rates: np.ndarray) -> None:
    known = np.isfinite(rates)
    axes.plot(epochs[known], rates[known], "-o", markersize=3, color="tab:purple")
    positive = rates[known & (rates > 0)]
    if len(positive) and positive.max() > 20 * positive.min():
        axes.set_yscale("log")
    axes.set_ylabel("learning rate")
    axes.set_title("Learning rate (end of epoch)", fontsize=TITLE_PT)
    if axes.get_yscale() == "linear":
        axes.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))


def plot_comparison_curves(
    histories: Mapping[str, Sequence[Mapping[str, float]]], metric: str = "val_accuracy"
) -> Figure:
    """One line per run of ``metric`` against epoch, overlaid."""
    figure = new_figure(6, 3.6)
    axes = figure.subplots()
    for label, history in zip(fit_labels(list(histories), 2.6 * 72, MIN_FONT_PT), histories.values()):
        epochs = np.array([row.get("epoch", i + 1) for i, row in enumerate(history)], dtype=float)
        values = np.array([row.get(metric, math.nan) for row in history], dtype=float)
        measured = np.isfinite(values)  # epochs without validation are skipped, not drawn as gaps
        axes.plot(epochs[measured], values[measured], "-o", markersize=3, label=label)
    name = metric.replace("val_", "validation ").replace("train_", "training ").replace("_", " ")
    integer_epochs(axes)
    axes.set_ylabel(name)
    axes.set_title(name.capitalize(), fontsize=TITLE_PT)
    axes.grid(alpha=0.3)
    if histories:
        axes.legend(fontsize=MIN_FONT_PT)
    figure.tight_layout()
    return figure


def plot_confusion(
    matrix: np.ndarray, class_names: Sequence[str], normalize: bool = False, title: str | None = None
) -> Figure:
    """Heat map, rows = true class, columns = predicted, with the numbers in the cells up to 20 classes (empty
    where the count is 0 or the share rounds to 0.00). Sized from the class names and their number: cells
    large enough for their numbers and 9 pt labels, names cut to 1.6 inches, nothing outside the figure."""
    matrix = np.asarray(matrix, dtype=float)
    n_classes = len(class_names)
    texts = _cell_texts(matrix, normalize) if n_classes <= MAX_ANNOTATED_CLASSES else None
    number_width = (widest_pt(texts.ravel().tolist()) + 8) / 72 if texts is not None else 0
    cell = max(ROW_IN, number_width, min(0.45, 4.5 / max(n_classes, 1)))  # small matrices still 4.5 inches
    labels = fit_labels(class_names, LABEL_WIDTH_IN * 72, MIN_FONT_PT)
    label_width = widest_pt(labels, MIN_FONT_PT) / 72 + 0.1
    upright = label_width > cell  # column labels turned upright when wider than a cell
    side = n_classes * cell
    left, bottom = 0.45 + label_width, 0.5 + (label_width if upright else ROW_IN + 0.05)
    figure = new_figure(left + side + 1.05, bottom + side + 0.5)
    axes = place_axes(figure, left, bottom, side, side)
    top = 1 if normalize else max(float(matrix.max()) if matrix.size else 0, 1)
    scale = ScalarMappable(Normalize(0, top), colormaps["Blues"])
    # coloured here, at one pixel a cell: colour-mapping the image once drawn at 2x costs seconds at 100 classes
    axes.imshow(scale.to_rgba(matrix, bytes=True), aspect="auto", interpolation="nearest")
    colorbar = figure.colorbar(scale, cax=place_axes(figure, left + side + 0.15, bottom, 0.15, side))
    colorbar.ax.tick_params(labelsize=MIN_FONT_PT)
    ticks = np.arange(n_classes)
    axes.set_xticks(ticks, labels=labels, rotation=90 if upright else 0, fontsize=MIN_FONT_PT)
    axes.set_yticks(ticks, labels=labels, fontsize=MIN_FONT_PT)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    default = "Confusion matrix (row-normalised)" if normalize else "Confusion matrix (counts)"
    axes.set_title(fit_text(title or default, (left + side) * 72 - 20, TITLE_PT), fontsize=TITLE_PT)
    if texts is not None:
        _annotate_cells(axes, matrix, texts, top)
    return figure


def _cell_texts(matrix: np.ndarray, normalize: bool) -> np.ndarray:
    """The number of each cell: counts without the zeros, shares with two decimals without those that
    round to 0.00 (an empty cell reads as none; a wall of 0.00 hides the few that matter)."""
    if normalize:
        return np.where(matrix >= 0.005, np.char.mod("%.2f", matrix), "")
    return np.where(matrix != 0, np.char.mod("%d", matrix.astype(np.int64)), "")


def _annotate_cells(axes: Axes, matrix: np.ndarray, texts: np.ndarray, top: float) -> None:
    for (row, column), text in np.ndenumerate(texts):
        if text:
            color = "white" if matrix[row, column] > top / 2 else "black"
            axes.text(column, row, text, ha="center", va="center", fontsize=MIN_FONT_PT, color=color)


def plot_per_class(per_class: Sequence[Mapping[str, Any]]) -> Figure:
    """Precision, recall and F1 per class as grouped bars: upright bars under their names for a few short
    names, else one row per class with the names on the left (long names and up to 100 classes)."""
    labels = fit_labels([row["class"] for row in per_class], LABEL_WIDTH_IN * 72, MIN_FONT_PT)
    count, widest = len(labels), widest_pt(labels, MIN_FONT_PT) / 72
    upright = count <= 12 and widest <= 0.68
    slot = 0.75 if upright else (0.32 if count <= 30 else ROW_IN)  # inches per class
    if upright:
        figure = new_figure(max(5.0, slot * count + 1.2), 3.6)
        axes = place_axes(figure, 0.7, 0.45, figure.get_size_inches()[0] - 0.9, 2.55)
    else:
        left = widest + 0.35
        figure = new_figure(7.0, slot * count + 1.15)
        axes = place_axes(figure, left, 0.5, 7.0 - left - 0.25, slot * count)
    positions, width = np.arange(count), 0.27
    for offset, metric in zip((-width, 0, width), ("precision", "recall", "f1")):
        values = [row[metric] for row in per_class]
        if upright:
            axes.bar(positions + offset, values, width, label=metric)
        else:
            axes.barh(positions + offset, values, width, label=metric)
    if upright:
        axes.set_xticks(positions, labels=labels, fontsize=MIN_FONT_PT)
        axes.set_xlim(-0.6, count - 0.4)
        axes.set_ylim(0, 1)
        axes.grid(axis="y", alpha=0.3)
    else:
        axes.set_yticks(positions, labels=labels, fontsize=MIN_FONT_PT)
        axes.set_ylim(count - 0.5, -0.5)  # the first class on top
        axes.set_xlim(0, 1)
        axes.grid(axis="x", alpha=0.3)
    axes.set_title("Per-class scores", loc="left", fontsize=TITLE_PT)
    axes.legend(fontsize=MIN_FONT_PT, ncols=3, loc="lower right", bbox_to_anchor=(1.0, 1.0), frameon=False,
                borderaxespad=0.1)
    return figure


def plot_lr_finder(lrs: Sequence[float], losses: Sequence[float], smoothed: Sequence[float],
                   suggested_lr: float | None, config_lr: float | None = None,
                   divergence_lr: float | None = None) -> Figure:
    """Loss against learning rate (log axis): raw and smoothed, with the suggestion, the config's
    own lr and the point where the loss blew up marked."""
    figure = new_figure(6.5, 3.8)
    axes = figure.subplots()
    axes.plot(lrs, losses, color="tab:gray", alpha=0.4, linewidth=1, label="loss per step")
    axes.plot(lrs, smoothed, color="tab:blue", linewidth=2, label="smoothed loss")
    markers = ((suggested_lr, "tab:green", "suggested"), (config_lr, "tab:orange", "config lr"),
               (divergence_lr, "tab:red", "loss diverges"))
    for value, color, label in markers:
        if value is not None:
            axes.axvline(value, color=color, linestyle="--", linewidth=1.2, label=f"{label} {value:.2g}")
    finite = np.asarray([value for value in smoothed if np.isfinite(value)], dtype=float)
    if len(finite):
        # up to 4x the smoothed minimum (where the sweep stops), so the blow-up does not flatten the curve
        low = min(finite.min(), min((value for value in losses if np.isfinite(value)), default=finite.min()))
        top = max(min(finite.max(), 4 * finite.min()), finite[0])
        margin = 0.05 * max(top - low, 1e-9)
        axes.set_ylim(low - margin, top + margin)
    axes.set_xscale("log")
    axes.set_xlabel("learning rate")
    axes.set_ylabel("training loss")
    axes.set_title("Learning-rate finder", fontsize=TITLE_PT)
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize=MIN_FONT_PT)
    figure.tight_layout()
    return figure
