"""Reading a finished (or unfinished) run directory back: its metrics, history, resolved config,
predictions (as an ``Interpretation``), example images, model summary and environment.

Reports, comparisons and the "looking inside" section all start from ``load_run``, so a run
directory is the only thing they read; nothing here loads a dataset or a model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cnnlab import runs
from cnnlab.analysis.interpretation import Interpretation
from cnnlab.errors import CnnlabError


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
    (and predictions.npz when ``require_predictions``). Raises CnnlabError for a folder
    that is not a run directory, a damaged file, or missing predictions that were required."""
    run_dir = runs.require_run_dir(Path(run_dir))
    run = RunFiles(run_dir, _read_json(run_dir / runs.METRICS_FILE), runs.read_history(run_dir))
    if (run_dir / runs.PREDICTIONS_FILE).exists():
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


def lookup_images(examples: dict[str, np.ndarray], wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Images of the ``wanted`` test indices stored in examples.npz, and a mask of
    which indices were found."""
    stored = np.asarray(examples["indices"], dtype=np.int64)
    order = np.argsort(stored)
    positions = np.clip(np.searchsorted(stored[order], wanted), 0, max(len(stored) - 1, 0))
    found = stored[order][positions] == wanted if len(stored) else np.zeros(len(wanted), bool)
    return examples["images"][order[positions[found]]], found


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
