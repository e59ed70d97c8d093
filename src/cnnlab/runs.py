"""Run directories and what every stage shares about files and messages: the run folder's file names,
creation, atomic writes, reading, environment capture, folder-name slugs, file digests, and the one
progress bar and log line that every long step prints."""

from __future__ import annotations

import csv
import contextlib
import datetime as _dt
import functools
import hashlib
import importlib.metadata
import io
import json
import os
import platform
import re
import secrets
import stat
import sys
import zipfile
import zlib
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
CHECKPOINT_FILE = "checkpoint.pt"  # the latest training checkpoint (training/checkpoint.py)
PREVIOUS_CHECKPOINT_FILE = "checkpoint-previous.pt"  # the one before, used when the latest cannot be read
LINK_REFUSED_FOLDERS = (FIGURES_DIR,)  # subfolders of an output: cnnlab never writes through a link by these names
# O_NOFOLLOW and O_CLOEXEC are absent on some platforms (0 leaves them out)
NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
HISTORY_COLUMNS = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "epoch_time_s"]


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file beside it and a rename: a reader never sees a
    half-written file, a failure (disk full, read-only) leaves the old file as it was and names ``path``, a
    link at ``path`` is replaced (its target is never written), and the file gets the user's umask mode. A
    ``figures`` folder that is a link is refused: cnnlab writes figures only inside the output folder."""
    path = Path(path)
    if path.parent.name in LINK_REFUSED_FOLDERS and is_link(path.parent):
        raise CnnlabError(
            f"{path.parent} is a symbolic link (to {os.readlink(path.parent)}): cnnlab never writes through a link "
            f"inside an output folder. Remove the link (rm {path.parent}) or choose another folder, then try again.")
    temporary = path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with os.fdopen(os.open(temporary, NEW_FILE_FLAGS, 0o666), "wb") as handle:  # 0o666 less the umask
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            temporary.unlink()
        if isinstance(error, OSError) and error.filename in (None, temporary, str(temporary)):
            raise OSError(error.errno, error.strerror or str(error), str(path)) from error  # the user's file, not ours
        raise


def is_link(path: Path) -> bool:
    """Whether ``path`` itself is a symbolic link (never followed to answer)."""
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError:
        return False


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
    """A JSON file's value; ValueError (as for any malformed JSON) when it nests too deeply to decode."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except RecursionError:
        raise ValueError(f"{path} nests too deeply to be read") from None


def read_history(run_dir: Path) -> list[dict[str, float]]:
    """Per-epoch history as a list of dicts of floats (NaN where a value is absent)."""
    path = Path(run_dir) / HISTORY_FILE
    if not path.exists():
        return []
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = []
            for row in csv.DictReader(handle):
                rows.append({key: (float(value) if value not in ("", None) else float("nan"))
                             for key, value in row.items()})
            return rows
    except (ValueError, TypeError, csv.Error) as error:  # UnicodeDecodeError is a ValueError
        raise CnnlabError(f"{path} is damaged: it is not the CSV of numbers cnnlab writes ({_first_line(error)}). "
                          "Re-run the training to rewrite it, or delete the file to report without curves.") from None


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Load an .npz written by cnnlab; object arrays (pickles) are refused."""
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (ValueError, EOFError, MemoryError, zipfile.BadZipFile, zlib.error) as error:
        # ValueError covers object arrays: they are pickles, and cnnlab never unpickles a run's files
        raise CnnlabError(f"{path} is damaged or not written by cnnlab ({_first_line(error)}); it was not loaded. "
                          "Re-run the training (or the evaluation) to rewrite it.") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0][:200] if text else type(error).__name__)


ARTEFACTS = (CONFIG_FILE, METRICS_FILE, HISTORY_FILE, PREDICTIONS_FILE, EXAMPLES_FILE, AUGMENTATION_FILE,
             WEIGHTS_FILE, ENVIRONMENT_FILE, SUMMARY_FILE, REPORT_MARKDOWN_FILE, REPORT_HTML_FILE)


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
