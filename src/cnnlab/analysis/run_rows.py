"""The rows of the run index (`run_index.py`): what a run folder or a multi-seed folder says about itself
(name, dataset, model, seeds, status, test accuracy with its standard deviation over seeds, training time,
start), its short id, and the scan that finds such folders under a folder. Reads only; never fails on a
damaged file (its row says "damaged")."""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import os
from pathlib import Path
from typing import Any, Optional

import yaml

from cnnlab import output_folders, runs
from cnnlab.analysis.seed_runs import SEEDS_KIND
from cnnlab.errors import CnnlabError

ID_LENGTH = 8
MAX_SCAN_DEPTH = 8  # folders below FOLDER that a scan looks into
COLUMNS = ("path", "id", "kind", "part_of", "name", "dataset", "model", "n_seeds", "seeds_done", "status",
           "test_accuracy", "test_accuracy_std", "test_loss", "train_time_s", "epochs", "started", "signature")


def run_id(folder: Path) -> str:
    """The run's short id: the first 8 hex digits of the SHA-256 of its resolved path."""
    return hashlib.sha256(str(Path(folder).resolve()).encode("utf-8")).hexdigest()[:ID_LENGTH]


def scan_folders(root: Path) -> list[Path]:
    """Every run and multi-seed folder under ``root`` (``root`` itself included), with the seed runs of
    multi-seed folders; hidden folders, folders being built or replaced and links are passed over."""
    found, pending = [], [(Path(root), 0)]
    while pending:
        folder, depth = pending.pop()
        kind = output_folders.output_kind(folder)
        if kind in ("run", SEEDS_KIND):
            found.append(folder)
            if kind == "run":
                continue
        if depth >= MAX_SCAN_DEPTH:
            continue
        with contextlib.suppress(OSError), os.scandir(folder) as entries:
            pending += [(Path(entry.path), depth + 1) for entry in sorted(entries, key=lambda item: item.name,
                                                                          reverse=True)
                        if entry.is_dir(follow_symlinks=False) and not passed_over(entry.name)]
    return found


def passed_over(name: str) -> bool:
    """Folders no scan looks into: hidden ones, outputs being built or replaced, figures."""
    return name.startswith(".") or ".partial-" in name or ".replaced-" in name or name == runs.FIGURES_DIR


def folder_signature(folder: Path, kind: str) -> str:
    """What changes when the folder's figures change: metrics.json's modification time (and its seed runs'
    for a multi-seed folder, whose progress is read from them until its aggregate exists)."""
    paths = [folder / runs.METRICS_FILE]
    if kind == SEEDS_KIND:
        paths += [child / runs.METRICS_FILE for child in _seed_folders(folder)]
    return ",".join(str(_mtime_ns(path)) for path in paths)


def _mtime_ns(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def _seed_folders(folder: Path) -> list[Path]:
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        return sorted(Path(entry.path) for entry in entries
                      if entry.name.startswith("seed-") and entry.is_dir(follow_symlinks=False))
    return []


def describe_folder(folder: Path, root: Path) -> Optional[dict[str, Any]]:
    """The index row of a run or multi-seed ``folder`` (its path relative to ``root``, the index's folder);
    None for anything else. A seed run of a multi-seed folder is ``part_of`` it (hidden from listings)."""
    folder = Path(folder)
    kind = output_folders.output_kind(folder)
    if kind not in ("run", SEEDS_KIND):
        return None
    in_seeds = (kind == "run" and folder.name.startswith("seed-")
                and output_folders.output_kind(folder.parent) == SEEDS_KIND)
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update(path=_relative(folder, root), id=run_id(folder), kind=kind, signature=folder_signature(folder, kind),
               part_of=_relative(folder.parent, root) if in_seeds else None)
    metrics = _read_mapping(folder / runs.METRICS_FILE)
    row.update(_run_fields(folder, metrics) if kind == "run" else _seeds_fields(folder, metrics))
    return row


def _run_fields(folder: Path, metrics: Optional[dict]) -> dict[str, Any]:
    status = _text(metrics.get("status")) if metrics is not None else "damaged"
    fields = _figures(metrics or {})
    fields.update(n_seeds=1, seeds_done=int(status == "complete"), status=status, started=_started(folder))
    return fields


def _seeds_fields(folder: Path, metrics: Optional[dict]) -> dict[str, Any]:
    children = _seed_folders(folder)
    statuses = [(_read_mapping(child / runs.METRICS_FILE) or {}).get("status") for child in children]
    started = _started(children[0] if children else folder)
    if metrics is not None:  # the aggregate: means over the seeds, the sample standard deviation of accuracy
        statistic = (metrics.get("statistics") or {}).get("test_accuracy") or {}
        fields = _figures(metrics)
        fields.update(n_seeds=_integer(metrics.get("n_seeds")), seeds_done=statuses.count("complete"),
                      status=_text(metrics.get("status")), test_accuracy_std=_number(statistic.get("std")),
                      started=started)
        return fields
    config = _read_config(folder)  # seeds still training: what the multi-seed config.yaml says
    model, dataset, train = (config.get(key) if isinstance(config.get(key), dict) else {}
                             for key in ("model", "dataset", "train"))
    status = next((word for word in ("running", "interrupted") if word in statuses), "unfinished")
    seeds = train.get("seeds")
    return {"name": _text(config.get("name")), "dataset": _text(dataset.get("name")),
            "model": _text(model.get("name") or model.get("backbone")) or "custom",
            "n_seeds": len(seeds) if isinstance(seeds, list) else None, "seeds_done": statuses.count("complete"),
            "status": status, "started": started}


def _figures(metrics: dict) -> dict[str, Any]:
    return {"name": _text(metrics.get("name")), "dataset": _text(metrics.get("dataset")),
            "model": _text(metrics.get("model")), "test_accuracy": _number(metrics.get("test_accuracy")),
            "test_loss": _number(metrics.get("test_loss")), "train_time_s": _number(metrics.get("train_time_s")),
            "epochs": _integer(metrics.get("epochs"))}


def _started(folder: Path) -> Optional[str]:
    """When the run started (environment.json's time), else when its metrics were last written."""
    environment = _read_mapping(folder / runs.ENVIRONMENT_FILE) or {}
    if isinstance(environment.get("time"), str):
        return environment["time"]
    modified = _mtime_ns(folder / runs.METRICS_FILE)
    return _dt.datetime.fromtimestamp(modified / 1e9).isoformat(timespec="seconds") if modified else None


def _read_mapping(path: Path) -> Optional[dict]:
    try:
        value = runs.read_json(path)
    except (OSError, ValueError, CnnlabError):
        return None
    return value if isinstance(value, dict) else None


def _read_config(folder: Path) -> dict:
    try:
        value = yaml.safe_load((folder / runs.CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return {}
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> Optional[str]:
    return value if isinstance(value, str) else None


def _number(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value else None


def _integer(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _relative(folder: Path, root: Path) -> str:
    return Path(os.path.relpath(Path(folder).resolve(), Path(root).resolve())).as_posix()
