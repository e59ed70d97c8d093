"""`cnnlab explore`: what a dataset holds — shape, value range, class balance, channel statistics, test
images duplicated in the training set (``cnnlab.analysis.leakage``) — and report 001's figures: the
class-balance bar chart and the first images of each class."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cnnlab import output_folders, runs
from cnnlab.analysis.leakage import check_and_save, read_duplicates
from cnnlab.data import Dataset
from cnnlab.data.normalization import fit_normalization
from cnnlab.report import image_plots, plots
from cnnlab.report.document import FigureWriter, Heading, ImageRow, Paragraph, Table, render_html, render_markdown
from cnnlab.report.labels import MIN_FONT_PT, fit_labels, fit_text, widest_pt
from cnnlab.report.leakage_section import duplicates_blocks


def describe_dataset(dataset: Dataset) -> dict[str, Any]:
    """Shape, channels, value range, per-split class counts and per-channel mean/std (training set, 0..1)."""
    normalization = fit_normalization("zscore", dataset.train_images)
    lowest = min(int(dataset.train_images.min()), int(dataset.test_images.min()))
    highest = max(int(dataset.train_images.max()), int(dataset.test_images.max()))
    return {
        "dataset": dataset.name,
        "source": dataset.source,
        "image_shape": list(dataset.input_shape),
        "channels": dataset.input_shape[0],
        "dtype": str(dataset.train_images.dtype),
        "value_range": [lowest, highest],
        "classes": list(dataset.classes),
        "train_counts": np.bincount(dataset.train_labels, minlength=dataset.n_classes).tolist(),
        "test_counts": np.bincount(dataset.test_labels, minlength=dataset.n_classes).tolist(),
        "channel_mean": normalization.mean,
        "channel_std": normalization.std,
    }


def format_description(stats: dict[str, Any]) -> str:
    """The terminal summary: one line per fact, then the class-balance table."""
    channels, height, width = stats["image_shape"]
    lines = [
        f"dataset        {stats['dataset']}  ({stats['source']})",
        f"images         {sum(stats['train_counts'])} train, {sum(stats['test_counts'])} test",
        f"image shape    {height}x{width}, {channels} channel{'s' if channels > 1 else ''} ({stats['dtype']})",
        f"value range    {stats['value_range'][0]}..{stats['value_range'][1]}",
        "channel mean   " + ", ".join(f"{value:.4f}" for value in stats["channel_mean"]) + "  (train, scaled to 0..1)",
        "channel std    " + ", ".join(f"{value:.4f}" for value in stats["channel_std"]),
        "",
    ]
    width_name = max(len("class"), *(len(name) for name in stats["classes"]))
    lines.append(f"{'class'.ljust(width_name)}  {'train':>7}  {'test':>7}")
    for name, train, test in zip(stats["classes"], stats["train_counts"], stats["test_counts"]):
        lines.append(f"{name.ljust(width_name)}  {train:>7}  {test:>7}")
    lines.append(f"{'total'.ljust(width_name)}  {sum(stats['train_counts']):>7}  {sum(stats['test_counts']):>7}")
    return "\n".join(lines)


DUPLICATE_COUNTS = ("exact_pairs", "near_pairs", "crowded_test_images", "label_disagreements", "seconds")


def describe_duplicates(counts: dict[str, Any]) -> str:
    """One line on the train/test duplicate check, e.g. "duplicates     119 test images have a copy ..."."""
    return (f"duplicates     {counts['test_images']:,} test images have a copy in the training set "
            f"({counts['exact_pairs']:,} exact, {counts['near_pairs']:,} near pairs; checked in "
            f"{counts['seconds']:.1f} s; leakage.json)")


def first_images_per_class(dataset: Dataset, per_class: int) -> tuple[np.ndarray, list[str]]:
    """The first ``per_class`` training images of each class, class by class, with captions."""
    chosen, captions = [], []
    for label, name in enumerate(dataset.classes):
        indices = np.flatnonzero(dataset.train_labels == label)[:per_class]
        chosen.extend(indices.tolist())
        captions.extend(f"{name} #{index}" for index in indices)
    return dataset.train_images[np.array(chosen, dtype=np.int64)], captions


def plot_class_balance(stats: dict[str, Any]):
    """Train and test images per class: one row per class, names on the left (cut to 1.6 inches), so 100
    classes and long names fit; the figure grows with the classes."""
    labels = fit_labels(stats["classes"], plots.LABEL_WIDTH_IN * 72, MIN_FONT_PT)
    count, left = len(labels), widest_pt(labels, MIN_FONT_PT) / 72 + 0.35
    row = 0.3 if count <= 30 else plots.ROW_IN
    figure = plots.new_figure(7.0, row * count + 1.2)
    axes = plots.place_axes(figure, left, 0.5, 7.0 - left - 0.3, row * count)
    positions = np.arange(count)
    axes.barh(positions - 0.2, stats["train_counts"], height=0.4, label="train")
    axes.barh(positions + 0.2, stats["test_counts"], height=0.4, label="test")
    axes.set_yticks(positions, labels=labels, fontsize=MIN_FONT_PT)
    axes.set_ylim(count - 0.5, -0.5)
    axes.set_xlabel("images")
    axes.set_title(fit_text(stats["dataset"], 3.5 * 72, plots.TITLE_PT, prefix="Class balance of "), loc="left",
                   fontsize=plots.TITLE_PT)
    axes.legend(fontsize=MIN_FONT_PT, ncols=2, loc="lower right", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return figure


def write_exploration(dataset: Dataset, out_dir: Path, per_class: int = 10) -> dict[str, Path]:
    """Write explore.json, leakage.json and leakage.npz (the duplicate check), figures/class_balance.png,
    figures/samples.png, figures/duplicates.png (when there are some), explore.md and explore.html."""
    out_dir = Path(out_dir)
    stats = describe_dataset(dataset)
    check_and_save(out_dir, dataset.train_images, dataset.test_images, dataset.train_labels, dataset.test_labels)
    summary, thumbnails = read_duplicates(out_dir)
    stats["duplicates"] = {key: summary[key] for key in DUPLICATE_COUNTS}
    stats["duplicates"]["test_images"] = len(summary["test_indices"])
    runs.log_line(describe_duplicates(stats["duplicates"]))
    runs.write_json_atomic(out_dir / "explore.json", stats)
    figures = FigureWriter(out_dir)
    images, captions = first_images_per_class(dataset, per_class)
    table = Table(["class", "train", "test"], [
        [name, str(train), str(test)] for name, train, test in zip(stats["classes"], stats["train_counts"], stats["test_counts"])])
    blocks = [
        Heading(f"Exploring {stats['dataset']}", 1),
        Paragraph(f"Source: {stats['source']}."),
        Table(["property", "value"], [
            ["image shape (C, H, W)", str(tuple(stats["image_shape"]))],
            ["value range", f"{stats['value_range'][0]}..{stats['value_range'][1]} ({stats['dtype']})"],
            ["images", f"{sum(stats['train_counts'])} train, {sum(stats['test_counts'])} test"],
            ["channel mean (0..1)", ", ".join(f"{v:.4f}" for v in stats["channel_mean"])],
            ["channel std (0..1)", ", ".join(f"{v:.4f}" for v in stats["channel_std"])],
        ]),
        Heading("Class balance"), table,
        ImageRow([figures.add("class_balance", lambda: plot_class_balance(stats), "Images per class, train and test")]),
        Heading(f"The first {per_class} training images of each class"),
        figures.add("samples", lambda: image_plots.plot_image_grid(images, captions, ncols=per_class),
                    "One row per class"),
    ] + duplicates_blocks(summary, thumbnails, figures, class_names=dataset.classes)
    paths = {"json": out_dir / "explore.json", "md": out_dir / "explore.md", "html": out_dir / "explore.html"}
    runs.write_text_atomic(paths["md"], render_markdown(blocks))
    runs.write_text_atomic(paths["html"], render_html(blocks, f"cnnlab explore: {stats['dataset']}", figures.pngs))
    return paths


def explore_into(dataset: Dataset, out: Path | None = None, per_class: int = 10, overwrite: bool = False) -> Path:
    """`cnnlab explore`: write_exploration into ``out`` (default runs/explore-<dataset>) through the output
    gate (an earlier exploration there is replaced only with ``overwrite``); return the folder."""
    out = out or Path("runs") / f"explore-{runs.slug(dataset.name, fallback='dataset')}"
    folder = output_folders.prepare_output_folder(out, overwrite, "explore")
    write_exploration(dataset, folder, per_class=per_class)
    return output_folders.publish_output_folder(folder)
