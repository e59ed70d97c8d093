"""The report of a `cnnlab tune` study folder: report.md and a self-contained report.html with the best
trials, the optimisation history, each parameter's effect on the validation metric, every trial's
validation curve (pruned ones stopping early), the best config as YAML and the table of all trials.
Built from the folder's tune.json (the study and its trials, written by `cnnlab.studies.tune`) alone."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter

from cnnlab import runs
from cnnlab.errors import CnnlabError
from cnnlab.report import plots
from cnnlab.report.document import (
    Block, Callout, FigureWriter, Heading, ImageRow, Paragraph, Preformatted, Table, format_number, format_value,
    render_html, render_markdown,
)

STUDY_FILE = "tune.json"
BEST_CONFIG_FILE = "best.yaml"
BEST_SHOWN = 10  # rows of the best-trials table


def write_tune_report(folder: Path) -> tuple[Path, Path]:
    """Write figures/tune_*.png, report.md and report.html into the study ``folder``; return the Markdown and
    HTML paths. Raises CnnlabError when its tune.json is missing or damaged."""
    folder = Path(folder)
    try:
        study = runs.read_json(folder / STUDY_FILE)
        trials, params = list(study["trials"]), list(study["params"])
    except (OSError, ValueError, KeyError, TypeError):
        raise CnnlabError(f"{folder / STUDY_FILE} is missing or damaged: run the `cnnlab tune` command of this study "
                          "again to rewrite it.") from None
    figures = FigureWriter(folder)
    ranked = ranked_trials(trials, study.get("direction") == "maximize")
    blocks = _summary(study, trials, ranked) + _best_table(study, ranked, params, folder)
    blocks += _figures(study, trials, params, ranked, figures)
    blocks += _best_config(folder) + _all_trials(study, trials, params)
    markdown_path, html_path = folder / runs.REPORT_MARKDOWN_FILE, folder / runs.REPORT_HTML_FILE
    runs.write_text_atomic(markdown_path, render_markdown(blocks))
    title = f"cnnlab tune: {study.get('study', folder.name)}"
    runs.write_text_atomic(html_path, render_html(blocks, title, figures.pngs))
    return markdown_path, html_path


def ranked_trials(trials: Sequence[Mapping[str, Any]], maximize: bool) -> list[Mapping[str, Any]]:
    """The complete trials, best first."""
    complete = [trial for trial in trials if trial.get("state") == "complete" and _finite(trial.get("value"))]
    return sorted(complete, key=lambda trial: (-trial["value"] if maximize else trial["value"], trial["number"]))


def _summary(study: Mapping[str, Any], trials: list[dict[str, Any]], ranked: list[Mapping[str, Any]]) -> list[Block]:
    metric = str(study.get("metric"))
    counts = {state: sum(trial.get("state") == state for trial in trials)
              for state in ("complete", "pruned", "fail", "running")}
    better = "higher" if study.get("direction") == "maximize" else "lower"
    sampler, pruner = study.get("sampler") or {}, study.get("pruner") or {}
    pruning = ("none" if pruner.get("name") == "none" else f"median, after {pruner.get('startup_trials')} finished "
               f"trials and from epoch {int(pruner.get('warmup_epochs', 0)) + 1}")
    blocks: list[Block] = [
        Heading(f"Tuning study: {study.get('study')}", 1),
        Paragraph(f"Experiment {format_value(study.get('experiment'))}: {len(trials)} of "
                  f"{format_value(study.get('trials_planned'))} planned trials: {counts['complete']} complete, "
                  f"{counts['pruned']} pruned, {counts['fail']} failed, {counts['running']} running. Trials are "
                  f"compared on their validation {metric.removeprefix('val_')} ({metric}, {better} is better), never "
                  f"on the test set. Sampler {format_value(sampler.get('name'))} (seed "
                  f"{format_value(sampler.get('seed'))}); pruner {pruning}. Storage: "
                  f"{format_value(study.get('storage'))}."),
        Paragraph("Searched: " + "; ".join(f"{param['key']} = {param['spec']}" for param in study["params"]) + "."),
    ]
    if ranked:
        best = ranked[0]
        blocks.append(Callout(f"Best: trial {best['number']}, {metric} {best['value']:.4f}, with "
                              f"{_params_text(best)}. {BEST_CONFIG_FILE} below is its config: cnnlab train "
                              f"{BEST_CONFIG_FILE} trains it and measures its test accuracy once."))
    else:
        blocks.append(Callout("No trial is complete yet: there is no best config.", "warning"))
    return blocks


def _best_table(study: Mapping[str, Any], ranked: list[Mapping[str, Any]], params: list[dict[str, Any]],
                folder: Path) -> list[Block]:
    if not ranked:
        return []
    rows = []
    for rank, trial in enumerate(ranked[:BEST_SHOWN], 1):
        report = f"{trial.get('run_dir')}/{runs.REPORT_HTML_FILE}"
        rows.append([str(rank), str(trial["number"]), format_number(trial["value"]),
                     *[_value_text(trial["params"].get(param["key"])) for param in params],
                     format_value(trial.get("epochs")), format_number(trial.get("duration_s"), 1),
                     report if (folder / report).is_file() else "(on another machine)"])
    headers = ["Rank", "Trial", str(study.get("metric")), *[param["key"] for param in params], "Epochs",
               "Duration (s)", "Run report"]
    return [Heading(f"Best trials (the {min(BEST_SHOWN, len(ranked))} best of {len(ranked)} complete)"),
            Table(headers, rows)]


def _figures(study: Mapping[str, Any], trials: list[dict[str, Any]], params: list[dict[str, Any]],
             ranked: list[Mapping[str, Any]], figures: FigureWriter) -> list[Block]:
    metric, maximize = str(study.get("metric")), study.get("direction") == "maximize"
    best = ranked[0]["number"] if ranked else None
    blocks: list[Block] = [Heading("Optimisation history"), figures.add(
        "tune_history", lambda: plot_history(trials, metric, maximize),
        f"{metric} of each trial in the order they started (pruned ones at their last report), and the best so far")]
    blocks += [Heading("Each parameter's effect"), ImageRow([
        figures.add(f"tune_param_{number}", lambda param=param: plot_parameter(trials, param, metric),
                    f"{param['key']} ({param['spec']}) against {metric}")
        for number, param in enumerate(params, 1)])]
    blocks += [Heading("Validation curves"), figures.add(
        "tune_curves", lambda: plot_curves(trials, metric, best),
        f"{metric} per epoch of every trial; pruned trials (dashed) stop where the pruner stopped them")]
    return blocks


def plot_history(trials: Sequence[Mapping[str, Any]], metric: str, maximize: bool) -> Figure:
    """Each trial's value against its number (complete: dots, pruned: crosses) and the best so far."""
    figure = plots.new_figure(7, 3.6)
    axes = figure.subplots()
    for state, marker, colour in (("complete", "o", "tab:blue"), ("pruned", "x", "tab:grey")):
        shown = [trial for trial in trials if trial.get("state") == state and _finite(trial.get("value"))]
        if shown:
            axes.scatter([trial["number"] for trial in shown], [trial["value"] for trial in shown], marker=marker,
                         color=colour, label=state, zorder=3)
    complete = sorted((trial["number"], trial["value"]) for trial in trials
                      if trial.get("state") == "complete" and _finite(trial.get("value")))
    if complete:
        numbers, values = zip(*complete)
        best = np.maximum.accumulate(values) if maximize else np.minimum.accumulate(values)
        last = max(trial["number"] for trial in trials)  # the line runs on to the last trial
        axes.step([*numbers, last], [*best, best[-1]], where="post", color="tab:red", label="best so far")
    return _finish_counted_axes(figure, axes, "trial", metric)


def plot_parameter(trials: Sequence[Mapping[str, Any]], param: Mapping[str, Any], metric: str) -> Figure:
    """One parameter's value against each trial's metric: a log axis for a log-scale parameter, one column
    per value for a choice."""
    figure = plots.new_figure(4.2, 3.4)
    axes = figure.subplots()
    key = param["key"]
    choices = [_value_text(value) for value in param.get("choices") or []] if param.get("kind") == "choice" else []
    for state, marker, colour in (("complete", "o", "tab:blue"), ("pruned", "x", "tab:grey")):
        shown = [trial for trial in trials if trial.get("state") == state and _finite(trial.get("value"))
                 and key in (trial.get("params") or {})]
        if not shown:
            continue
        raw = [trial["params"][key] for trial in shown]
        x = [choices.index(_value_text(value)) for value in raw] if choices else [float(value) for value in raw]
        axes.scatter(x, [trial["value"] for trial in shown], marker=marker, color=colour, label=state, alpha=0.8)
    if choices:
        axes.set_xticks(range(len(choices)), plots.plain_labels(choices))
        axes.set_xlim(-0.5, len(choices) - 0.5)
    else:
        _range_axis(axes, param)
    axes.set_xlabel(plots.plain_text(key))
    axes.set_ylabel(plots.plain_text(metric))
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def plot_curves(trials: Sequence[Mapping[str, Any]], metric: str, best: int | None) -> Figure:
    """Each trial's reported validation metric per epoch; the best trial bold, pruned ones dashed."""
    figure = plots.new_figure(7, 3.6)
    axes = figure.subplots()
    for trial in trials:
        reported = (trial.get("intermediate") or {}).items()
        points = sorted((int(step), value) for step, value in reported if _finite(value))
        if not points:
            continue
        epochs, values = zip(*points)
        if trial["number"] == best:
            axes.plot(epochs, values, "-o", color="tab:red", linewidth=2.2, markersize=3, zorder=3,
                      label=f"best (trial {best})")
        elif trial.get("state") == "pruned":
            axes.plot(epochs, values, "--", color="tab:grey", linewidth=1, alpha=0.8)
        else:
            axes.plot(epochs, values, "-", color="tab:blue", linewidth=1, alpha=0.5)
    return _finish_counted_axes(figure, axes, "epoch", metric)


def _finish_counted_axes(figure: Figure, axes: Any, counted: str, metric: str) -> Figure:
    """Labels, whole-number ticks on the counted x axis (trials, epochs), a grid, the legend if anything is labelled."""
    axes.set_xlabel(counted)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel(plots.plain_text(metric))
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=8)
    figure.tight_layout()
    return figure


def _range_axis(axes: Any, param: Mapping[str, Any]) -> None:
    """The parameter's whole searched range, on a log axis for a log-scale parameter."""
    low, high = param.get("low"), param.get("high")
    if param.get("log"):
        axes.set_xscale("log")
        axes.xaxis.set_minor_formatter(NullFormatter())  # minor labels of a log axis overlap
        if _finite(low) and _finite(high) and low > 0:
            axes.set_xlim(low / 1.3, high * 1.3)
    elif _finite(low) and _finite(high):
        margin = 0.05 * (high - low)
        axes.set_xlim(low - margin, high + margin)


def _best_config(folder: Path) -> list[Block]:
    path = folder / BEST_CONFIG_FILE
    if not path.is_file():
        return []
    return [Heading("Best config"), Paragraph(f"{BEST_CONFIG_FILE}, ready for: cnnlab train {path}"),
            Preformatted(path.read_text(encoding="utf-8"))]


def _all_trials(study: Mapping[str, Any], trials: list[dict[str, Any]], params: list[dict[str, Any]]) -> list[Block]:
    rows = [[str(trial["number"]), str(trial.get("state")), format_number(trial.get("value")),
             *[_value_text((trial.get("params") or {}).get(param["key"])) for param in params],
             format_value(trial.get("epochs")), format_number(trial.get("duration_s"), 1),
             format_value(trial.get("worker")), str(trial.get("failure") or "")] for trial in trials]
    headers = ["Trial", "State", str(study.get("metric")), *[param["key"] for param in params], "Epochs",
               "Duration (s)", "Worker", "Note"]
    return [Heading("All trials"), Table(headers, rows)]


def _params_text(trial: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={_value_text(value)}" for key, value in (trial.get("params") or {}).items())


def _value_text(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else format_value(value)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
