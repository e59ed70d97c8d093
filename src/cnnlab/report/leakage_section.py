"""The train/test duplicate check in a report: how many test images are also in the training set, exactly or
nearly (``cnnlab.analysis.leakage``), the first pairs as thumbnails, and a warning when they may inflate the test
accuracy. A run report reads the check from its run folder (leakage.json, written at training time), so it
loads no dataset; ``cnnlab explore`` shows the same blocks without the accuracy."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from cnnlab import runs
from cnnlab.analysis.leakage import THUMBNAIL_PAIRS, accuracy_on_duplicates, read_duplicates
from cnnlab.analysis.run_files import RunFiles
from cnnlab.errors import CnnlabError
from cnnlab.report import image_plots
from cnnlab.report.document import (
    Block, Callout, FigureWriter, Heading, Paragraph, Table, format_integer, format_percent, format_value,
)

HEADING = "Train/test duplicates"


def leakage_section(run: RunFiles, figures: FigureWriter) -> list[Block]:
    """The section of a run report: the check saved with the run, the test accuracy split between test images
    with a duplicate and the rest; a note for a run trained before cnnlab checked."""
    try:
        saved = read_duplicates(run.run_dir)
    except CnnlabError as error:
        return [Heading(HEADING), Callout(str(error), "warning")]
    if saved is None:
        return [Heading(HEADING), Paragraph(f"Not checked: the run folder has no {runs.LEAKAGE_FILE} (it was trained "
                                            "before cnnlab checked for duplicates; retrain it to check).")]
    summary, thumbnails = saved
    interpretation = run.interpretation
    correct = names = None
    if interpretation is not None and len(interpretation.labels) == summary.get("n_test"):
        correct, names = interpretation.predictions == interpretation.labels, interpretation.class_names
    return duplicates_blocks(summary, thumbnails, figures, correct, names)


def duplicates_blocks(summary: dict[str, Any], thumbnails: dict[str, np.ndarray] | None, figures: FigureWriter,
                      correct: np.ndarray | None = None, class_names: Sequence[str] | None = None) -> list[Block]:
    """Heading, method, counts, (with ``correct``, one bool per test image) the accuracy split and its warning,
    the first pairs as a table and as thumbnails."""
    blocks: list[Block] = [Heading(HEADING), Paragraph(_method(summary)), _counts(summary)]
    if correct is not None:
        blocks += _accuracy(summary, correct)
    elif summary["test_indices"]:
        blocks.append(Callout(f"{len(summary['test_indices']):,} test images have a copy in the training set: a "
                              "model trained on it may score them from memory.", "warning"))
    pairs = summary.get("pairs") or []
    if not pairs:
        return blocks
    shown = pairs[:THUMBNAIL_PAIRS]
    blocks.append(Table(["Kind", "Test image", "Training image", "Test label", "Training label", "Hash distance",
                         "Correlation"], [_pair_row(pair, class_names) for pair in shown]))
    if thumbnails is not None and len(thumbnails.get("test", ())) == len(shown):
        captions = [[image_plots.CaptionLine(f"test #{pair['test']} | train #{pair['train']}"),
                     image_plots.CaptionLine(_similarity(pair), color=image_plots.MUTED_COLOUR)] for pair in shown]
        blocks.append(figures.add("duplicates", lambda: image_plots.plot_image_pairs(
            thumbnails["test"], thumbnails["train"], captions), "Each pair: a test image (left) and its duplicate "
                                                                "in the training set (right)"))
    return blocks


def _method(summary: dict[str, Any]) -> str:
    settings = summary.get("settings") or {}
    return (f"Every test image ({format_integer(summary.get('n_test'))}) was compared with every training image "
            f"({format_integer(summary.get('n_train'))}, any validation split among them) in "
            f"{format_value(summary.get('seconds'))} s. Exact duplicates have identical pixels. Near duplicates "
            f"differ in at most {format_value(settings.get('near_hash_distance'))} of the 64 bits of a difference "
            f"hash and correlate at {format_value(settings.get('min_correlation'))} or more, with at most "
            f"{format_value(settings.get('max_neighbours'))} training images that close; where more are (a crowd of "
            "lookalikes, such as MNIST's ones), only a nearly identical image that stands out of the crowd counts.")


def _counts(summary: dict[str, Any]) -> Table:
    count, total = len(summary["test_indices"]), max(int(summary.get("n_test") or 0), 1)
    return Table(["Check", "Value"], [
        ["Exact duplicate pairs", format_integer(summary.get("exact_pairs"))],
        ["Near duplicate pairs", format_integer(summary.get("near_pairs"))],
        ["Test images with a duplicate", f"{count:,} ({format_percent(count / total)})"],
        ["Pairs whose labels differ", format_integer(summary.get("label_disagreements"))],
        ["Test images among lookalikes (judged strictly)", format_integer(summary.get("crowded_test_images"))],
    ])


def _accuracy(summary: dict[str, Any], correct: np.ndarray) -> list[Block]:
    split = accuracy_on_duplicates(summary, correct)
    if not split["count"]:
        return [Paragraph("No test image has a duplicate in the training set: the test accuracy is not inflated "
                          "by copies.")]
    text = (f"Test accuracy on the {split['count']:,} test images with a duplicate: "
            f"{format_percent(split['accuracy_on_duplicates'])}; on the other "
            f"{len(correct) - split['count']:,}: {format_percent(split['accuracy_on_rest'])}. Scored like the others, "
            f"the duplicates would change the test accuracy by {-100 * split['inflation']:+.2f} points.")
    if split["warn"]:
        return [Callout("The test accuracy may be inflated by train/test duplicates. " + text, "warning")]
    return [Paragraph(text)]


def _pair_row(pair: dict[str, Any], class_names: Sequence[str] | None) -> list[str]:
    def label(index: Any) -> str:
        in_range = class_names is not None and isinstance(index, int) and 0 <= index < len(class_names)
        return class_names[index] if in_range else format_value(index)

    return [str(pair.get("kind")), f"#{pair.get('test')}", f"#{pair.get('train')}", label(pair.get("test_label")),
            label(pair.get("train_label")), format_value(pair.get("hash_distance")),
            "identical" if pair.get("kind") == "exact" else format_value(pair.get("correlation"))]


def _similarity(pair: dict[str, Any]) -> str:
    if pair.get("kind") == "exact":
        return "identical pixels"
    distance = pair.get("hash_distance")
    return f"{distance} bit{'' if distance == 1 else 's'} apart, r = {float(pair.get('correlation') or 0):.3f}"
