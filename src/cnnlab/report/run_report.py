"""The report of one run, built from its run directory alone: ``report.md`` and a self-contained
``report.html`` (comparisons of several runs are ``cnnlab.report.comparison``).

Nothing here loads a dataset: the trainer saved the predictions and the test images the
analysis shows, so any report can be rebuilt or re-styled later. Only the "looking inside"
section (``cnnlab.report.network_section``) rebuilds the model from its saved weights, on those images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cnnlab import output_folders, runs
from cnnlab.analysis.interpretation import N_PREDICTION_EXAMPLES, Interpretation, diagnose_curves
from cnnlab.analysis.run_files import RunFiles, load_run, lookup_images, read_augmentation
from cnnlab.errors import CnnlabError
from cnnlab.report import image_plots, plots
from cnnlab.report.confusion_gallery import confusion_section, gallery_section, pair_galleries
from cnnlab.report.document import (
    Block, BulletList, Callout, Contents, FigureWriter, Heading, KeyFigures, Link, Paragraph, Preformatted, Table,
    format_integer, format_number, format_percent, format_probability, format_seconds, format_value, render_html,
    render_markdown,
)
from cnnlab.report.lab_report_figures import against_report_section
from cnnlab.report.leakage_section import leakage_section
from cnnlab.report.network_section import network_section

GRID_COLUMNS = 5


DEFAULT_WORST_N = 10


def write_report(run_dir: Path, worst_n: int | None = None) -> tuple[Path, Path]:
    """Write figures/*.png, report.md and report.html into ``run_dir``; return the
    Markdown and HTML paths. Sections whose files are absent are skipped with a note, and a figure
    that cannot be drawn is a note in its place. ``worst_n`` defaults to the config's analysis.worst_n.
    Raises CnnlabError naming the file when a file of the run directory is damaged."""
    run = load_run(run_dir)
    worst_n = worst_n if worst_n is not None else _configured_worst_n(run)
    figures = FigureWriter(run.run_dir, deferred=True)  # drawn together in `finish`, on two cores
    blocks = _header(run) + [Contents()] + _headline(run)
    blocks += against_report_section(run.metrics, format_percent(_test_accuracy(run)))
    blocks += _curves(run, figures) + _augmentation(run, figures)
    if run.interpretation is None:
        blocks.append(Callout(f"No {runs.PREDICTIONS_FILE}: the test-set sections are skipped."))
    else:
        galleries = pair_galleries(run.interpretation, run.examples)
        blocks += _per_class(run.interpretation, figures)
        blocks += confusion_section(run.interpretation, figures, galleries)
        blocks += _examples(run, figures, worst_n)
        blocks += _network_section(run, figures)
        blocks += gallery_section(run.interpretation, galleries, run.examples is not None)
    blocks += leakage_section(run, figures)
    blocks = figures.finish(blocks + _appendix(run))
    title = f"cnnlab report: {run.metrics.get('name', run.run_dir.name)}"
    markdown_path = run.run_dir / runs.REPORT_MARKDOWN_FILE
    html_path = run.run_dir / runs.REPORT_HTML_FILE
    runs.write_text_atomic(markdown_path, render_markdown(blocks))
    runs.write_text_atomic(html_path, render_html(blocks, title, figures.pngs))
    return markdown_path, html_path


def _configured_worst_n(run: RunFiles) -> int:
    analysis = (run.config or {}).get("analysis")
    value = analysis.get("worst_n") if isinstance(analysis, dict) else None
    if value is None:
        return DEFAULT_WORST_N
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 50:
        raise CnnlabError(f"{run.run_dir / runs.CONFIG_FILE} is damaged: analysis.worst_n should be a whole number "
                          "from 1 to 50. Fix that line, or give `cnnlab report --worst N`.")
    return value


def _network_section(run: RunFiles, figures: FigureWriter) -> list[Block]:
    """The "looking inside" section, or a note when rebuilding or running the network fails there:
    it runs a model on saved images, and no failure of it may cost the rest of the report."""
    try:
        return network_section(run, figures)
    except Exception as error:  # noqa: BLE001 - by design, as FigureWriter.add
        detail = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
        return [Heading("Looking inside the network"),
                Callout(f"This section could not be built ({type(error).__name__}: {detail}); the rest of the "
                        "report is complete.", "warning")]


def _header(run: RunFiles) -> list[Block]:
    metrics = run.metrics
    status = str(metrics.get("status", "unknown"))
    blocks: list[Block] = [Heading(f"Report: {metrics.get('name', run.run_dir.name)}", 1), _key_figures(run)]
    blocks += _parent_link(run.run_dir)
    if status == "diverged":
        reason = metrics.get("stop_reason") or "the loss became NaN or infinite"
        blocks.append(Callout(
            f"Training diverged: {reason}. The weights after that point are meaningless, so the "
            "figures below show the run up to the divergence. A lower learning rate, gradient "
            "clipping or normalised inputs usually cure it.", "warning"))
    elif status == "running":
        blocks.append(Callout("This run has not finished: the report shows what it has written so far."))
    return blocks


def _parent_link(run_dir: Path) -> list[Block]:
    """A link up to the page of the suite or multi-seed folder the run belongs to (by that folder's marker)."""
    kind = output_folders.output_kind(run_dir.parent)
    if kind == "suite":
        return [Paragraph(["One experiment of a suite: ", Link("the suite's comparison", "../comparison.html"), "."])]
    if kind == "seeds":
        return [Paragraph(["One seed of a multi-seed run: ", Link("the report over the seeds", "../report.html"), "."])]
    return []


def _test_accuracy(run: RunFiles) -> Any:
    accuracy = run.metrics.get("test_accuracy")
    if accuracy is None and run.interpretation is not None:
        accuracy = run.interpretation.accuracy
    return accuracy


def _key_figures(run: RunFiles) -> KeyFigures:
    """The numbers at the top of the page, above the table of contents."""
    metrics = run.metrics
    return KeyFigures([
        ("Test accuracy", format_percent(_test_accuracy(run))),
        ("Test loss", format_number(metrics.get("test_loss"))),
        ("Dataset", format_value(metrics.get("dataset"))),
        ("Model", format_value(metrics.get("model"))),
        ("Epochs", format_value(metrics.get("epochs"))),
        ("Training time", format_seconds(metrics.get("train_time_s"))),
    ])


def _headline(run: RunFiles) -> list[Block]:
    metrics = run.metrics
    accuracy = _test_accuracy(run)
    params = format_integer(metrics.get("params"))
    if metrics.get("trainable_params") is not None:
        params += f" ({format_integer(metrics.get('trainable_params'))} trainable)"
    rows = [
        ["Name", format_value(metrics.get("name"))],
        ["Dataset", format_value(metrics.get("dataset"))],
        ["Model", format_value(metrics.get("model"))],
        ["Status", format_value(metrics.get("status", "unknown"))],
        ["Test accuracy", format_percent(accuracy)],
        ["Test loss", format_number(metrics.get("test_loss"))],
        ["Parameters", params],
        ["Epochs run / planned", f"{format_value(metrics.get('epochs'))} / "
                                 f"{format_value(metrics.get('epochs_planned'))}"],
        ["Training time", format_seconds(metrics.get("train_time_s"))],
        ["Best epoch", format_value(metrics.get("best_epoch"))],
        ["Stop reason", format_value(metrics.get("stop_reason"))],
        ["Device", format_value(metrics.get("device"))],
    ]
    return [Heading("Headline metrics"), Table(["Metric", "Value"], rows)]


def _curves(run: RunFiles, figures: FigureWriter) -> list[Block]:
    blocks: list[Block] = [Heading("Training curves")]
    if not run.history:
        return blocks + [Callout(f"No {runs.HISTORY_FILE}: no epoch finished.")]
    restored = "weights restored" in str(run.metrics.get("stop_reason") or "")
    best_epoch = run.metrics.get("best_epoch")
    blocks.append(figures.add("history", lambda: plots.plot_history(run.history, best_epoch, restored),
                              "Loss, accuracy and learning rate per epoch; the best epoch marked"))
    return blocks + [Paragraph(f"Diagnosis: {diagnose_curves(run.history)}")]


def _augmentation(run: RunFiles, figures: FigureWriter) -> list[Block]:
    """What augmentation training used, and originals beside augmented versions when saved."""
    lines = run.metrics.get("augmentation") or []
    test_time = run.metrics.get("test_time_augmentation")
    if not lines and test_time in (None, "none"):
        return []
    blocks: list[Block] = [Heading("Augmentation")]
    if lines:
        blocks += [Paragraph("Training images were augmented on the fly, each with its own random parameters:"),
                   BulletList([str(line) for line in lines])]
    if test_time not in (None, "none"):
        below = ((run.config or {}).get("augment") or {}).get("test_time_below")
        only = f", for the images whose plain top probability was below {below} (the others: one view)" if below else ""
        blocks.append(Paragraph(f"Test-time augmentation: probabilities averaged over the {test_time} views{only}."))
    path = run.run_dir / runs.AUGMENTATION_FILE
    if path.exists():
        saved = read_augmentation(path)
        blocks.append(figures.add("augmentation",
                                  lambda: image_plots.plot_augmentation(saved["originals"], saved["augmented"]),
                                  "Each row: a training image, then augmented versions of it"))
    return blocks


def _per_class(interpretation: Interpretation, figures: FigureWriter) -> list[Block]:
    per_class = interpretation.per_class()
    rows = [
        [row["class"], str(row["support"]), f"{row['precision']:.3f}", f"{row['recall']:.3f}",
         f"{row['f1']:.3f}", format_percent(row["accuracy"])]
        for row in per_class
    ]
    macro = interpretation.macro_averages()
    rows.append(["macro average", str(len(interpretation.labels)), f"{macro['precision']:.3f}",
                 f"{macro['recall']:.3f}", f"{macro['f1']:.3f}", ""])
    return [
        Heading("Per-class scores"),
        Table(["Class", "Support", "Precision", "Recall", "F1", "Accuracy"], rows),
        figures.add("per_class", lambda: plots.plot_per_class(per_class), "Precision, recall and F1 per class"),
    ]


def _examples(run: RunFiles, figures: FigureWriter, worst_n: int) -> list[Block]:
    interpretation = run.interpretation
    assert interpretation is not None
    worst = interpretation.worst(worst_n)
    errors = interpretation.confident_errors(worst_n)
    unsure = interpretation.least_confident_correct(worst_n)
    caption = "in the table's order: the true class, the prediction (red and crossed when wrong)"
    blocks: list[Block] = [
        Heading(f"{len(worst)} worst classified images" if worst else "Worst classified images"),
        Paragraph("Misclassified test images ranked by the probability the model gave their TRUE "
                  "class, lowest first (rank 1 = worst)."),
    ]
    if run.examples is None:
        blocks.append(Callout(f"No {runs.EXAMPLES_FILE} in the run directory: tables only, no images."))
    blocks += [_error_table(worst)]
    blocks += _example_grid(run.examples, worst, "worst", f"Worst classified: {caption}", figures)
    blocks += [Heading("Most confident errors", 3), _error_table(errors)]
    blocks += _example_grid(run.examples, errors, "confident_errors", f"Most confident errors: {caption}", figures)
    blocks += [Heading("Least confident correct predictions", 3), Table(
        ["Rank", "Index", "Class", "P(predicted)"],
        [[str(row["rank"]), str(row["index"]), row["true"], format_probability(row["p_pred"])] for row in unsure])]
    blocks += _example_grid(run.examples, unsure, "least_confident_correct",
                            f"Least confident correct: {caption}", figures)
    return blocks + _prediction_bars(run, figures)


def _error_table(rows: list[dict[str, Any]]) -> Block:
    if not rows:
        return Paragraph("No test image was misclassified.")
    return Table(
        ["Rank", "Index", "Predicted", "True", "P(true)", "P(predicted)"],
        [[str(row["rank"]), str(row["index"]), row["predicted"], row["true"],
          format_probability(row["p_true"]), format_probability(row["p_pred"])] for row in rows],
    )


def _example_grid(examples: dict[str, np.ndarray] | None, rows: list[dict[str, Any]], name: str,
                  caption: str, figures: FigureWriter) -> list[Block]:
    if examples is None or not rows:
        return []
    images, found = lookup_images(examples, np.array([row["index"] for row in rows], dtype=np.int64))
    shown = [row for row, present in zip(rows, found) if present]
    blocks: list[Block] = []
    if len(shown) < len(rows):
        blocks.append(Callout(f"{len(rows) - len(shown)} of these images are not in {runs.EXAMPLES_FILE}."))
    if shown:
        blocks.append(figures.add(name, lambda: image_plots.plot_example_grid(images, shown, GRID_COLUMNS), caption))
    return blocks


def _prediction_bars(run: RunFiles, figures: FigureWriter) -> list[Block]:
    interpretation = run.interpretation
    if run.examples is None or interpretation is None:
        return []
    wanted = np.arange(min(N_PREDICTION_EXAMPLES, len(interpretation.labels)))
    images, found = lookup_images(run.examples, wanted)
    if not found.any():
        return []
    indices = wanted[found]
    def figure():
        return image_plots.plot_prediction_bars(images, interpretation.probabilities[indices],
                                          interpretation.class_names, interpretation.labels[indices])

    caption = f"Predicted distribution for test images {', '.join(str(i) for i in indices)}"
    return [Heading("Predictions for the first test images"), figures.add("predictions", figure, caption)]


def _appendix(run: RunFiles) -> list[Block]:
    blocks: list[Block] = []
    if run.summary is not None:
        blocks += [Heading("Model summary"), Preformatted(run.summary)]
    if run.config is not None:
        blocks += [Heading("Resolved config"), Preformatted(yaml.safe_dump(run.config, sort_keys=False))]
    if run.environment:
        rows = [[str(key), format_value(value)] for key, value in run.environment.items()]
        blocks += [Heading("Environment"), Table(["Item", "Value"], rows)]
    seed = run.metrics.get("seed", (run.environment or {}).get("seed"))
    return blocks + [Paragraph(f"Seed: {format_value(seed)}")]
