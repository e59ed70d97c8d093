"""Reports built from a run directory alone: ``report.md`` and a self-contained
``report.html`` for one run, and a side-by-side comparison of several runs.

Nothing here loads a dataset: the trainer saved the predictions and the test images the
analysis shows, so any report can be rebuilt or re-styled later. Only the "looking inside"
section (``cnnlab.report.network_section``) rebuilds the model from its saved weights, on those images."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cnnlab import runs
from cnnlab.report import plots
from cnnlab.analysis.interpretation import N_PREDICTION_EXAMPLES, Interpretation, describe_confused, diagnose_curves
from cnnlab.errors import CnnlabError
from cnnlab.report.document import (
    Block, BulletList, Callout, FigureWriter, Heading, ImageRow, Paragraph, Preformatted, Table,
    format_integer, format_number, format_percent, format_probability, format_seconds, format_value, render_html,
    render_markdown,
)
from cnnlab.report.network_section import inside_section

REPORT_MARKDOWN = "report.md"
REPORT_HTML = "report.html"
GRID_COLUMNS = 5


@dataclass
class RunFiles:
    """What a run directory holds; absent optional files are None."""

    run_dir: Path
    metrics: dict[str, Any]
    history: list[dict[str, float]]
    config: Any = None
    interpretation: Interpretation | None = None
    examples: dict[str, np.ndarray] | None = None
    summary: str | None = None
    environment: dict[str, Any] | None = None


def load_run(run_dir: Path, require_predictions: bool = False) -> RunFiles:
    """Read every artefact of a run directory; only metrics.json is mandatory
    (and predictions.npz when ``require_predictions``)."""
    run_dir = Path(run_dir)
    metrics_path = run_dir / runs.METRICS_FILE
    if not metrics_path.is_file():
        raise CnnlabError(
            f"{run_dir} is not a complete cnnlab run directory: {runs.METRICS_FILE} is missing. "
            "Point to a folder written by `cnnlab train`, or wait until that run has finished."
        )
    run = RunFiles(run_dir, _read_json(metrics_path), runs.read_history(run_dir))
    predictions_path = run_dir / runs.PREDICTIONS_FILE
    if predictions_path.exists():
        run.interpretation = Interpretation.from_run(run_dir)
    elif require_predictions:
        raise CnnlabError(
            f"{run_dir} is incomplete: {runs.PREDICTIONS_FILE} is missing (status "
            f"\"{run.metrics.get('status', 'unknown')}\"). Compare only runs that finished."
        )
    config_path = run_dir / runs.CONFIG_FILE
    if config_path.exists():
        run.config = _read_yaml(config_path)
    examples_path = run_dir / runs.EXAMPLES_FILE
    if examples_path.exists():
        run.examples = runs.load_npz(examples_path)
    summary_path = run_dir / runs.SUMMARY_FILE
    if summary_path.exists():
        run.summary = summary_path.read_text(encoding="utf-8")
    environment_path = run_dir / runs.ENVIRONMENT_FILE
    if environment_path.exists():
        run.environment = _read_json(environment_path)
    return run


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return runs.read_json(path)
    except ValueError as error:
        raise CnnlabError(f"{path} is not valid JSON ({error}); the run directory is damaged.") from None


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise CnnlabError(f"{path} is not valid YAML ({error}); the run directory is damaged.") from None


def write_report(run_dir: Path, worst_n: int = 10) -> tuple[Path, Path]:
    """Write figures/*.png, report.md and report.html into ``run_dir``; return the
    Markdown and HTML paths. Sections whose files are absent are skipped with a note."""
    run = load_run(run_dir)
    figures = FigureWriter(run.run_dir)
    blocks = _header(run) + _headline(run) + _curves(run, figures) + _augmentation(run, figures)
    if run.interpretation is None:
        blocks.append(Callout(f"No {runs.PREDICTIONS_FILE}: the test-set sections are skipped."))
    else:
        blocks += _per_class(run.interpretation, figures) + _confusion(run.interpretation, figures)
        blocks += _examples(run, figures, worst_n)
        blocks += inside_section(run, figures)
    blocks += _appendix(run)
    title = f"cnnlab report: {run.metrics.get('name', run.run_dir.name)}"
    markdown_path = run.run_dir / REPORT_MARKDOWN
    html_path = run.run_dir / REPORT_HTML
    runs.write_text_atomic(markdown_path, render_markdown(blocks))
    runs.write_text_atomic(html_path, render_html(blocks, title, figures.pngs))
    return markdown_path, html_path


def _header(run: RunFiles) -> list[Block]:
    metrics = run.metrics
    status = str(metrics.get("status", "unknown"))
    blocks: list[Block] = [
        Heading(f"Report: {metrics.get('name', run.run_dir.name)}", 1),
        Table(["Run", "Value"], [
            ["Name", format_value(metrics.get("name"))],
            ["Dataset", format_value(metrics.get("dataset"))],
            ["Model", format_value(metrics.get("model"))],
            ["Status", status],
        ]),
    ]
    if status == "diverged":
        reason = metrics.get("stop_reason") or "the loss became NaN or infinite"
        blocks.append(Callout(
            f"Training diverged: {reason}. The weights after that point are meaningless, so the "
            "figures below show the run up to the divergence. A lower learning rate, gradient "
            "clipping or normalised inputs usually cure it.", "warning"))
    elif status == "running":
        blocks.append(Callout("This run has not finished: the report shows what it has written so far."))
    return blocks


def _headline(run: RunFiles) -> list[Block]:
    metrics = run.metrics
    accuracy = metrics.get("test_accuracy")
    if accuracy is None and run.interpretation is not None:
        accuracy = run.interpretation.accuracy
    params = format_integer(metrics.get("params"))
    if metrics.get("trainable_params") is not None:
        params += f" ({format_integer(metrics.get('trainable_params'))} trainable)"
    rows = [
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
    blocks.append(figures.add("history", plots.plot_history(run.history), "Loss and accuracy per epoch"))
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
        blocks.append(Paragraph(f"Test-time augmentation: probabilities averaged over the {test_time} views."))
    path = run.run_dir / runs.AUGMENTATION_FILE
    if path.exists():
        from cnnlab.studies.augment_preview import plot_augmentation

        saved = runs.load_npz(path)
        blocks.append(figures.add("augmentation", plot_augmentation(saved["originals"], saved["augmented"]),
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
        figures.add("per_class", plots.plot_per_class(per_class), "Precision, recall and F1 per class"),
    ]


def _confusion(interpretation: Interpretation, figures: FigureWriter) -> list[Block]:
    names = interpretation.class_names
    counts = plots.plot_confusion(interpretation.confusion(), names)
    normalised = plots.plot_confusion(interpretation.confusion(normalize=True), names, normalize=True)
    pairs = interpretation.most_confused(k=10)
    blocks: list[Block] = [
        Heading("Confusion matrix"),
        ImageRow([figures.add("confusion", counts, "Counts (rows: true class, columns: predicted)"),
                  figures.add("confusion_normalized", normalised, "Each row divided by its total")]),
        Heading("Most confused pairs", 3),
    ]
    never = [names[label] for label in range(len(names))
             if not (interpretation.predictions == label).any() and (interpretation.labels == label).any()]
    if never:
        blocks.insert(1, Callout(
            f"The model never predicts {', '.join(never)}. When whole classes are never predicted, look for a "
            "softmax applied before a cross-entropy loss (report 000's PyTorch part saw exactly this), a learning "
            "rate too high, or too few epochs.", "warning"))
    if not pairs:
        return blocks + [Paragraph("No test image was misclassified.")]
    return blocks + [BulletList([describe_confused(pair) for pair in pairs], ordered=True)]


def _examples(run: RunFiles, figures: FigureWriter, worst_n: int) -> list[Block]:
    interpretation = run.interpretation
    assert interpretation is not None
    worst = interpretation.worst(worst_n)
    errors = interpretation.confident_errors(worst_n)
    unsure = interpretation.least_confident_correct(worst_n)
    caption = "#index, true class, predicted class, P(true)"
    blocks: list[Block] = [
        Heading(f"{worst_n} worst classified images"),
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
        captions = [f"#{row['index']} true {row['true']}, pred {row['predicted']}\np(true)={format_probability(row['p_true'])}" for row in shown]
        blocks.append(figures.add(name, plots.plot_image_grid(images, captions, GRID_COLUMNS), caption))
    return blocks


def lookup_images(examples: dict[str, np.ndarray], wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Images of the ``wanted`` test indices stored in examples.npz, and a mask of
    which indices were found."""
    stored = np.asarray(examples["indices"], dtype=np.int64)
    order = np.argsort(stored)
    positions = np.clip(np.searchsorted(stored[order], wanted), 0, max(len(stored) - 1, 0))
    found = stored[order][positions] == wanted if len(stored) else np.zeros(len(wanted), bool)
    return examples["images"][order[positions[found]]], found


def _prediction_bars(run: RunFiles, figures: FigureWriter) -> list[Block]:
    interpretation = run.interpretation
    if run.examples is None or interpretation is None:
        return []
    wanted = np.arange(min(N_PREDICTION_EXAMPLES, len(interpretation.labels)))
    images, found = lookup_images(run.examples, wanted)
    if not found.any():
        return []
    indices = wanted[found]
    figure = plots.plot_prediction_bars(images, interpretation.probabilities[indices],
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


COMPARISON_WORST_N = 10
COMPARISON_COLUMNS = ["model", "dataset", "params", "epochs", "test_loss", "test_accuracy", "train_time_s"]


def write_comparison(run_dirs: list[Path], out_dir: Path, labels: list[str] | None = None) -> dict[str, Path]:
    """Compare finished runs side by side: comparison.csv, comparison.md and
    comparison.html (with figures) in ``out_dir``. Returns their paths by kind."""
    if not run_dirs:
        raise CnnlabError("Give at least one run directory to compare.")
    loaded = [load_run(run_dir, require_predictions=True) for run_dir in run_dirs]
    labels = _comparison_labels(loaded, labels)
    out_dir = Path(out_dir)
    rows = [_comparison_row(label, run) for label, run in zip(labels, loaded)]
    has_reported = any(row["reported_accuracy"] is not None for row in rows)
    reported = ["reported_accuracy", "reported_accuracy_kind"] if has_reported else []
    columns = COMPARISON_COLUMNS + reported + ["run_dir"]
    paths = {"csv": out_dir / "comparison.csv", "md": out_dir / "comparison.md", "html": out_dir / "comparison.html"}
    runs.write_csv_atomic(paths["csv"], rows, columns)
    figures = FigureWriter(out_dir)
    blocks: list[Block] = [Heading(f"Comparison of {len(loaded)} runs", 1), _comparison_table(rows, has_reported)]
    if len({row["dataset"] for row in rows}) > 1:
        blocks.append(Callout("These runs used different datasets: their accuracies are not comparable.", "warning"))
    histories = {label: run.history for label, run in zip(labels, loaded)}
    blocks += [Heading("Validation curves"), ImageRow([
        figures.add(f"compare_{metric}", plots.plot_comparison_curves(histories, metric), caption)
        for metric, caption in (("val_accuracy", "Validation accuracy"), ("val_loss", "Validation loss"))
    ])]
    blocks += [Heading("Confusion matrices"), ImageRow([
        figures.add(f"compare_confusion_{number}", plots.plot_confusion(
            run.interpretation.confusion(), run.interpretation.class_names, title=label), label)
        for number, (label, run) in enumerate(zip(labels, loaded), start=1)
    ])]
    blocks += [Heading(f"{COMPARISON_WORST_N} worst classified images"), _worst_side_by_side(labels, loaded)]
    runs.write_text_atomic(paths["md"], render_markdown(blocks))
    runs.write_text_atomic(paths["html"], render_html(blocks, "cnnlab comparison", figures.pngs))
    return paths


def _comparison_labels(loaded: list[RunFiles], labels: list[str] | None) -> list[str]:
    if labels is not None:
        if len(labels) != len(loaded):
            raise CnnlabError(f"Got {len(labels)} labels for {len(loaded)} run directories; give one label per run.")
        return [str(label) for label in labels]
    names = [str(run.metrics.get("name") or run.run_dir.name) for run in loaded]
    if len(set(names)) < len(names):
        names = [f"{name} ({run.run_dir.name})" for name, run in zip(names, loaded)]
    return names


def _comparison_row(label: str, run: RunFiles) -> dict[str, Any]:
    metrics = run.metrics
    return {
        "model": label,
        "dataset": format_value(metrics.get("dataset")),
        "params": metrics.get("params"),
        "epochs": metrics.get("epochs"),
        "test_loss": metrics.get("test_loss"),
        "test_accuracy": metrics.get("test_accuracy"),
        "train_time_s": metrics.get("train_time_s"),
        "reported_accuracy": metrics.get("reported_accuracy"),
        "reported_accuracy_kind": metrics.get("reported_accuracy_kind"),
        "run_dir": str(run.run_dir),
    }


def _comparison_table(rows: list[dict[str, Any]], has_reported: bool) -> Table:
    headers = ["Model", "Dataset", "Params", "Epochs", "Test loss", "Test accuracy"]
    headers += ["Reported accuracy"] if has_reported else []
    cells = []
    for row in rows:
        line = [row["model"], row["dataset"], format_integer(row["params"]), format_value(row["epochs"]),
                format_number(row["test_loss"]), format_percent(row["test_accuracy"])]
        line += [_format_reported(row["reported_accuracy"], row["reported_accuracy_kind"])] if has_reported else []
        cells.append(line + [format_number(row["train_time_s"], 2)])
    return Table(headers + ["Training time (s)"], cells)


def _format_reported(value: Any, kind: Any) -> str:
    """The lab report's own figure, a fraction (0.9196) or a percentage (91.96),
    with what it measured (test or validation accuracy) when known."""
    if value is None:
        return "n/a"
    text = format_percent(value) if float(value) <= 1 else f"{float(value):.2f}%"
    return f"{text} ({kind})" if kind else text


def _worst_side_by_side(labels: list[str], loaded: list[RunFiles]) -> Table:
    """One column group per run, as in the lab reports' three-model tables."""
    worst = [run.interpretation.worst(COMPARISON_WORST_N) for run in loaded]
    rows = []
    for rank in range(1, max((len(run_rows) for run_rows in worst), default=0) + 1):
        line = [str(rank)]
        for run_rows in worst:
            if rank <= len(run_rows):
                row = run_rows[rank - 1]
                line += [str(row["index"]), row["predicted"], row["true"], format_probability(row["p_true"])]
            else:
                line += ["", "", "", ""]
        rows.append(line)
    headers = ["Rank"] + ["Index", "Predicted", "True", "P(true)"] * len(loaded)
    return Table(headers, rows, groups=[("", 1)] + [(label, 4) for label in labels])
