"""A side-by-side comparison of finished runs, built from their run directories alone:
comparison.csv, comparison.md and a self-contained comparison.html with overlaid validation
curves, one row-normalised confusion matrix per run (all on one 0-1 scale, two to a row on a wide screen)
and their worst-classified images in one table; each run's name links its own report (a relative link, so
the folders can move together).

A multi-seed folder (`cnnlab.studies.seeds`) is compared as one run: its test accuracy and loss as
"mean ± std (n seeds)", its curves the mean over the seeds, its confusion matrix and worst images its
first seed's. A zoo model's row shows the lab report's figure and whether the run followed the report's recipe
(`cnnlab.report.lab_report_figures`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from cnnlab import output_folders, runs
from cnnlab.analysis.run_files import RunFiles, load_run
from cnnlab.analysis.seed_runs import is_seed_aggregate, load_seed_aggregate
from cnnlab.errors import CnnlabError
from cnnlab.report import plots
from cnnlab.report.document import (
    Block, Callout, Contents, FigureWriter, Heading, ImageRow, Inline, KeyFigures, Link, Paragraph, Table,
    format_integer, format_number, format_percent, format_probability, format_value, render_html, render_markdown,
)
from cnnlab.report.lab_report_figures import format_reported, recipe_cell
from cnnlab.report.seeds_report import format_mean_std

COMPARISON_WORST_N = 10
COMPARISON_COLUMNS = ["model", "dataset", "params", "epochs", "test_loss", "test_accuracy", "train_time_s"]
SEED_COLUMNS = ["test_accuracy_std", "test_loss_std", "n_seeds"]  # only when a multi-seed folder is compared


def write_comparison(run_dirs: list[Path], out_dir: Path, labels: list[str] | None = None,
                     failed: Mapping[str, str] | None = None, title: str | None = None,
                     description: str = "") -> dict[str, Path]:
    """Compare finished runs side by side: comparison.csv, comparison.md and
    comparison.html (with figures) in ``out_dir``. Returns their paths by kind. ``failed`` (label: why)
    adds a row for each experiment that did not finish, with a status column saying why. ``title`` and
    ``description`` (a suite's name and description) head the page."""
    if not run_dirs:
        raise CnnlabError("Give at least one run directory to compare.")
    loaded = [load_for_comparison(run_dir) for run_dir in run_dirs]
    labels = _comparison_labels(loaded, labels)
    out_dir = Path(out_dir)
    run_rows = [_comparison_row(label, run) for label, run in zip(labels, loaded)]
    rows = run_rows + [{"model": label, "status": f"failed: {why}"} for label, why in (failed or {}).items()]
    has_reported = any(row["reported_accuracy"] is not None for row in run_rows)
    reported = ["reported_accuracy", "reported_accuracy_kind", "recipe"] if has_reported else []
    has_seeds = any(row["n_seeds"] is not None for row in run_rows)
    columns = COMPARISON_COLUMNS + (SEED_COLUMNS if has_seeds else []) + reported + (["status"] if failed else [])
    columns += ["run_dir"]
    paths = {"csv": out_dir / "comparison.csv", "md": out_dir / "comparison.md", "html": out_dir / "comparison.html"}
    runs.write_csv_atomic(paths["csv"], rows, columns)
    figures = FigureWriter(out_dir)
    reports = [_report_link(run.run_dir, out_dir) for run in loaded] + [None] * len(failed or {})
    blocks: list[Block] = [Heading(title or f"Comparison of {len(loaded)} runs", 1)]
    blocks += [Paragraph(description)] if description else []
    blocks += [_key_figures(run_rows), Contents(), Heading("Runs"), _comparison_table(rows, has_reported, reports)]
    if any(row["recipe"].startswith("differs") for row in run_rows):
        blocks.append(Callout("A run whose recipe differs from the lab report's (the Recipe column; its own report "
                              "lists every difference) cannot be compared with the report's figure.", "warning"))
    if len({row["dataset"] for row in run_rows}) > 1:
        blocks.append(Callout("These runs used different datasets: their accuracies are not comparable.", "warning"))
    histories = {label: run.history for label, run in zip(labels, loaded)}
    blocks += [Heading("Validation curves")]
    if has_seeds:
        blocks.append(Callout("The curves of a multi-seed run are the mean over its seeds; its confusion matrix "
                              "and worst images are its first seed's."))
    blocks += [ImageRow([
        figures.add(f"compare_{metric}", lambda: plots.plot_comparison_curves(histories, metric), caption)
        for metric, caption in (("val_accuracy", "Validation accuracy"), ("val_loss", "Validation loss"))
    ])]
    blocks += [Heading("Confusion matrices"),
               Paragraph("Each row divided by its total, every matrix on the same 0 to 1 colour scale."), ImageRow([
        figures.add(f"compare_confusion_{number}", lambda label=label, run=run: plots.plot_confusion(
            run.interpretation.confusion(normalize=True), run.interpretation.class_names, normalize=True,
            title=label), label)
        for number, (label, run) in enumerate(zip(_seed_labels(labels, loaded), loaded), start=1)
    ])]
    blocks += [Heading(f"{COMPARISON_WORST_N} worst classified images"),
               _worst_side_by_side(_seed_labels(labels, loaded), loaded)]
    runs.write_text_atomic(paths["md"], render_markdown(blocks))
    page_title = title or "cnnlab comparison"
    runs.write_text_atomic(paths["html"], render_html(blocks, page_title, figures.pngs, wide=True))
    return paths


def _report_link(run_dir: Path, out_dir: Path) -> Link | None:
    """A link from the comparison's folder to the run's own report.html, relative; None when there is none."""
    report = Path(run_dir) / runs.REPORT_HTML_FILE
    if not report.is_file():
        return None
    return Link("report", Path(os.path.relpath(report.resolve(), Path(out_dir).resolve())).as_posix())


def _key_figures(run_rows: list[dict[str, Any]]) -> KeyFigures:
    """The number of runs and the best test accuracy, at the top of the page."""
    scored = [row for row in run_rows if row.get("test_accuracy") is not None]
    items = [("Runs", str(len(run_rows)))]
    if scored:
        best = max(scored, key=lambda row: row["test_accuracy"])
        items += [("Best test accuracy", format_percent(best["test_accuracy"])), ("Best run", str(best["model"]))]
    datasets = sorted({str(row["dataset"]) for row in run_rows})
    return KeyFigures(items + [("Dataset" if len(datasets) == 1 else "Datasets", ", ".join(datasets))])


def _comparison_labels(loaded: list[RunFiles], labels: list[str] | None) -> list[str]:
    if labels is not None:
        if len(labels) != len(loaded):
            raise CnnlabError(f"Got {len(labels)} labels for {len(loaded)} run directories; give one label per run.")
        return [str(label) for label in labels]
    names = [str(run.metrics.get("name") or run.run_dir.name) for run in loaded]
    if len(set(names)) < len(names):
        names = [f"{name} ({run.run_dir.name})" for name, run in zip(names, loaded)]
    return names


def load_for_comparison(run_dir: Path) -> RunFiles:
    """A finished run folder, or a multi-seed folder read as one run (`load_seed_aggregate`)."""
    if is_seed_aggregate(run_dir):
        return load_seed_aggregate(run_dir)
    return load_run(run_dir, require_predictions=True)


def _seed_labels(labels: list[str], loaded: list[RunFiles]) -> list[str]:
    """Labels of the one-seed sections (confusion matrices, worst images): which seed a multi-seed run shows."""
    return [f"{label} (seed {run.metrics['predictions_seed']})" if "predictions_seed" in run.metrics else label
            for label, run in zip(labels, loaded)]


def _comparison_row(label: str, run: RunFiles) -> dict[str, Any]:
    metrics = run.metrics
    statistics = metrics.get("statistics") if isinstance(metrics.get("statistics"), dict) else None
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
        "recipe": recipe_cell(metrics),
        "run_dir": str(run.run_dir),
        "status": "complete",
        "test_accuracy_stats": (statistics or {}).get("test_accuracy"),
        "test_loss_stats": (statistics or {}).get("test_loss"),
        "test_accuracy_std": ((statistics or {}).get("test_accuracy") or {}).get("std"),
        "test_loss_std": ((statistics or {}).get("test_loss") or {}).get("std"),
        "n_seeds": metrics.get("n_seeds") if statistics is not None else None,
    }


def _comparison_table(rows: list[dict[str, Any]], has_reported: bool, reports: list[Link | None]) -> Table:
    headers = ["Model", "Dataset", "Params", "Epochs", "Test loss", "Test accuracy"]
    if any(row.get("n_seeds") is not None for row in rows):
        headers[4:6] = ["Test loss (mean ± std, seeds)", "Test accuracy (mean ± std in pp, seeds)"]
    headers += ["Reported accuracy", "Recipe"] if has_reported else []
    has_failed = any(row["status"] != "complete" for row in rows)
    cells: list[list[Inline]] = []
    for row, report in zip(rows, reports):
        line: list[Inline] = [row["model"], format_value(row.get("dataset")), format_integer(row.get("params")),
                format_value(row.get("epochs")), format_number(row.get("test_loss")),
                format_percent(row.get("test_accuracy"))]
        if row.get("n_seeds") is not None:  # a multi-seed run: mean ± sample std over its seeds
            line[4:6] = [format_mean_std(row["test_loss_stats"], percent=False),
                         format_mean_std(row["test_accuracy_stats"])]
        if has_reported:
            line += [format_reported(row.get("reported_accuracy"), row.get("reported_accuracy_kind")),
                     row.get("recipe", "")]
        line += [format_number(row.get("train_time_s"), 2)]
        cells.append(line + ([row["status"]] if has_failed else []) + [report or ""])
    return Table(headers + ["Training time (s)"] + (["Status"] if has_failed else []) + ["Report"], cells)


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


def compare_runs(run_dirs: list[Path], out: Path, overwrite: bool = False) -> dict[str, Path]:
    """`cnnlab compare`: the comparison written through the output gate: into a new or empty ``out`` or an
    earlier comparison, which is replaced only with ``overwrite`` and only once the new one is complete."""
    output_folders.check_output_folder(out, overwrite, "compare")
    loaded = [load_for_comparison(run_dir) for run_dir in run_dirs]  # bad runs: nothing written
    folder = output_folders.prepare_output_folder(out, overwrite, "compare")
    paths = write_comparison([run.run_dir for run in loaded], folder)
    return output_folders.moved(paths, folder, output_folders.publish_output_folder(folder))
