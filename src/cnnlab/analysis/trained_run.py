"""A trained network rebuilt from its run directory alone: the model from config.yaml, its
weights from model.safetensors and the input normalisation recorded in metrics.json.

Analyses that need the network itself (features, looking inside) start here, so a run
directory stays the only thing they read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from cnnlab import runs
from cnnlab.analysis.interpretation import Interpretation
from cnnlab.analysis.run_files import read_config, read_examples, read_metrics
from cnnlab.data.normalization import FITTED_MODES, Normalization, fit_normalization
from cnnlab.errors import CnnlabError
from cnnlab.models import create_model


@dataclass
class TrainedModel:
    """A run's network in eval mode on the CPU, with what its inputs must look like."""

    module: nn.Module
    normalization: Normalization
    input_shape: tuple[int, int, int]  # (C, H, W) the network was built for
    class_names: list[str]
    config: dict[str, Any]
    weights_path: Path

    def normalize(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) images to the float inputs the network was trained on."""
        shape = (1, -1, 1, 1)
        mean = torch.tensor(self.normalization.mean, dtype=torch.float32, device=images_uint8.device).view(shape)
        std = torch.tensor(self.normalization.std, dtype=torch.float32, device=images_uint8.device).view(shape)
        return (images_uint8.float() * self.normalization.scale - mean) / std


def load_trained_model(run_dir: Path, weights: Path | None = None,
                       input_shape: Sequence[int] | None = None) -> TrainedModel:
    """Rebuild the run's model and load its weights (``weights`` overrides model.safetensors).

    The input shape comes from the saved example images (or ``input_shape``), the classes
    from predictions.npz. Raises CnnlabError naming the missing or mismatched file."""
    run_dir = runs.require_run_dir(run_dir)
    if not (run_dir / runs.CONFIG_FILE).is_file():
        raise CnnlabError(f"{run_dir} has no {runs.CONFIG_FILE}, so its model cannot be rebuilt. Give a folder "
                          "written by `cnnlab train`, or a backbone name such as efficientnet-lite0.")
    weights_path = Path(weights) if weights else run_dir / runs.WEIGHTS_FILE
    if not weights_path.is_file():
        raise CnnlabError(
            f"{weights_path} does not exist: the run saved no weights (they are written when training "
            "completes). Finish or re-run the training with `cnnlab train`, or give --weights FILE.")
    config = read_config(run_dir) or {}
    metrics = read_metrics(run_dir)
    class_names = _class_names(run_dir)
    shape = tuple(int(size) for size in input_shape) if input_shape else _input_shape(run_dir)
    normalization = _normalization(metrics, config, shape)
    module = _build(run_dir, config, shape, len(class_names))
    _load_weights(module, weights_path, run_dir)
    module.eval()
    return TrainedModel(module, normalization, shape, class_names, config, weights_path)


def _build(run_dir: Path, config: dict[str, Any], shape: tuple[int, int, int], n_classes: int) -> nn.Module:
    """The run's network from its config's model section; a section cnnlab cannot build is a damaged file."""
    try:
        return create_model(config.get("model") or {}, shape, n_classes).module
    except CnnlabError as error:
        raise CnnlabError(f"{run_dir / runs.CONFIG_FILE} does not describe a model that can be rebuilt: "
                          f"{error}") from None
    except (TypeError, ValueError, KeyError, AttributeError) as error:
        raise CnnlabError(f"{run_dir / runs.CONFIG_FILE} is damaged: its model section does not describe a model "
                          f"cnnlab can build ({type(error).__name__}: {_first_line(error)}). Re-run the training "
                          "with `cnnlab train`, or give another run directory.") from None


def _load_weights(module: nn.Module, weights_path: Path, run_dir: Path) -> None:
    """Load a safetensors file (never a pickle) into ``module``, or say which file is wrong and why."""
    try:
        state = load_file(str(weights_path))
    except Exception as error:  # noqa: BLE001 - safetensors raises its own SafetensorError for a damaged file
        if isinstance(error, (PermissionError, IsADirectoryError)):
            raise
        raise CnnlabError(
            f"{weights_path} is not a readable safetensors file ({_first_line(error)}): it is truncated, damaged "
            "or of another format. Re-run the training with `cnnlab train` to rewrite it.") from None
    try:
        module.load_state_dict(state)
    except (RuntimeError, ValueError) as error:
        raise CnnlabError(
            f"The weights in {weights_path} do not fit the model described by {run_dir / runs.CONFIG_FILE} "
            f"({_first_line(error)}). The file belongs to another model or is damaged; re-run the training.") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


def _class_names(run_dir: Path) -> list[str]:
    path = run_dir / runs.PREDICTIONS_FILE
    if not path.is_file():
        raise CnnlabError(f"{path} is missing, so the number of classes is unknown; the run did not finish. "
                          "Re-run the training with `cnnlab train`.")
    return Interpretation.from_run(run_dir).class_names


def _input_shape(run_dir: Path) -> tuple[int, int, int]:
    path = run_dir / runs.EXAMPLES_FILE
    if not path.is_file():
        raise CnnlabError(f"{path} is missing, so the model's input shape is unknown; the run did not finish. "
                          "Re-run the training with `cnnlab train`.")
    channels, height, width = read_examples(path)["images"].shape[1:]
    return int(channels), int(height), int(width)


def _normalization(metrics: dict[str, Any], config: dict[str, Any], shape: tuple[int, int, int]) -> Normalization:
    recorded = metrics.get("normalization")
    if recorded:
        try:
            normalization = Normalization(**recorded)
            scale = float(normalization.scale)
            mean, std = np.asarray(normalization.mean, dtype=float), np.asarray(normalization.std, dtype=float)
        except (TypeError, ValueError) as error:
            raise CnnlabError(f"{runs.METRICS_FILE} of this run records a damaged normalisation ({_first_line(error)}"
                              "). Re-run the training with `cnnlab train` to record it again.") from None
        values = np.concatenate([[scale], mean.ravel(), std.ravel()])
        if mean.ndim > 1 or mean.size not in (1, 3, shape[0]) or std.shape != mean.shape \
                or not np.isfinite(values).all() or not np.all(std != 0):
            raise CnnlabError(f"{runs.METRICS_FILE} of this run records a normalisation that does not fit its "
                              f"{shape[0]}-channel images. Re-run the training with `cnnlab train` to record it again.")
        return normalization
    # runs from before the normalisation was recorded: only the modes without statistics can be rebuilt
    dataset = config.get("dataset") or {}
    mode = dataset.get("normalize", "scale") if isinstance(dataset, dict) else "scale"
    if mode in FITTED_MODES:
        raise CnnlabError("metrics.json records no normalisation and the run used z-score statistics, which "
                          "cannot be recovered from the run directory. Re-run the training to record them.")
    return fit_normalization(mode, np.zeros((1, shape[0], 1, 1), dtype=np.uint8))
