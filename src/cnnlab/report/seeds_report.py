"""The report of a multi-seed folder (`cnnlab.studies.seeds`): report.md and a self-contained report.html
with the statistics over the seeds, the training and validation curves as the mean over the seeds with a
min-max band, and one row per seed linking its own run report. Built from the folder alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
from matplotlib.figure import Figure

from cnnlab import runs
from cnnlab.analysis.run_files import read_metrics
from cnnlab.analysis.seed_runs import history_bands
from cnnlab.errors import CnnlabError
from cnnlab.report import plots
from cnnlab.report.document import (
    Block, Callout, Contents, FigureWriter, Heading, ImageRow, KeyFigures, Link, Paragraph, Table, format_integer,
    format_number, format_percent, format_value, render_html, render_markdown,
)
from cnnlab.report.lab_report_figures import against_report_section

# (metrics key, row label, decimals; None: a fraction shown as a percentage, its std in percentage points)
STATISTIC_ROWS = (("test_accuracy", "Test accuracy", None), ("test_loss", "Test loss", 4),
                  ("train_time_s", "Training time (s)", 2), ("epochs", "Epochs trained", 1))


def format_mean_std(statistic: Mapping[str, Any] | None, percent: bool = True, digits: int = 4) -> str:
    """"97.52% ± 0.31 (3 seeds)": the mean, the sample standard deviation (in percentage points for a
    fraction) and the number of seeds; "± n/a" with one seed."""
    if not statistic or statistic.get("mean") is None:
        return "n/a"
    count = sum(value is not None for value in statistic.get("values") or [])
    std = statistic.get("std")
    if percent:
        mean_text, std_text = format_percent(statistic["mean"]), "n/a" if std is None else f"{100 * std:.2f}"
    else:
        mean_text, std_text = format_number(statistic["mean"], digits), format_number(std, digits)
    return f"{mean_text} ± {std_text} ({count} seed{'s' if count != 1 else ''})"


def write_seeds_report(folder: Path) -> tuple[Path, Path]:
    """Write figures/seeds_*.png, report.md and report.html into the multi-seed ``folder``; return the
    Markdown and HTML paths. Raises CnnlabError naming the file when the aggregate or a seed run is damaged."""
    folder = runs.require_run_dir(Path(folder))
    metrics = read_metrics(folder)
    names = metrics.get("runs")
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise CnnlabError(f"{folder / runs.METRICS_FILE} lists no seed runs (\"runs\"): it is not a multi-seed "
                          "aggregate. Run the multi-seed experiment again to rewrite it.")
    run_dirs = [folder / Path(name).name for name in names]
    seed_metrics = [read_metrics(run_dir) for run_dir in run_dirs]
    histories = [runs.read_history(run_dir) for run_dir in run_dirs]
    figures = FigureWriter(folder)
    blocks = _summary(metrics) + _curves(history_bands(histories), len(names), figures)
    blocks += _per_seed(metrics, names, seed_metrics)
    markdown_path, html_path = folder / runs.REPORT_MARKDOWN_FILE, folder / runs.REPORT_HTML_FILE
    runs.write_text_atomic(markdown_path, render_markdown(blocks))
    runs.write_text_atomic(html_path, render_html(blocks, f"cnnlab seeds: {metrics.get('name', folder.name)}",
                                                  figures.pngs))
    return markdown_path, html_path


def _summary(metrics: dict[str, Any]) -> list[Block]:
    stats = metrics.get("statistics") or {}
    seeds = metrics.get("seeds") or []
    blocks: list[Block] = [
        Heading(f"{metrics.get('name', 'experiment')}: {len(seeds)} seeds", 1),
        KeyFigures([("Test accuracy", format_mean_std(stats.get("test_accuracy"))),
                    ("Test loss", format_mean_std(stats.get("test_loss"), percent=False)),
                    ("Dataset", format_value(metrics.get("dataset"))), ("Model", format_value(metrics.get("model")))]),
        Contents(),
        Heading("Statistics over the seeds"),
        Paragraph(f"Model {format_value(metrics.get('model'))} on {format_value(metrics.get('dataset'))}, trained "
                  f"once per seed ({', '.join(map(str, seeds))}); each seed's run is an ordinary run folder "
                  "beside this report. Std is the sample standard deviation over the seeds (ddof=1)."),
    ]
    if metrics.get("status") != "complete":
        blocks.append(Callout(f"Status {format_value(metrics.get('status'))}: diverged seeds are left out of the "
                              f"statistics ({format_value(metrics.get('diverged_seeds'))}).", "warning"))
    rows = []
    for key, label, digits in STATISTIC_ROWS:
        stat, std = stats.get(key) or {}, (stats.get(key) or {}).get("std")
        shown = format_percent if digits is None else (lambda value, digits=digits: format_number(value, digits))
        spread = "n/a" if std is None else (f"{100 * std:.2f} pp" if digits is None else format_number(std, digits))
        rows.append([label, shown(stat.get("mean")), spread, shown(stat.get("min")), shown(stat.get("max"))])
    blocks.append(Table(["", "Mean", "Std (ddof=1)", "Min", "Max"], rows))
    return blocks + against_report_section(metrics, format_mean_std(stats.get("test_accuracy")), "These runs")


def _curves(bands: dict[str, dict[str, np.ndarray]], count: int, figures: FigureWriter) -> list[Block]:
    caption = f"{{}}: mean over {count} seeds, the band spans their min to max"
    return [Heading("Training curves"), ImageRow([
        figures.add(f"seeds_{metric}", lambda metric=metric: plot_seed_bands(bands, metric),
                    caption.format(metric.capitalize()))
        for metric in ("loss", "accuracy")
    ])]


def plot_seed_bands(bands: Mapping[str, Mapping[str, np.ndarray]], metric: str) -> Figure:
    """Training and validation ``metric`` ("loss" or "accuracy") per epoch: the mean over the seeds as a
    line, their min-max range as a shaded band."""
    figure = plots.new_figure(6, 3.4)
    axes = figure.subplots()
    for split, style, label in (("train", "-o", "training"), ("val", "-s", "validation")):
        band = bands.get(f"{split}_{metric}")
        if band is None or not len(band["epochs"]):
            continue
        epochs = np.asarray(band["epochs"], dtype=float)
        line = axes.plot(epochs, band["mean"], style, markersize=3, label=f"{label} (mean)")[0]
        axes.fill_between(epochs, band["min"], band["max"], color=line.get_color(), alpha=0.2,
                          label=f"{label} (min-max)")
    axes.set_xlabel("epoch")
    plots.integer_epochs(axes)
    axes.set_ylabel(metric)
    axes.set_title(f"{metric.capitalize()}, mean and min-max over the seeds")
    axes.grid(alpha=0.3)
    if axes.get_lines():
        axes.legend(fontsize=plots.MIN_FONT_PT)
    figure.tight_layout()
    return figure


def _per_seed(metrics: dict[str, Any], names: list[str], seed_metrics: list[dict[str, Any]]) -> list[Block]:
    rows = []
    for seed, name, run in zip(metrics.get("seeds") or [None] * len(names), names, seed_metrics):
        report = f"{Path(name).name}/{runs.REPORT_HTML_FILE}"
        rows.append([format_value(seed), Link(report, report), format_value(run.get("status")),
                     format_integer(run.get("epochs")), format_value(run.get("best_epoch")),
                     format_percent(run.get("test_accuracy")), format_number(run.get("test_loss")),
                     format_number(run.get("train_time_s"), 2)])
    headers = ["Seed", "Run report", "Status", "Epochs", "Best epoch", "Test accuracy", "Test loss",
               "Training time (s)"]
    return [Heading("Per seed"), Table(headers, rows)]
