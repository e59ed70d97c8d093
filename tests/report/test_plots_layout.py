"""Figures that read well whatever the class names: every caption and label inside the figure (measured with
the renderer's own text extents), captions that do not overlap, 9 pt text at least, 10 to 100 classes; whole-
number epoch ticks, the best epoch marked, a learning-rate panel, empty zero cells, 2x resolution."""

import struct

import numpy as np
import pytest
from matplotlib.text import Text

from cnnlab.report import image_plots, plots

HOSTILE = ["<script>alert(1)</script>", "$\\frac{1}{0}$", "a$b", "bell\x07", "_hidden", "caf\udce9", "two\nlines"]


def class_names(kind: str, count: int) -> list[str]:
    if kind == "long":  # 60 characters, differing only at the start and the end
        return [f"{k:03d}_" + "german_shorthaired_pointer_" * 2 + f"{k:03d}"[:60 - 58] for k in range(count)]
    return [HOSTILE[k] if k < len(HOSTILE) else f"{HOSTILE[k % len(HOSTILE)]}{k}" for k in range(count)]


def outside_parts(figure) -> list[str]:
    """What is drawn outside the figure: each axes with its tick labels, titles and legend, and each text."""
    figure.canvas.draw()
    renderer, box = figure.canvas.get_renderer(), figure.bbox
    parts = [(f"axes {axes.get_label() or index}", axes.get_tightbbox(renderer))
             for index, axes in enumerate(figure.axes)]
    parts += [(f"text {text.get_text()!r}", text.get_window_extent(renderer)) for text in caption_texts(figure)]
    return [f"{name} {[round(v) for v in extent.extents]} in {[round(v) for v in box.extents]}"
            for name, extent in parts if extent is not None and (
                extent.x0 < box.x0 - 0.5 or extent.y0 < box.y0 - 0.5 or extent.x1 > box.x1 + 0.5
                or extent.y1 > box.y1 + 0.5)]


def caption_texts(figure) -> list[Text]:
    return [text for axes in figure.axes for text in axes.texts if text.get_text()] + list(figure.texts)


def overlapping_captions(figure) -> list[tuple[str, str]]:
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    boxes = [(text.get_text(), text.get_window_extent(renderer)) for axes in figure.axes for text in axes.texts
             if text.get_text()]
    return [(first, second) for index, (first, one) in enumerate(boxes) for second, other in boxes[index + 1:]
            if min(one.x1, other.x1) - max(one.x0, other.x0) > 0.5
            and min(one.y1, other.y1) - max(one.y0, other.y0) > 0.5]


def smallest_font(figure) -> float:
    return min(text.get_fontsize() for text in figure.findobj(Text) if text.get_visible() and text.get_text())


def example_rows(names: list[str], count: int = 10) -> list[dict]:
    return [{"index": 1000 + 7 * k, "true": names[k % len(names)], "predicted": names[(3 * k + 1) % len(names)],
             "p_true": 10.0 ** -k} for k in range(count)]


def figures_with_names(names: list[str]) -> dict:
    rng = np.random.default_rng(0)
    count = len(names)
    matrix = rng.integers(0, 40, (count, count))
    np.fill_diagonal(matrix, 500)
    images = rng.integers(0, 256, (10, 3, 32, 32), dtype=np.uint8)
    per_class = [{"class": name, "precision": 0.5, "recall": 0.6, "f1": 0.55} for name in names]
    rows = example_rows(names)
    cams = [rng.random((10, 32, 32)), rng.random((10, 32, 32))]
    return {
        "confusion": lambda: plots.plot_confusion(matrix, names),
        "confusion_normalized": lambda: plots.plot_confusion(matrix / matrix.sum(1, keepdims=True), names, True),
        "per_class": lambda: plots.plot_per_class(per_class),
        "worst": lambda: image_plots.plot_example_grid(images, rows, 5),
        "predictions": lambda: image_plots.plot_prediction_bars(images[:6], rng.dirichlet(np.ones(count), 6), names,
                                                                [0, 1, 2, 3, 4, 5]),
        "grad_cam": lambda: image_plots.plot_grad_cam(images, cams, ["for predicted", "for true class"],
                                                      [image_plots.example_caption(row) for row in rows]),
    }


FIGURES = ["confusion", "confusion_normalized", "per_class", "worst", "predictions", "grad_cam"]


@pytest.mark.parametrize("kind", ["hostile", "long"])
@pytest.mark.parametrize("figure_name", FIGURES)
@pytest.mark.parametrize("count", [10, pytest.param(100, marks=pytest.mark.slow)])
def test_captions_and_labels_stay_inside_the_figure(kind, figure_name, count):
    figure = figures_with_names(class_names(kind, count))[figure_name]()
    assert outside_parts(figure) == []
    assert overlapping_captions(figure) == []
    assert smallest_font(figure) >= 9


def test_a_hundred_classes_grow_the_figure_and_keep_every_label():
    names = class_names("long", 100)
    figure = plots.plot_confusion(np.eye(100), names)
    width, height = figure.get_size_inches()
    assert width > 15 and height > 15  # 100 rows of 9 pt labels
    labels = [label.get_text() for label in figure.axes[0].get_yticklabels()]
    assert len(labels) == 100 and all(label.startswith(f"{k:03d}_") for k, label in enumerate(labels))
    bars = plots.plot_per_class([{"class": name, "precision": 1, "recall": 1, "f1": 1} for name in names])
    assert len(bars.axes[0].get_yticklabels()) == 100 and bars.get_size_inches()[1] > 15


def test_short_names_get_upright_bars_and_long_names_rows():
    short = plots.plot_per_class([{"class": f"c{k}", "precision": 1, "recall": 1, "f1": 1} for k in range(10)])
    assert [label.get_text() for label in short.axes[0].get_xticklabels()] == [f"c{k}" for k in range(10)]
    long = plots.plot_per_class([{"class": name, "precision": 1, "recall": 1, "f1": 1}
                                 for name in class_names("long", 10)])
    assert len(long.axes[0].get_yticklabels()) == 10


def test_grid_captions_are_two_lines_with_the_wrong_prediction_marked():
    images = np.zeros((2, 1, 8, 8), dtype=np.uint8)
    rows = [{"index": 13, "true": "american_bulldog", "predicted": "basset_hound", "p_true": 0.01},
            {"index": 14, "true": "cat", "predicted": "cat", "p_true": 0.6}]
    figure = image_plots.plot_example_grid(images, rows, 5)
    texts = {text.get_text(): text.get_color() for text in figure.axes[0].texts}
    true_line = next(text for text in texts if text.startswith("true: american"))
    wrong_line = next(text for text in texts if text.startswith("pred: basset"))
    assert texts[true_line] == "black" and texts[wrong_line] == image_plots.WRONG_COLOUR
    assert wrong_line.endswith(" \u2717") and texts["pred: cat \u2713"] == "black" and "true: cat" in texts
    assert len(texts) == 4  # two lines an image
    assert outside_parts(figure) == [] and overlapping_captions(figure) == []


def history_rows(epochs: int, with_lr: bool = True) -> list[dict]:
    return [{"epoch": epoch, "train_loss": 1 / epoch, "val_loss": 1 / epoch + 0.02 * epoch, "train_accuracy": 0.5,
             "val_accuracy": 0.5, **({"lr": 0.1 * 0.7 ** epoch} if with_lr else {})} for epoch in range(1, epochs + 1)]


@pytest.mark.parametrize("epochs", [1, 2, 12])
def test_epoch_ticks_are_whole_numbers(epochs):
    figure = plots.plot_history(history_rows(epochs))
    figure.canvas.draw()
    for axes in figure.axes:
        shown = [tick for tick in axes.get_xticks() if axes.get_xlim()[0] <= tick <= axes.get_xlim()[1]]
        assert shown and all(float(tick).is_integer() for tick in shown)
    assert outside_parts(figure) == [] and smallest_font(figure) >= 9


def test_best_epoch_is_marked_on_the_curves_and_the_learning_rate_has_a_panel():
    figure = plots.plot_history(history_rows(12), best_epoch=7, restored=True)
    loss, accuracy, rate = figure.axes
    marks = [line for axes in (loss, accuracy) for line in axes.get_lines() if list(line.get_xdata()) == [7, 7]]
    assert len(marks) == 2
    assert "best epoch 7, weights restored" in [text.get_text() for text in loss.get_legend().get_texts()]
    assert rate.get_title().startswith("Learning rate") and rate.get_yscale() == "log"
    lowest = plots.plot_history(history_rows(12))  # no early stopping: the lowest validation loss is marked
    assert any("lowest validation loss (epoch" in text.get_text() for text in lowest.axes[0].get_legend().get_texts())
    assert len(plots.plot_history(history_rows(3, with_lr=False)).axes) == 2


def test_normalised_confusion_leaves_empty_cells_empty():
    matrix = np.array([[0.997, 0.003, 0.0], [0.1, 0.9, 0.0], [0.0, 0.25, 0.75]])
    figure = plots.plot_confusion(matrix, ["a", "b", "c"], normalize=True)
    texts = sorted(text.get_text() for text in figure.axes[0].texts)
    assert texts == ["0.10", "0.25", "0.75", "0.90", "1.00"]
    counts = plots.plot_confusion(np.array([[5, 0], [2, 3]]), ["a", "b"])
    assert sorted(text.get_text() for text in counts.axes[0].texts) == ["2", "3", "5"]


def test_figures_are_saved_at_twice_their_drawn_size():
    figure = plots.plot_history(history_rows(3))
    png = plots.figure_to_png(figure)
    width, height = struct.unpack(">II", png[16:24])
    inches = figure.get_size_inches()
    assert (width, height) == (round(inches[0] * 200), round(inches[1] * 200))
    position = png.find(b"pHYs")
    assert round(struct.unpack(">I", png[position + 4:position + 8])[0] * 0.0254) == 200


def test_grad_cam_has_a_colour_bar():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (3, 3, 16, 16), dtype=np.uint8)
    figure = image_plots.plot_grad_cam(images, [rng.random((3, 16, 16))], ["for predicted"], ["a", "b", "c"])
    assert any(axes.get_ylabel().startswith("Grad-CAM") for axes in figure.axes)
    assert outside_parts(figure) == []
