"""Reading a finished (or unfinished) run directory back: its metrics, history, resolved config,
predictions (as an ``Interpretation``), example images, model summary and environment.

Reports, comparisons and the "looking inside" section all start from ``load_run``, so a run
directory is the only thing they read; nothing here loads a dataset or a model. Every file is
checked as it is read: a damaged or foreign file gives one CnnlabError naming it and saying what
to do, never a traceback, and nothing is ever unpickled (``runs.load_npz`` refuses object arrays)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cnnlab import runs
from cnnlab.analysis.interpretation import Interpretation
from cnnlab.errors import CnnlabError

# Text files of a run are small (a few kB); anything far larger is not one of cnnlab's.
MAX_TEXT_BYTES = 32 << 20
# metrics.json keys the reports read, by the type they must have (None is always allowed).
NUMBER_KEYS = ("params", "trainable_params", "epochs", "epochs_planned", "test_accuracy", "test_loss",
               "train_time_s", "best_epoch", "seed", "reported_accuracy")
TEXT_KEYS = ("name", "dataset", "model", "status", "stop_reason", "device", "test_time_augmentation",
             "reported_accuracy_kind")
REWRITE_HINT = "Re-run the training with `cnnlab train` to rewrite it, or give another run directory."


@dataclass
class RunFiles:
    """What a run directory holds; absent optional files are None."""

    run_dir: Path
    metrics: dict[str, Any]
    history: list[dict[str, float]]
    config: dict[str, Any] | None = None
    interpretation: Interpretation | None = None
    examples: dict[str, np.ndarray] | None = None
    summary: str | None = None
    environment: dict[str, Any] | None = None


def load_run(run_dir: Path, require_predictions: bool = False) -> RunFiles:
    """Read every artefact of a run directory; only metrics.json is mandatory
    (and predictions.npz when ``require_predictions``). Raises CnnlabError for a folder
    that is not a run directory, a damaged file, or missing predictions that were required."""
    run_dir = runs.require_run_dir(Path(run_dir))
    run = RunFiles(run_dir, read_metrics(run_dir), runs.read_history(run_dir))
    if (run_dir / runs.PREDICTIONS_FILE).exists():
        run.interpretation = Interpretation.from_run(run_dir)
    elif require_predictions:
        raise CnnlabError(
            f"{run_dir} is incomplete: {runs.PREDICTIONS_FILE} is missing (status "
            f"\"{run.metrics.get('status', 'unknown')}\"). Compare only runs that finished."
        )
    run.config = read_config(run_dir)
    if (run_dir / runs.EXAMPLES_FILE).exists():
        run.examples = read_examples(run_dir / runs.EXAMPLES_FILE)
    summary_path = run_dir / runs.SUMMARY_FILE
    if summary_path.exists():
        run.summary = read_text(summary_path)
    environment_path = run_dir / runs.ENVIRONMENT_FILE
    if environment_path.exists():
        run.environment = _read_mapping(environment_path)
    return run


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """metrics.json as a mapping whose keys the reports read have the documented types."""
    path = Path(run_dir) / runs.METRICS_FILE
    metrics = _read_mapping(path)
    for key in NUMBER_KEYS:
        value = metrics.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise _damaged(path, f'"{key}" should be a number, not {_kind(value)}')
    for key in TEXT_KEYS:
        if metrics.get(key) is not None and not isinstance(metrics[key], str):
            raise _damaged(path, f'"{key}" should be text, not {_kind(metrics[key])}')
    for key in ("augmentation", "recipe_differences"):
        lines = metrics.get(key)
        if lines is not None and not (isinstance(lines, list) and all(isinstance(line, str) for line in lines)):
            raise _damaged(path, f'"{key}" should be a list of lines of text')
    if metrics.get("normalization") is not None and not isinstance(metrics["normalization"], dict):
        raise _damaged(path, f'"normalization" should be a mapping, not {_kind(metrics["normalization"])}')
    return metrics


def read_config(run_dir: Path) -> dict[str, Any] | None:
    """config.yaml as a mapping (None when the file is absent); YAML tags that would build Python
    objects are refused (``yaml.safe_load``)."""
    path = Path(run_dir) / runs.CONFIG_FILE
    if not path.exists():
        return None
    try:
        config = yaml.safe_load(read_text(path))
    except yaml.YAMLError as error:
        problem = str(getattr(error, "problem", None) or error).strip().splitlines()[0][:200]
        raise _damaged(path, f"not valid YAML for cnnlab: {problem}") from None
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise _damaged(path, f"it should be a mapping of config sections, not {_kind(config)}")
    return config


def read_examples(path: Path) -> dict[str, np.ndarray]:
    """examples.npz: ``indices`` (M,) integers and ``images`` (M, C, H, W) uint8."""
    arrays = runs.load_npz(path)
    indices, images = arrays.get("indices"), arrays.get("images")
    if indices is None or images is None:
        raise _damaged(path, "it lacks the arrays indices and images")
    if indices.ndim != 1 or indices.dtype.kind not in "iu" or images.ndim != 4 or images.dtype != np.uint8 \
            or len(images) != len(indices) or images.shape[1] not in (1, 3, 4) or 0 in images.shape[2:]:
        raise _damaged(path, f"indices {indices.dtype}{indices.shape} and images {images.dtype}{images.shape} "
                             "are not (M,) integers and (M, C, H, W) uint8 images")
    return arrays


def read_augmentation(path: Path) -> dict[str, np.ndarray]:
    """augmentation.npz: ``originals`` (N, C, H, W) and ``augmented`` (N, V, C, H, W), both uint8."""
    arrays = runs.load_npz(path)
    originals, augmented = arrays.get("originals"), arrays.get("augmented")
    if originals is None or augmented is None:
        raise _damaged(path, "it lacks the arrays originals and augmented")
    if originals.ndim != 4 or augmented.ndim != 5 or originals.dtype != np.uint8 or augmented.dtype != np.uint8 \
            or augmented.shape[0] != originals.shape[0] or augmented.shape[2:] != originals.shape[1:] \
            or originals.shape[1] not in (1, 3, 4):
        raise _damaged(path, f"originals {originals.dtype}{originals.shape} and augmented "
                             f"{augmented.dtype}{augmented.shape} do not match (N, C, H, W) and (N, V, C, H, W) uint8")
    return arrays


def read_text(path: Path) -> str:
    """A run's text file as UTF-8 (cnnlab writes nothing else); too large or undecodable is damaged."""
    path = Path(path)
    if path.stat().st_size > MAX_TEXT_BYTES:
        raise _damaged(path, f"it holds {path.stat().st_size:,} bytes, far more than cnnlab writes")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise _damaged(path, f"it is not UTF-8 text (byte {error.start})") from None


def lookup_images(examples: dict[str, np.ndarray], wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Images of the ``wanted`` test indices stored in examples.npz, and a mask of
    which indices were found."""
    stored = np.asarray(examples["indices"], dtype=np.int64)
    order = np.argsort(stored)
    positions = np.clip(np.searchsorted(stored[order], wanted), 0, max(len(stored) - 1, 0))
    found = stored[order][positions] == wanted if len(stored) else np.zeros(len(wanted), bool)
    return examples["images"][order[positions[found]]], found


def _read_mapping(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(read_text(path))
    except (ValueError, RecursionError) as error:
        raise _damaged(path, f"not valid JSON: {str(error)[:200]}") from None
    if not isinstance(data, dict):
        raise _damaged(path, f"it should hold a JSON object, not {_kind(data)}")
    return data


def _damaged(path: Path, problem: str) -> CnnlabError:
    return CnnlabError(f"{path} is damaged or was not written by cnnlab: {problem}. {REWRITE_HINT}")


def _kind(value: Any) -> str:
    """A short description of a value's type for messages (never its repr, which may be huge)."""
    names = {dict: "a mapping", list: "a list", str: "text", bool: "true/false", int: "a number",
             float: "a number", type(None): "nothing"}
    return names.get(type(value), type(value).__name__)
