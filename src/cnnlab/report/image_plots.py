"""Figures of images: captioned grids (worst-classified images, confident errors, dataset samples,
augmentation, train/test duplicates), predicted distributions, first-layer kernels, feature maps and Grad-CAM.

Grids are one mosaic in one axes with the captions as text (dozens of separate axes made them the slowest
figures of a report). A caption is a few lines, each cut to the width of its cell with the font's own metrics,
so "true: american_pit_bull_terrier" ends in an ellipsis inside its cell instead of running into the next."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence, Union

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from cnnlab.report.labels import MIN_FONT_PT, fit_labels, fit_text, widest_pt
from cnnlab.report.plots import FONT_PT, new_figure, place_axes

CELL_IN = 1.55  # width of one grid cell, image and gap
GRID_WIDTH_IN = 10.5  # the widest a grid gets (a page's width): more columns get narrower cells
GAP_IN = 0.1  # white between cells
LINE_PT = MIN_FONT_PT * 1.3  # caption line height
MIN_PIXELS_PER_INCH = 60  # small images are enlarged (nearest neighbour) to at least this on the mosaic
WRONG_COLOUR = "#c0392b"
MUTED_COLOUR = "#555555"
CROSS, CHECK = "\u2717", "\u2713"


@dataclass(frozen=True)
class CaptionLine:
    """One line of a caption: ``text`` is data (escaped and cut to the cell), ``prefix`` and ``suffix``
    cnnlab's own words kept whole around it."""

    text: object
    prefix: str = ""
    suffix: str = ""
    color: str = "black"


Caption = Union[str, Sequence[CaptionLine]]


def example_caption(row: Mapping[str, Any]) -> list[CaptionLine]:
    """An image of the worst, most confident errors or least confident correct lists in two lines: "true: X"
    and "pred: Y", the prediction in red and crossed when it is wrong (the table above the figure gives each
    image's index and probabilities, in the same order)."""
    wrong = row["predicted"] != row["true"]
    return [CaptionLine(row["true"], prefix="true: "),
            CaptionLine(row["predicted"], prefix="pred: ", suffix=f" {CROSS}" if wrong else f" {CHECK}",
                        color=WRONG_COLOUR if wrong else "black")]


def plot_example_grid(images: np.ndarray, rows: Sequence[Mapping[str, Any]], ncols: int = 5) -> Figure:
    """Test images (M, C, H, W) uint8 with the rows of an interpretation's lists as two-line captions."""
    return plot_image_grid(images, [example_caption(row) for row in rows], ncols)


def plot_image_grid(images: np.ndarray, captions: Sequence[Caption], ncols: int = 5,
                    cell_in: float = CELL_IN) -> Figure:
    """Images shaped (M, C, H, W) uint8 in a grid, each with its caption above it (a string, lines split at
    newlines, or ``CaptionLine``s), every line cut to its cell's width (``cell_in`` inches, less when the
    columns would not fit GRID_WIDTH_IN)."""
    lines = [_caption_lines(caption) for caption in captions]
    count = len(images)
    ncols = max(1, min(ncols, count or 1))
    nrows = max(1, math.ceil(count / ncols))
    channels, height, width = images.shape[1:] if count else (1, 1, 1)
    cell_in = min(cell_in, GRID_WIDTH_IN / ncols)
    image_in = cell_in - GAP_IN
    scale = max(1, math.ceil(MIN_PIXELS_PER_INCH * image_in / width))  # whole-number enlargement
    per_inch = width * scale / image_in
    n_lines = max((len(caption) for caption in lines), default=1)
    band = int(math.ceil((n_lines * LINE_PT / 72 + 0.06) * per_inch))  # caption rows, in mosaic pixels
    gap = int(round(GAP_IN * per_inch))
    cell_height, cell_width = band + height * scale + gap, width * scale + gap
    figure = new_figure(ncols * cell_width / per_inch, nrows * cell_height / per_inch)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.axis("off")
    if count == 0:
        return figure
    mosaic = np.full((nrows * cell_height, ncols * cell_width, 4), 255, dtype=np.uint8)  # RGBA: drawn fastest
    for position in range(count):
        row, column = divmod(position, ncols)
        top, left = row * cell_height + band, column * cell_width + gap // 2
        mosaic[top:top + height * scale, left:left + width * scale, :3] = _enlarged(images[position], scale)
        _draw_caption(axes, lines[position], left + width * scale / 2, top, (image_in - 0.04) * 72)
    axes.imshow(mosaic, interpolation="nearest", aspect="auto")
    return figure


def _caption_lines(caption: Caption) -> list[CaptionLine]:
    if isinstance(caption, str):
        return [CaptionLine(line) for line in caption.split("\n")]
    return list(caption)


def _draw_caption(axes: Any, lines: Sequence[CaptionLine], x: float, image_top: float, width_pt: float,
                  align: str = "center") -> None:
    """Lines stacked upwards from just above ``image_top`` at ``x`` (data coordinates of an image axes; the
    lines' offsets in points), each cut to ``width_pt``; ``align`` "left" starts them at ``x``."""
    for number, line in enumerate(reversed(lines)):
        text = fit_text(line.text, width_pt, MIN_FONT_PT, line.prefix, line.suffix)
        axes.annotate(text, (x, image_top), xytext=(0, 2 + number * LINE_PT), textcoords="offset points",
                      ha=align, va="bottom", fontsize=MIN_FONT_PT, color=line.color, annotation_clip=False)


def _enlarged(image: np.ndarray, scale: int) -> np.ndarray:
    """uint8 (C, H, W) as (H*scale, W*scale, 3); grey repeated to three channels."""
    pixels = np.transpose(image[:3], (1, 2, 0))
    pixels = np.repeat(pixels, 3, axis=2) if pixels.shape[2] == 1 else pixels
    return np.repeat(np.repeat(pixels, scale, axis=0), scale, axis=1) if scale > 1 else pixels


def plot_augmentation(originals: np.ndarray, augmented: np.ndarray) -> Figure:
    """One row per image: the original (N, C, H, W), then its augmented versions (N, views, C, H, W)."""
    rows, views = augmented.shape[:2]
    images = np.concatenate([originals[:, None], augmented], axis=1).reshape(rows * (views + 1), *originals.shape[1:])
    captions = [("original" if column == 0 else f"augmented {column}")
                for _ in range(rows) for column in range(views + 1)]
    return plot_image_grid(images, captions, ncols=views + 1)


def plot_image_pairs(firsts: np.ndarray, seconds: np.ndarray, captions: Sequence[Caption], ncols: int = 4) -> Figure:
    """Pairs of images side by side (two (M, C, H, W) uint8 arrays of one size) in cells twice as wide, each
    pair with its caption: a test image beside the training image that duplicates it."""
    count, channels, height = firsts.shape[0], firsts.shape[1], firsts.shape[2]
    spacer = np.full((count, channels, height, max(1, firsts.shape[3] // 12)), 255, dtype=np.uint8)
    return plot_image_grid(np.concatenate([firsts, spacer, seconds], axis=3), captions, ncols, cell_in=2 * CELL_IN)


def plot_prediction_bars(images: np.ndarray, probabilities: np.ndarray, class_names: Sequence[str],
                         labels: Sequence[int], top_k: int = 10) -> Figure:
    """Per image: the image, "true"/"pred" above it, and bars of its predicted distribution over the
    ``top_k`` most probable classes (the true class always among them): true class green, a wrong
    prediction red. Two images to a row. Drawn in one axes measured in inches: an axes per image and per
    chart made this the slowest figure of a report."""
    count = len(images)
    shown = [_shown_classes(probabilities[row], int(labels[row]), top_k) for row in range(count)]
    rows_per_panel = max((len(classes) for classes in shown), default=1)
    tick_labels = fit_labels(class_names, 1.5 * 72, MIN_FONT_PT)
    label_in = widest_pt([tick_labels[k] for classes in shown for k in classes], MIN_FONT_PT) / 72
    image_in = 1.15
    panel_width = image_in + 0.35 + label_in + BARS_IN + 0.3
    panel_height = max(image_in, rows_per_panel * BAR_ROW_IN) + 2 * LINE_PT / 72 + 0.55
    columns = 2 if count > 1 else 1
    width_in, height_in = columns * panel_width, math.ceil(max(count, 1) / columns) * panel_height
    figure = new_figure(width_in, height_in)
    canvas = place_axes(figure, 0, 0, width_in, height_in)
    canvas.axis("off")
    for row in range(count):
        left = (row % columns) * panel_width
        top = height_in - (row // columns) * panel_height - 2 * LINE_PT / 72 - 0.1
        canvas.imshow(opaque(_enlarged(images[row], 1)), interpolation="nearest",
                      extent=(left + 0.1, left + 0.1 + image_in, top - image_in, top))
        chart = [tick_labels[k] for k in shown[row]]
        _draw_bars(canvas, left + image_in + 0.35 + label_in, top, probabilities[row], shown[row], int(labels[row]),
                   chart)
        predicted = int(np.argmax(probabilities[row]))
        caption = example_caption({"true": class_names[int(labels[row])], "predicted": class_names[predicted]})
        _draw_caption(canvas, caption, left + 0.1, top, (panel_width - 0.3) * 72, align="left")
    canvas.set_xlim(0, width_in)
    canvas.set_ylim(0, height_in)
    return figure


BARS_IN, BAR_ROW_IN = 1.6, 0.19  # a bar chart's width, and its height per class


def _shown_classes(probabilities: np.ndarray, label: int, top_k: int) -> list[int]:
    """The ``top_k`` most probable classes, most probable first, with the true class in place of the last."""
    order = [int(k) for k in np.argsort(-probabilities, kind="stable")[:top_k]]
    return order if label in order else order[:-1] + [label]


def _draw_bars(canvas: Any, left: float, top: float, probabilities: np.ndarray, classes: Sequence[int], label: int,
               names: Sequence[str]) -> None:
    """A horizontal bar chart with its top left corner at (``left``, ``top``) inches of ``canvas``: a frame,
    a bar and its class name per class, ticks at 0, 0.5 and 1."""
    predicted = int(np.argmax(probabilities))
    colours = ["tab:green" if k == label else WRONG_COLOUR if k == predicted else "tab:gray" for k in classes]
    centres = top - (np.arange(len(classes)) + 0.5) * BAR_ROW_IN
    bottom = top - len(classes) * BAR_ROW_IN
    # bars as one collection of thick lines (70% of a row): a patch per bar costs ten times more
    canvas.hlines(centres, left, left + BARS_IN * probabilities[list(classes)], colors=colours,
                  linewidth=BAR_ROW_IN * 72 * 0.7, capstyle="butt")
    canvas.plot([left, left + BARS_IN, left + BARS_IN, left, left], [bottom, bottom, top, top, bottom], color="black",
                linewidth=0.8)
    for centre, name in zip(centres, names):
        canvas.text(left - 0.05, centre, name, ha="right", va="center", fontsize=MIN_FONT_PT)
    for value, text in ((0, "0"), (0.5, "0.5"), (1, "1")):
        canvas.plot([left + BARS_IN * value] * 2, [bottom, bottom - 0.05], color="black", linewidth=0.8)
        canvas.text(left + BARS_IN * value, bottom - 0.08, text, ha="center", va="top", fontsize=MIN_FONT_PT)


def plot_kernel_grid(pictures: np.ndarray, title: str = "First-layer kernels") -> Figure:
    """Kernels as small pictures in [0, 1], shaped (K, kh, kw, 3) for colour or (K, kh, kw) for grey,
    16 to a row. Drawn as one mosaic (one axes), so even 64 kernels draw in milliseconds."""
    pictures = np.asarray(pictures, dtype=np.float32)
    rgb = pictures if pictures.ndim == 4 else np.repeat(pictures[..., None], 3, axis=-1)
    columns = max(1, min(16, len(rgb)))
    rows = max(1, math.ceil(len(rgb) / columns))
    width, height = min(0.6 * columns + 0.4, 10.5), min(0.6 * rows, 10.5)
    figure = new_figure(max(width, 3.0), height + 0.6)
    axes = place_axes(figure, 0.2, 0.15, max(width, 3.0) - 0.4, height)
    axes.imshow(as_bytes(mosaic(list(rgb), columns)), interpolation="nearest", aspect="equal")
    axes.axis("off")
    axes.set_title(fit_text(title, (max(width, 3.0) - 0.4) * 72, FONT_PT), fontsize=FONT_PT)
    return figure


def plot_feature_maps(images: np.ndarray, maps: np.ndarray, captions: Sequence[str], layer_name: str) -> Figure:
    """One row per image: the image (uint8, (C, H, W)) on the left, its feature maps (N, channels,
    h, w) on the right, each map in its own colour range (viridis)."""
    count, channels = maps.shape[0], maps.shape[1]
    colour = colormaps["viridis"]
    tiles = [colour(unit_range(maps[row, channel]))[..., :3] for row in range(count) for channel in range(channels)]
    labels = fit_labels(captions, 1.3 * 72, MIN_FONT_PT)
    label_in = widest_pt(labels, MIN_FONT_PT) / 72 + 0.15
    tile_in = min(0.75, 9.0 / (channels + 1))
    figure = new_figure(label_in + tile_in * (channels + 1) + 0.4, tile_in * count + 0.9)
    image_axes = place_axes(figure, label_in, 0.4, tile_in * 0.95, tile_in * count)
    map_axes = place_axes(figure, label_in + tile_in * 1.1, 0.4, tile_in * channels, tile_in * count)
    image_axes.imshow(as_bytes(mosaic([as_rgb(image) for image in images], 1)), interpolation="nearest", aspect="auto")
    map_axes.imshow(as_bytes(mosaic(tiles, channels)), interpolation="nearest", aspect="auto")
    image_axes.set_yticks(tile_centres(count, images.shape[2]), labels=labels, fontsize=MIN_FONT_PT)
    image_axes.set_xticks([])
    map_axes.set_xticks(tile_centres(channels, maps.shape[3]), labels=[f"#{c}" for c in range(channels)],
                        fontsize=MIN_FONT_PT)
    map_axes.set_yticks([])
    title = fit_text(layer_name, tile_in * channels * 72, FONT_PT, prefix="Feature maps of layer ")
    map_axes.set_title(title, fontsize=FONT_PT)
    return figure


def plot_grad_cam(images: np.ndarray, cam_rows: Sequence[np.ndarray], row_labels: Sequence[str],
                  captions: Sequence[Caption], per_band: int = 5) -> Figure:
    """One column per image (uint8, (C, H, W)) with its caption above: the image, then one row per set of
    Grad-CAM maps (N, H, W) in [0, 1] blended (jet) over a grey copy of it; ``per_band`` images side by side,
    more in further bands below; and the colour bar of the maps."""
    count, rows = len(images), len(cam_rows) + 1
    per_band = max(1, min(per_band, count or 1))
    bands = max(1, math.ceil(count / per_band))
    jet = colormaps["jet"]
    grey = np.repeat(images.astype(np.float32).mean(axis=1)[..., None] / 255, 3, axis=-1)
    overlays = [[0.55 * grey[k] + 0.45 * jet(np.clip(cams[k], 0, 1))[..., :3] for k in range(count)]
                for cams in cam_rows]
    columns = [[as_rgb(images[k]), *(overlay[k] for overlay in overlays)] for k in range(count)]
    lines = [_caption_lines(caption) for caption in captions]
    caption_in = max((len(caption) for caption in lines), default=1) * LINE_PT / 72 + 0.1
    height, width = images.shape[2], images.shape[3]
    tile_in = 1.1
    per_inch = (width + MOSAIC_GAP) / tile_in
    band_px = int(math.ceil(caption_in * per_inch))  # white above each band, for its captions
    blank = np.ones((height, width, 3), dtype=np.float32)
    parts = []
    for band in range(bands):
        chosen = columns[band * per_band:(band + 1) * per_band]
        chosen += [[blank] * rows] * (per_band - len(chosen))
        tiles = [chosen[column][row] for row in range(rows) for column in range(per_band)]
        band_mosaic = mosaic(tiles, per_band)
        parts += [np.ones((band_px, band_mosaic.shape[1], 3), np.float32), band_mosaic]
    canvas = np.concatenate(parts)
    labels = fit_labels(["image", *row_labels], 1.2 * 72, MIN_FONT_PT)
    label_in = widest_pt(labels, MIN_FONT_PT) / 72 + 0.15
    canvas_width_in, canvas_height_in = canvas.shape[1] / per_inch, canvas.shape[0] / per_inch
    figure = new_figure(label_in + canvas_width_in + 1.15, canvas_height_in + 0.3)
    axes = place_axes(figure, label_in, 0.2, canvas_width_in, canvas_height_in)
    axes.imshow(as_bytes(canvas), interpolation="nearest", aspect="auto")
    band_height = band_px + rows * (height + MOSAIC_GAP)
    for position, caption in enumerate(lines):
        band, column = divmod(position, per_band)
        _draw_caption(axes, caption, tile_centres(per_band, width)[column], band * band_height + band_px - 0.5,
                      (tile_in - 0.08) * 72)
    axes.set_xticks([])
    centres = [band * band_height + band_px + centre for band in range(bands) for centre in tile_centres(rows, height)]
    axes.set_yticks(centres, labels=labels * bands, fontsize=MIN_FONT_PT)
    axes.tick_params(length=0)
    for spine in axes.spines.values():
        spine.set_visible(False)
    bar_axes = place_axes(figure, label_in + canvas_width_in + 0.15, 0.2, 0.15, tile_in * rows)  # the last band
    colorbar = figure.colorbar(ScalarMappable(Normalize(0, 1), jet), cax=bar_axes)
    colorbar.set_label("Grad-CAM (share of the peak)", fontsize=MIN_FONT_PT)
    colorbar.ax.tick_params(labelsize=MIN_FONT_PT)
    return figure


MOSAIC_GAP = 1  # pixels of white between tiles (in tile pixels)


def mosaic(tiles: Sequence[np.ndarray], columns: int) -> np.ndarray:
    """Equal-sized (H, W, 3) tiles in [0, 1] laid out ``columns`` to a row, with white gaps."""
    height, width = tiles[0].shape[:2]
    rows = math.ceil(len(tiles) / columns)
    canvas = np.ones((rows * (height + MOSAIC_GAP) - MOSAIC_GAP, columns * (width + MOSAIC_GAP) - MOSAIC_GAP, 3),
                     dtype=np.float32)
    for position, tile in enumerate(tiles):
        top, left = (position // columns) * (height + MOSAIC_GAP), (position % columns) * (width + MOSAIC_GAP)
        canvas[top:top + height, left:left + width] = tile
    return canvas


def as_bytes(pixels: np.ndarray) -> np.ndarray:
    """Float RGB in [0, 1] as opaque uint8 RGBA: what matplotlib resamples to the saved resolution fastest."""
    return opaque(np.rint(np.clip(pixels, 0, 1) * 255).astype(np.uint8))


def opaque(rgb: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) as (H, W, 4) with alpha 255."""
    return np.concatenate([rgb, np.full((*rgb.shape[:2], 1), 255, dtype=np.uint8)], axis=2)


def tile_centres(count: int, size: int) -> list[float]:
    return [index * (size + MOSAIC_GAP) + (size - 1) / 2 for index in range(count)]


def as_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 (C, H, W) as float (H, W, 3) in [0, 1]; grey repeated to three channels."""
    pixels = np.transpose(image[:3], (1, 2, 0)).astype(np.float32) / 255
    return np.repeat(pixels, 3, axis=-1) if pixels.shape[-1] == 1 else pixels


def unit_range(values: np.ndarray) -> np.ndarray:
    low, span = float(values.min()), float(np.ptp(values))
    return (values - low) / span if span > 0 else np.zeros_like(values)

