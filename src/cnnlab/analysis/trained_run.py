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
import yaml
from safetensors.torch import load_file
from torch import nn

from cnnlab import runs
from cnnlab.data.normalization import Normalization, fit_normalization
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
    config = yaml.safe_load((run_dir / runs.CONFIG_FILE).read_text(encoding="utf-8")) or {}
    metrics = runs.read_json(run_dir / runs.METRICS_FILE)
    class_names = _class_names(run_dir)
    shape = tuple(int(size) for size in input_shape) if input_shape else _input_shape(run_dir)
    built = create_model(config.get("model") or {}, shape, len(class_names))
    try:
        built.module.load_state_dict(load_file(str(weights_path)))
    except (RuntimeError, OSError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CnnlabError(
            f"The weights in {weights_path} do not fit the model described by {run_dir / runs.CONFIG_FILE} "
            f"({first_line}). The file belongs to another model or is damaged; re-run the training.") from None
    built.module.eval()
    normalization = _normalization(metrics, config, shape)
    return TrainedModel(built.module, normalization, shape, class_names, config, weights_path)


def _class_names(run_dir: Path) -> list[str]:
    path = run_dir / runs.PREDICTIONS_FILE
    if not path.is_file():
        raise CnnlabError(f"{path} is missing, so the number of classes is unknown; the run did not finish. "
                          "Re-run the training with `cnnlab train`.")
    return [str(name) for name in runs.load_npz(path)["class_names"]]


def _input_shape(run_dir: Path) -> tuple[int, int, int]:
    path = run_dir / runs.EXAMPLES_FILE
    if not path.is_file():
        raise CnnlabError(f"{path} is missing, so the model's input shape is unknown; the run did not finish. "
                          "Re-run the training with `cnnlab train`.")
    with np.load(path, allow_pickle=False) as saved:
        channels, height, width = saved["images"].shape[1:]
    return int(channels), int(height), int(width)


def _normalization(metrics: dict[str, Any], config: dict[str, Any], shape: tuple[int, int, int]) -> Normalization:
    recorded = metrics.get("normalization")
    if recorded:
        return Normalization(**recorded)
    # runs from before the normalisation was recorded: only the modes without statistics can be rebuilt
    dataset = config.get("dataset") or {}
    mode = dataset.get("normalize", "scale") if isinstance(dataset, dict) else "scale"
    if mode == "zscore":
        raise CnnlabError("metrics.json records no normalisation and the run used z-score statistics, which "
                          "cannot be recovered from the run directory. Re-run the training to record them.")
    return fit_normalization(mode, np.zeros((1, shape[0], 1, 1), dtype=np.uint8))
