"""Figures for reports. Every function returns a new matplotlib ``Figure`` drawn with
the Agg canvas; nothing touches pyplot's global state, so figures can be built in
threads, tests and notebooks alike. ``save_figure`` writes one as PNG.

Class names, run labels and captions are data (a user's folder names), never markup: every text
that reaches matplotlib goes through ``plain_text``, which escapes its math-text ``$`` and makes
undecodable bytes and control characters visible."""

from __future__ import annotations

import io
import math
import unicodedata
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cnnlab import runs

DPI = 100
# Above this many classes the numbers no longer fit in the confusion-matrix cells.
MAX_ANNOTATED_CLASSES = 20
# Longest line of data text drawn in a figure; longer names are cut with an ellipsis.
MAX_LABEL_CHARS = 40
MAX_LINE_CHARS = 80


def unicode_safe(text: object) -> str:
    """``text`` encodable as UTF-8: bytes a file system could not decode (surrogate escapes) become
    ``\\xNN``, so a folder name that is not UTF-8 is shown instead of crashing a write."""
    text = str(text)
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # lone surrogates that are not escaped bytes
        raw = text.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")


def plain_text(text: object, max_chars: int = MAX_LINE_CHARS) -> str:
    """Data as figure text: shown literally (``$`` escaped, so never math text), undecodable bytes and
    control characters as escapes, each line cut to ``max_chars``. The one way data reaches a figure."""
    lines = []
    for line in unicode_safe(text).split("\n"):
        line = "".join(char if unicodedata.category(char) != "Cc" else f"\\x{ord(char):02x}" for char in line)
        if len(line) > max_chars:
            line = line[:max_chars - 1] + "\u2026"
        lines.append(line.replace("$", r"\$"))
    return "\n".join(lines)


def plain_labels(names: Sequence[object], max_chars: int = MAX_LABEL_CHARS) -> list[str]:
    """``plain_text`` of each name (tick labels, legends); a leading "_" is kept visible (matplotlib
    would hide such a legend entry)."""
    return [(" " if str(name).startswith("_") else "") + plain_text(name, max_chars) for name in names]


def new_figure(width_in: float, height_in: float) -> Figure:
    figure = Figure(figsize=(width_in, height_in), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def figure_to_png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    # No Software tag, so a rebuilt report is byte-identical whatever the matplotlib version.
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def save_figure(figure: Figure, path: Path) -> bytes:
    """Write ``figure`` as a PNG atomically; return the bytes written."""
    png = figure_to_png(figure)
    runs.write_bytes_atomic(Path(path), png)
    return png


def plot_history(history: Sequence[Mapping[str, float]]) -> Figure:
    """Loss and accuracy per epoch, training against validation, in two panels."""
    figure = new_figure(9, 3.4)
    epochs = [row.get("epoch", i + 1) for i, row in enumerate(history)]
    for axes, metric in zip(figure.subplots(1, 2), ("loss", "accuracy")):
        for split, style in (("train", "-o"), ("val", "-s")):
            values = np.array([row.get(f"{split}_{metric}", math.nan) for row in history], dtype=float)
            measured = np.isfinite(values)  # with validate_every > 1, epochs without validation are NaN
            if measured.any():
                label = "training" if split == "train" else "validation"
                axes.plot(np.asarray(epochs, dtype=float)[measured], values[measured], style, markersize=3,
                          label=label)
        axes.set_xlabel("epoch")
        axes.set_ylabel(metric)
        axes.set_title(metric.capitalize())
        axes.grid(alpha=0.3)
        if axes.get_lines():
            axes.legend()
    figure.tight_layout()
    return figure


def plot_confusion(
    matrix: np.ndarray, class_names: Sequence[str], normalize: bool = False, title: str | None = None
) -> Figure:
    """Heat map, rows = true class, columns = predicted, with the numbers in the cells."""
    matrix = np.asarray(matrix)
    n_classes = len(class_names)
    side = min(max(3.5, 0.45 * n_classes + 1.5), 12)
    figure = new_figure(side + 0.8, side)
    axes = figure.subplots()
    image = axes.imshow(matrix, cmap="Blues", vmin=0, vmax=1 if normalize else max(int(matrix.max()), 1))
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    ticks = np.arange(n_classes)
    font = 8 if n_classes <= 10 else 6
    names = plain_labels(class_names)
    axes.set_xticks(ticks, labels=names, rotation=90 if n_classes > 10 else 45, fontsize=font)
    axes.set_yticks(ticks, labels=names, fontsize=font)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(plain_text(title) if title else
                   ("Confusion matrix (row-normalised)" if normalize else "Confusion matrix (counts)"))
    if n_classes <= MAX_ANNOTATED_CLASSES:
        _annotate_cells(axes, matrix, normalize, font)
    figure.tight_layout()
    return figure


def _annotate_cells(axes: Any, matrix: np.ndarray, normalize: bool, font: int) -> None:
    threshold = (matrix.max() or 1) / 2
    for (row, column), value in np.ndenumerate(matrix):
        if value == 0 and not normalize:
            continue
        text = f"{value:.2f}" if normalize else f"{int(value)}"
        color = "white" if value > threshold else "black"
        axes.text(column, row, text, ha="center", va="center", fontsize=font - 1, color=color)


def plot_image_grid(images: np.ndarray, captions: Sequence[str], ncols: int = 5) -> Figure:
    """Images shaped (M, C, H, W) uint8 in a grid, each with its caption.

    Drawn as one mosaic in one axes, captions as text: dozens of separate axes made this the
    slowest figure of a report."""
    count = len(images)
    captions = [plain_text(caption, MAX_LABEL_CHARS) for caption in captions]
    ncols = max(1, min(ncols, count or 1))
    nrows = max(1, math.ceil(count / ncols))
    lines = max((caption.count("\n") + 1 for caption in captions), default=1)
    channels, height, width = images.shape[1:] if count else (1, 1, 1)
    cell_inches = 1.8  # one image's width; captions take ~0.14 inch per line above it
    gap = max(2, width // 10)  # pixels between cells
    title = max(2, int(round(0.15 * lines * width / cell_inches)))  # caption height in image pixels
    cell_height, cell_width = height + title + gap, width + gap
    figure = new_figure(cell_inches * ncols, cell_inches * ncols * nrows * cell_height / (ncols * cell_width))
    axes = figure.add_axes((0, 0, 1, 1))
    axes.axis("off")
    if count == 0:
        return figure
    mosaic = np.full((nrows * cell_height, ncols * cell_width, 3), 255, dtype=np.uint8)
    for position in range(count):
        row, column = divmod(position, ncols)
        top, left = row * cell_height + title, column * cell_width + gap // 2
        image = images[position]
        pixels = np.repeat(image[:1], 3, axis=0) if channels == 1 else image[:3]
        mosaic[top:top + height, left:left + width] = np.transpose(pixels, (1, 2, 0))
        axes.text(left + width / 2, top - 1, captions[position], ha="center", va="bottom", fontsize=7)
    axes.imshow(mosaic, interpolation="nearest", aspect="auto")
    return figure


def _show_image(axes: Any, image: np.ndarray) -> None:
    """Grey images (one channel) in a grey colour map, others as RGB."""
    if image.shape[0] == 1:
        axes.imshow(image[0], cmap="gray", vmin=0, vmax=255)
    else:
        axes.imshow(np.transpose(image[:3], (1, 2, 0)))


def plot_prediction_bars(
    images: np.ndarray, probabilities: np.ndarray, class_names: Sequence[str], labels: Sequence[int]
) -> Figure:
    """One row per image: the image, then a bar per class of the predicted
    distribution (true class green, a wrong prediction red)."""
    count = len(images)
    n_classes = len(class_names)
    class_names = plain_labels(class_names)
    figure = new_figure(6, max(1.0, 0.12 * n_classes + 0.6) * count + 0.3)
    grid = figure.subplots(max(count, 1), 2, squeeze=False, gridspec_kw={"width_ratios": [1, 2.5]})
    positions = np.arange(n_classes)
    for row in range(count):
        image_axes, bar_axes = grid[row]
        image_axes.axis("off")
        _show_image(image_axes, images[row])
        predicted = int(np.argmax(probabilities[row]))
        colors = ["tab:gray"] * n_classes
        if predicted != labels[row]:
            colors[predicted] = "tab:red"
        colors[int(labels[row])] = "tab:green"
        bar_axes.barh(positions, probabilities[row], color=colors)
        bar_axes.set_yticks(positions, labels=list(class_names), fontsize=6 if n_classes > 10 else 7)
        bar_axes.invert_yaxis()
        bar_axes.set_xlim(0, 1)
        bar_axes.tick_params(axis="x", labelsize=7)
        title = f"true: {class_names[int(labels[row])]}\npredicted: {class_names[predicted]}"
        image_axes.set_title(title, fontsize=7)
    figure.tight_layout()
    return figure


def plot_per_class(per_class: Sequence[Mapping[str, Any]]) -> Figure:
    """Precision, recall and F1 per class as grouped bars."""
    names = plain_labels([row["class"] for row in per_class])
    positions = np.arange(len(names))
    figure = new_figure(min(max(5, 0.5 * len(names) + 2), 16), 3.2)
    axes = figure.subplots()
    width = 0.27
    for offset, metric in zip((-width, 0, width), ("precision", "recall", "f1")):
        axes.bar(positions + offset, [row[metric] for row in per_class], width, label=metric)
    axes.set_xticks(positions, labels=names, rotation=90 if len(names) > 10 else 0, fontsize=7)
    # Head room above 1 keeps the legend off the bars.
    axes.set_ylim(0, 1.2)
    axes.set_yticks(np.linspace(0, 1, 6))
    axes.set_title("Per-class scores")
    axes.legend(fontsize=7, ncols=3, loc="upper center")
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return figure


def plot_comparison_curves(
    histories: Mapping[str, Sequence[Mapping[str, float]]], metric: str = "val_accuracy"
) -> Figure:
    """One line per run of ``metric`` against epoch, overlaid."""
    figure = new_figure(6, 3.4)
    axes = figure.subplots()
    for label, history in zip(plain_labels(histories), histories.values()):
        epochs = np.array([row.get("epoch", i + 1) for i, row in enumerate(history)], dtype=float)
        values = np.array([row.get(metric, math.nan) for row in history], dtype=float)
        measured = np.isfinite(values)  # epochs without validation are skipped, not drawn as gaps
        axes.plot(epochs[measured], values[measured], "-o", markersize=3, label=label)
    name = metric.replace("val_", "validation ").replace("train_", "training ").replace("_", " ")
    axes.set_xlabel("epoch")
    axes.set_ylabel(name)
    axes.set_title(name.capitalize())
    axes.grid(alpha=0.3)
    if histories:
        axes.legend(fontsize=7)
    figure.tight_layout()
    return figure


def plot_kernel_grid(pictures: np.ndarray, title: str = "First-layer kernels") -> Figure:
    """Kernels as small pictures in [0, 1], shaped (K, kh, kw, 3) for colour or (K, kh, kw) for grey,
    16 to a row. Drawn as one mosaic (one axes), so even 64 kernels draw in milliseconds."""
    pictures = np.asarray(pictures, dtype=np.float32)
    rgb = pictures if pictures.ndim == 4 else np.repeat(pictures[..., None], 3, axis=-1)
    columns = max(1, min(16, len(rgb)))
    rows = max(1, math.ceil(len(rgb) / columns))
    figure = new_figure(min(0.6 * columns + 0.4, 11), min(0.6 * rows + 0.6, 11))
    axes = figure.subplots()
    axes.imshow(_mosaic(list(rgb), columns), interpolation="nearest")
    axes.axis("off")
    axes.set_title(plain_text(title), fontsize=9)
    figure.tight_layout()
    return figure


def plot_feature_maps(images: np.ndarray, maps: np.ndarray, captions: Sequence[str], layer_name: str) -> Figure:
    """One row per image: the image (uint8, (C, H, W)) on the left, its feature maps (N, channels,
    h, w) on the right, each map in its own colour range (viridis)."""
    count, channels = maps.shape[0], maps.shape[1]
    colour = colormaps["viridis"]
    tiles = [colour(_unit_range(maps[row, channel]))[..., :3] for row in range(count) for channel in range(channels)]
    figure = new_figure(0.75 * (channels + 1) + 0.6, 0.8 * count + 0.7)
    image_axes, map_axes = figure.subplots(1, 2, gridspec_kw={"width_ratios": [1, channels]})
    image_axes.imshow(_mosaic([_as_rgb(image) for image in images], 1), interpolation="nearest")
    map_axes.imshow(_mosaic(tiles, channels), interpolation="nearest")
    image_axes.set_yticks(_tile_centres(count, images.shape[2]), labels=plain_labels(captions), fontsize=7)
    image_axes.set_xticks([])
    map_axes.set_xticks(_tile_centres(channels, maps.shape[3]), labels=[f"#{c}" for c in range(channels)], fontsize=6)
    map_axes.set_yticks([])
    map_axes.set_title(f"Feature maps of layer {plain_text(layer_name)}", fontsize=9)
    figure.tight_layout()
    return figure


def plot_grad_cam(images: np.ndarray, cam_rows: Sequence[np.ndarray], row_labels: Sequence[str],
                  captions: Sequence[str]) -> Figure:
    """One column per image (uint8, (C, H, W)): the image, then one row per set of Grad-CAM maps
    (N, H, W) in [0, 1] blended (jet) over a grey copy of it."""
    count = len(images)
    jet = colormaps["jet"]
    tiles = [_as_rgb(image) for image in images]
    for cams in cam_rows:
        for image, cam in zip(images, cams):
            grey = np.repeat(image.astype(np.float32).mean(axis=0)[..., None] / 255, 3, axis=-1)
            tiles.append(0.55 * grey + 0.45 * jet(np.clip(cam, 0, 1))[..., :3])
    figure = new_figure(1.3 * max(count, 1) + 1.0, 1.35 * (len(cam_rows) + 1) + 0.6)
    axes = figure.subplots()
    axes.imshow(_mosaic(tiles, max(count, 1)), interpolation="nearest")
    height, width = images.shape[2], images.shape[3]
    axes.set_xticks(_tile_centres(count, width), labels=[plain_text(text, MAX_LABEL_CHARS) for text in captions],
                    fontsize=6)
    axes.xaxis.tick_top()
    axes.set_yticks(_tile_centres(len(cam_rows) + 1, height), labels=plain_labels(["image", *row_labels]), fontsize=7)
    axes.tick_params(length=0)
    for spine in axes.spines.values():
        spine.set_visible(False)
    figure.tight_layout()
    return figure


MOSAIC_GAP = 1  # pixels of white between tiles (in tile pixels)


def _mosaic(tiles: Sequence[np.ndarray], columns: int) -> np.ndarray:
    """Equal-sized (H, W, 3) tiles in [0, 1] laid out ``columns`` to a row, with white gaps."""
    height, width = tiles[0].shape[:2]
    rows = math.ceil(len(tiles) / columns)
    canvas = np.ones((rows * (height + MOSAIC_GAP) - MOSAIC_GAP, columns * (width + MOSAIC_GAP) - MOSAIC_GAP, 3),
                     dtype=np.float32)
    for position, tile in enumerate(tiles):
        top, left = (position // columns) * (height + MOSAIC_GAP), (position % columns) * (width + MOSAIC_GAP)
        canvas[top:top + height, left:left + width] = tile
    return canvas


def _tile_centres(count: int, size: int) -> list[float]:
    return [index * (size + MOSAIC_GAP) + (size - 1) / 2 for index in range(count)]


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 (C, H, W) as float (H, W, 3) in [0, 1]; grey repeated to three channels."""
    pixels = np.transpose(image[:3], (1, 2, 0)).astype(np.float32) / 255
    return np.repeat(pixels, 3, axis=-1) if pixels.shape[-1] == 1 else pixels


def _unit_range(values: np.ndarray) -> np.ndarray:
    low, span = float(values.min()), float(np.ptp(values))
    return (values - low) / span if span > 0 else np.zeros_like(values)


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
    axes.set_title("Learning-rate finder")
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize=7)
    figure.tight_layout()
    return figure


def plot_augmentation(originals: np.ndarray, augmented: np.ndarray) -> Figure:
    """One row per image: the original (N, C, H, W), then its augmented versions (N, views, C, H, W)."""
    rows, views = augmented.shape[:2]
    images = np.concatenate([originals[:, None], augmented], axis=1).reshape(rows * (views + 1), *originals.shape[1:])
    captions = [("original" if column == 0 else f"augmented {column}") for _ in range(rows) for column in range(views + 1)]
    return plot_image_grid(images, captions, ncols=views + 1)
