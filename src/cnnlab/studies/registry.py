"""`cnnlab runs`: the table of the runs under a folder (id, name, dataset, model, seeds, status, test
accuracy, training time, date, folder), read from the folder's run index (`cnnlab.analysis.run_index`),
filtered with ``--where``, sorted with ``--sort`` and cut with ``--limit``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional, Sequence

from cnnlab.analysis.run_index import IndexedRun, open_index, query_runs
from cnnlab.errors import CnnlabError, did_you_mean

# the words --where and --sort accept (the table's and metrics.json's) and the index column each means
FIELDS = {"id": "id", "name": "name", "dataset": "dataset", "model": "model", "status": "status", "kind": "kind",
          "seeds": "n_seeds", "n_seeds": "n_seeds", "test_accuracy": "test_accuracy", "accuracy": "test_accuracy",
          "test_loss": "test_loss", "time": "train_time_s", "train_time_s": "train_time_s", "epochs": "epochs",
          "date": "started", "started": "started", "folder": "path", "path": "path"}
NUMERIC = {"n_seeds", "test_accuracy", "test_loss", "train_time_s", "epochs"}
CONDITION = re.compile(r"\s*([A-Za-z_]+)\s*(!=|>=|<=|=|>|<)\s*(.*?)\s*")
DEFAULT_ORDER = [("started", True), ("path", False)]  # newest first
HEADERS = ("id", "name", "dataset", "model", "seeds", "status", "test accuracy", "time", "date", "folder")


def list_runs(folder: Path, where: Sequence[str] = (), sort: Optional[str] = None, limit: Optional[int] = None,
              rebuild: bool = False, include_seed_runs: bool = False) -> list[IndexedRun]:
    """The runs and multi-seed folders under ``folder`` that meet every ``where`` condition ("dataset=mnist",
    "test_accuracy>=0.9", "name=keras-*"), sorted by ``sort`` ("-test_accuracy", "dataset,-date"; default:
    newest first), at most ``limit``. The index is built when missing (or with ``rebuild``) and checked
    against the folders first: deleted folders are dropped, changed runs read again. Seed runs inside
    multi-seed folders are left out unless ``include_seed_runs``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CnnlabError(f"There is no folder {folder} to list runs from. Give the folder that holds your runs: "
                          "`cnnlab runs FOLDER` (default: runs, where `cnnlab train` writes them).")
    if limit is not None and limit < 1:
        raise CnnlabError(f"--limit must be at least 1, not {limit}.")
    conditions = [parse_condition(text) for text in where]
    order = parse_order(sort) if sort else DEFAULT_ORDER
    open_index(folder, rebuild=rebuild)
    return query_runs(folder, conditions, order, limit, include_seed_runs)


def parse_condition(text: str) -> tuple[str, str, Any]:
    """"dataset=mnist" as (column, operator, value); numbers for numeric columns ("90%" is 0.9)."""
    match = CONDITION.fullmatch(text)
    if match is None or not match.group(3):
        raise CnnlabError(f'--where "{text}" is not a condition: write KEY=VALUE (or !=, <, <=, >, >=), e.g. '
                          f"dataset=mnist, name=keras-*, test_accuracy>=0.9. Keys: {', '.join(FIELDS)}.")
    key, operator, value = match.groups()
    column = _column(key, "--where")
    if column not in NUMERIC:
        return column, operator, value
    try:
        number = float(value[:-1]) / 100 if value.endswith("%") else float(value)
    except ValueError:
        raise CnnlabError(f'--where "{text}": {key} is a number, so compare it with one (e.g. {key}>=0.9).') from None
    return column, operator, number


def parse_order(text: str) -> list[tuple[str, bool]]:
    """"-test_accuracy,name" as [("test_accuracy", True), ("name", False)]: a leading - sorts descending."""
    order = []
    for key in (part.strip() for part in text.split(",")):
        descending = key.startswith("-")
        order.append((_column(key.lstrip("-+"), "--sort"), descending))
    return order


def _column(key: str, option: str) -> str:
    column = FIELDS.get(key.lower())
    if column is None:
        raise CnnlabError(f'{option}: there is no "{key}" to use.{did_you_mean(key, FIELDS)} '
                          f"Use one of: {', '.join(FIELDS)}.")
    return column


def format_runs(found: Sequence[IndexedRun], folder: Path, filtered: bool = False) -> str:
    """The table `cnnlab runs` prints: one line per run, columns aligned, a note on multi-seed figures."""
    if not found:
        return f"no runs in {folder}" + (" meet these conditions" if filtered else "")
    rows = [HEADERS] + [_cells(run) for run in found]
    widths = [max(len(row[index]) for row in rows) for index in range(len(HEADERS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    if any(run["kind"] == "seeds" for run in found):
        lines.append("multi-seed folders: test accuracy is the mean ± the sample standard deviation (percentage "
                     "points) over the seeds, time the mean training time of a seed")
    return "\n".join(lines)


def _cells(run: IndexedRun) -> tuple[str, ...]:
    seeds = "" if run["n_seeds"] is None else str(run["n_seeds"])
    status = run["status"] or "?"
    if run["kind"] == "seeds" and run["n_seeds"] and (run["seeds_done"] or 0) < run["n_seeds"]:
        status += f" ({run['seeds_done'] or 0}/{run['n_seeds']} seeds)"
    return (run["id"], run["name"] or "?", run["dataset"] or "?", run["model"] or "?", seeds, status,
            _accuracy(run["test_accuracy"], run["test_accuracy_std"]), format_duration(run["train_time_s"]),
            (run["started"] or "")[:16].replace("T", " "), run["path"])


def _accuracy(mean: Optional[float], std: Optional[float]) -> str:
    if mean is None:
        return "-"
    return f"{100 * mean:.2f}%" + ("" if std is None else f" ± {100 * std:.2f}")


def format_duration(seconds: Optional[float]) -> str:
    """12.3 s, 5 min 26 s, 1 h 02 min."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, second = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {second:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"
