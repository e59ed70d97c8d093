"""Run directories and what every stage shares about files and messages: the run folder's file names,
creation, atomic writes, reading, environment capture, folder-name slugs, file digests, and the one
progress bar and log line that every long step prints."""

from __future__ import annotations

import csv
import datetime as _dt
import functools
import hashlib
import importlib.metadata
import io
import json
import os
import platform
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch
from tqdm import tqdm

from cnnlab.errors import CnnlabError

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
PREDICTIONS_FILE = "predictions.npz"
EXAMPLES_FILE = "examples.npz"
AUGMENTATION_FILE = "augmentation.npz"
WEIGHTS_FILE = "model.safetensors"
ENVIRONMENT_FILE = "environment.json"
SUMMARY_FILE = "summary.txt"
REPORT_MARKDOWN_FILE = "report.md"
REPORT_HTML_FILE = "report.html"
FIGURES_DIR = "figures"
HISTORY_COLUMNS = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "epoch_time_s"]


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename, so a reader
    never sees a half-written file and a crash leaves the old file in place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


def write_npz_atomic(path: Path, **arrays: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    write_bytes_atomic(path, buffer.getvalue())


def write_csv_atomic(path: Path, rows: Iterable[Mapping[str, Any]], columns: list[str]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _format_cell(row.get(key)) for key in columns})
    write_text_atomic(path, buffer.getvalue())


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_history(run_dir: Path) -> list[dict[str, float]]:
    """Per-epoch history as a list of dicts of floats (NaN where a value is absent)."""
    path = Path(run_dir) / HISTORY_FILE
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        rows = []
        for row in csv.DictReader(handle):
            rows.append({key: (float(value) if value not in ("", None) else float("nan")) for key, value in row.items()})
        return rows


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Load an .npz written by cnnlab; object arrays (pickles) are refused."""
    with np.load(Path(path), allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


ARTEFACTS = (CONFIG_FILE, METRICS_FILE, HISTORY_FILE, PREDICTIONS_FILE, EXAMPLES_FILE, AUGMENTATION_FILE,
             WEIGHTS_FILE, ENVIRONMENT_FILE, SUMMARY_FILE, REPORT_MARKDOWN_FILE, REPORT_HTML_FILE)


def make_run_dir(name: str, out: Path | None = None, root: Path = Path("runs")) -> Path:
    """Create and return the run directory: ``out`` if given, else ``runs/<timestamp>-<name>``.

    An existing ``out`` is accepted only when it is empty or holds nothing but run artefacts,
    so a mistyped ``--out .`` never scatters files into an unrelated folder."""
    if out is None:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        safe = slug(name)
        out = root / f"{stamp}-{safe}"
        suffix = 1
        while out.exists():
            suffix += 1
            out = root / f"{stamp}-{safe}-{suffix}"
    out = Path(out)
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir()
                         if p.name not in ARTEFACTS and p.name != FIGURES_DIR and not p.name.startswith("."))
        if foreign:
            raise CnnlabError(
                f"{out} already exists and is not a cnnlab run directory (it holds {', '.join(foreign[:3])}"
                f"{', ...' if len(foreign) > 3 else ''}). Give --out a new folder or an earlier run directory.")
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / FIGURES_DIR).mkdir(exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise CnnlabError(
            f"Cannot write the run directory {out}: {error.strerror or error}. "
            "Choose a writable place with --out DIR, or fix the folder's permissions."
        ) from None
    return out


def clear_artefacts(run_dir: Path) -> None:
    """Remove an earlier run's artefacts and figures, so nothing stale is mixed with a new run."""
    for name in ARTEFACTS:
        (run_dir / name).unlink(missing_ok=True)
    for figure in (run_dir / FIGURES_DIR).glob("*.png"):
        figure.unlink()


def require_run_dir(path: Path) -> Path:
    """``path`` when it holds a cnnlab run's metrics.json; otherwise CnnlabError saying what to give."""
    path = Path(path)
    if not (path / METRICS_FILE).is_file():
        raise CnnlabError(f"{path} is not a cnnlab run directory (no {METRICS_FILE}). Give a folder written by "
                          "`cnnlab train`, or wait until that run has finished.")
    return path


def is_complete(run_dir: Path) -> bool:
    """A run is complete when its metrics say so and its predictions, weights and report exist."""
    run_dir = Path(run_dir)
    metrics_path = run_dir / METRICS_FILE
    if not metrics_path.exists():
        return False
    try:
        metrics = read_json(metrics_path)
    except (OSError, ValueError):
        return False
    return (
        metrics.get("status") == "complete"
        and (run_dir / PREDICTIONS_FILE).exists()
        and (run_dir / WEIGHTS_FILE).exists()
        and (run_dir / REPORT_HTML_FILE).exists()
    )


def capture_environment(device: str, seed: int | None) -> dict[str, Any]:
    """Hardware and library versions recorded with every run."""
    info: dict[str, Any] = {
        "cnnlab": cnnlab_version(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "seed": seed,
        "command": " ".join(sys.argv),
        "time": _dt.datetime.now().isoformat(timespec="seconds"),
    }
    for module in ("torchvision", "sklearn", "matplotlib"):
        try:
            info[module] = __import__(module).__version__
        except ImportError:
            info[module] = None
    return info


def cnnlab_version() -> str:
    """The installed cnnlab's version (read from the package metadata, so this module needs no package import)."""
    try:
        return importlib.metadata.version("cnnlab")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _format_cell(value: Any) -> Any:
    if isinstance(value, float):
        return "" if value != value else f"{value:.6g}"
    return "" if value is None else value


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# --------------------------------------------------------------------------- shared by every stage

SLUG_LENGTH = 80


def slug(text: str, fallback: str = "run") -> str:
    """``text`` as a folder name: letters, digits and ``._=-`` kept, anything else one "-" (at most 80 characters)."""
    return re.sub(r"[^A-Za-z0-9._=-]+", "-", text).strip("-")[:SLUG_LENGTH] or fallback


def file_digest(path: Path) -> str:
    """The SHA-256 of a file's content as hex, read in 1 MiB chunks, remembered per path, size and
    modification time (a weights file is hashed once per process)."""
    stat = Path(path).stat()
    return _file_digest(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _file_digest(path: str, size: int, modified_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def log_line(text: str, enabled: bool = True) -> None:
    """One line of progress for the user, on stderr (stdout stays for results)."""
    if enabled:
        print(text, file=sys.stderr, flush=True)


def progress_bar(total: int, description: str, unit: str = "img", enabled: bool = True, leave: bool = False,
                 minimum: int = 0) -> tqdm:
    """The one progress bar: a self-erasing line on stderr, shown only on a terminal (logs get the
    per-epoch lines instead) and only when ``enabled`` and ``total`` reaches ``minimum``."""
    return tqdm(total=total, desc=description, unit=unit, file=sys.stderr, leave=leave, mininterval=0.5,
                disable=not enabled or total < minimum or not sys.stderr.isatty())
