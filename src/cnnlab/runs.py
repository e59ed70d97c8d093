"""Run directories and what every stage shares about files and messages: the run folder's file names,
creation, atomic writes, reading, environment capture, folder-name slugs, file digests, and the one
progress bar and log line that every long step prints (a bar on a terminal and in a notebook, lines in a log)."""

from __future__ import annotations

import csv
import contextlib
import datetime as _dt
import functools
import hashlib
import importlib.metadata
import io
import json
import math
import os
import platform
import re
import secrets
import stat
import sys
import time
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch
from tqdm import TqdmWarning

with warnings.catch_warnings():  # in a notebook without ipywidgets, tqdm.auto falls back to the text bar: fine
    warnings.simplefilter("ignore", TqdmWarning)
    from tqdm.auto import tqdm

from cnnlab.errors import CnnlabError

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
PREDICTIONS_FILE = "predictions.npz"
EXAMPLES_FILE = "examples.npz"
AUGMENTATION_FILE = "augmentation.npz"
LEAKAGE_FILE = "leakage.json"  # test images duplicated in the training set (analysis/leakage.py)
LEAKAGE_EXAMPLES_FILE = "leakage.npz"  # thumbnails of the first such pairs, for the report
WEIGHTS_FILE = "model.safetensors"
ENVIRONMENT_FILE = "environment.json"
SUMMARY_FILE = "summary.txt"
REPORT_MARKDOWN_FILE = "report.md"
REPORT_HTML_FILE = "report.html"
FIGURES_DIR = "figures"
TENSORBOARD_DIR = "tensorboard"  # TensorBoard event files (train.tensorboard, cnnlab tensorboard: report/tensorboard.py)
TENSORBOARD_EVENTS_PREFIX = "events.out.tfevents."  # how TensorBoard names its event files
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
             WEIGHTS_FILE, ENVIRONMENT_FILE, SUMMARY_FILE, REPORT_MARKDOWN_FILE, REPORT_HTML_FILE, LEAKAGE_FILE,
             LEAKAGE_EXAMPLES_FILE)


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
                 minimum: int = 0) -> "tqdm | LogProgress":
    """The one progress bar, shown only when ``enabled`` and ``total`` reaches ``minimum``: a self-erasing
    bar on a terminal and in a Jupyter notebook (tqdm.auto: a widget where ipywidgets is installed);
    where stderr is a file or a pipe (a log), `LogProgress` lines instead, and only for long work."""
    if not enabled or total < minimum:
        return tqdm(total=total, disable=True)
    if sys.stderr.isatty() or in_notebook():
        return tqdm(total=total, desc=description, unit=unit, file=sys.stderr, leave=leave, mininterval=0.5)
    return LogProgress(total, description, unit)


def in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (its stderr is no terminal, yet shows a bar), as tqdm.auto decides."""
    return "ipykernel.zmqshell" in sys.modules


LOG_PROGRESS_FRACTION = 0.1  # a log gets a line at every tenth of the work ...
LOG_PROGRESS_INTERVAL_S = 10.0  # ... when this long has passed since the last one: short work prints no line


class LogProgress:
    """`progress_bar` where no bar can be drawn (stderr is a log file or a pipe): a line on stderr at each
    tenth of the work, once at least `LOG_PROGRESS_INTERVAL_S` has passed since the previous line (or the
    start), so an epoch of a minute or more gets about ten lines and one of under ten seconds none (its
    end has its own line). It has what the callers use of a tqdm bar: ``update``, ``set_postfix``,
    ``disable`` and the context manager."""

    disable = False
    clock = staticmethod(time.perf_counter)

    def __init__(self, total: int, description: str, unit: str):
        self.total, self.description, self.unit = total, description, unit
        self.count, self.postfix = 0, {}
        self.step = max(1, math.ceil(total * LOG_PROGRESS_FRACTION))
        self.next_mark = self.step
        self.started = self.last_line = self.clock()

    def update(self, count: int = 1) -> None:
        """Count ``count`` more units done; print a line when a tenth is reached and one is due."""
        self.count += count
        if self.count < self.next_mark or self.total <= 0:
            return
        self.next_mark = (self.count // self.step + 1) * self.step
        now = self.clock()
        if now - self.last_line >= LOG_PROGRESS_INTERVAL_S and self.count < self.total:
            self.last_line = now
            log_line(self.line(now - self.started))

    def line(self, elapsed_s: float) -> str:
        """``epoch 3/20: 40% (120/300 batch) 24s  loss=0.4123 acc=0.873``"""
        values = "".join(f"  {key}={value}" for key, value in self.postfix.items())
        return (f"{self.description}: {self.count / self.total:.0%} ({self.count}/{self.total} {self.unit}) "
                f"{elapsed_s:.0f}s{values}")

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        """The values (loss, accuracy, ...) the next line ends with."""
        self.postfix = values

    def close(self) -> None:
        pass

    def __enter__(self) -> "LogProgress":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
