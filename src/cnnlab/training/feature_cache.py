"""Transfer-learning steps of an experiment: the input normalisation a backbone expects, and the
feature cache that lets a frozen backbone run once so training the head takes seconds.

The feature cache lives under `cnnlab.data.locate.cache_root()/features`, one safetensors file per
dataset identity, backbone, weights file digest, input size, truncation and normalisation."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cnnlab.data.device_images import DeviceImages, Normalization
from cnnlab.errors import ConfigError
from cnnlab.training.precision import automatic_fast_path
from cnnlab.models.transfer_model import TransferModel

FEATURE_BATCH_SIZE = 256
FEATURES_COMPUTED = {"count": 0}  # how many times features were computed rather than read (tests read it)


def backbone_normalization(model: nn.Module, dataset_config, channels: int) -> Normalization | None:
    """The backbone's own mean/std for a `TransferModel` (or for ``dataset.normalize: backbone``),
    unless the config chose another mode explicitly; None when the usual modes apply."""
    explicit = "normalize" in dataset_config.model_fields_set
    mode = dataset_config.normalize
    if not isinstance(model, TransferModel):
        if mode == "backbone":
            raise ConfigError("dataset.normalize is backbone, but the model has no pretrained backbone. Use "
                              "scale, zscore, imagenet or none, or set model.backbone.")
        return None
    if explicit and mode != "backbone":
        return None  # the user asked for this mode: honour it (the run records it)
    return normalization_for_backbone(model.mean, model.std, channels)


def normalization_for_backbone(mean, std, channels: int) -> Normalization:
    """A backbone's mean/std as the normalisation of uint8 images with ``channels`` channels."""
    mean, std = [float(value) for value in mean], [float(value) for value in std]
    if channels == 1:
        # grey images: the model turns them into three channels and renormalises each exactly
        mean, std = [float(np.mean(mean))], [float(np.mean(std))]
    return Normalization("backbone", mean, std, 1 / 255)


def uses_feature_cache(model: nn.Module, model_config, augmenter) -> bool:
    """True for a frozen backbone, no augmentation and the cache not switched off."""
    return (isinstance(model, TransferModel) and model.frozen and augmenter is None
            and getattr(model_config, "cache_features", True))


class DeviceFeatures:
    """Backbone features (N, D) and labels on the device, batched like `DeviceImages`: the head
    trains on them exactly as the whole model would on the images."""

    channels_last = False

    def __init__(self, features: torch.Tensor, labels: torch.Tensor):
        self.features = features
        self.labels = labels
        self.device = features.device

    def __len__(self) -> int:
        return self.labels.shape[0]

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.features.index_select(0, indices)
        return features.view(features.shape[0], -1, 1, 1), self.labels.index_select(0, indices)


def cached_feature_data(model: TransferModel, train_data: DeviceImages, test_data: DeviceImages, dataset_key: str,
                        normalization: Normalization, show_progress: bool = True) -> tuple[DeviceFeatures, DeviceFeatures]:
    """Train and test features of ``model``'s frozen backbone, read from the cache or computed once."""
    path = feature_cache_path(model, dataset_key, test_data, normalization)
    features = read_feature_cache(path)
    if features is None:
        if show_progress:
            print(f"computing {model.backbone_name} features of {len(train_data) + len(test_data)} images once "
                  f"(cached in {path})", file=sys.stderr, flush=True)
        features = {"train": compute_features(model, train_data), "test": compute_features(model, test_data)}
        write_feature_cache(path, features["train"], features["test"])
    elif show_progress:
        print(f"{model.backbone_name} features read from the cache {path}", file=sys.stderr, flush=True)
    device = train_data.device
    return (DeviceFeatures(features["train"].to(device), train_data.labels),
            DeviceFeatures(features["test"].to(device), test_data.labels))


@torch.no_grad()
def compute_features(model: TransferModel, data: DeviceImages, batch_size: int = FEATURE_BATCH_SIZE) -> torch.Tensor:
    """The backbone's features (N, D) of every image in ``data``, in order, in eval mode, float32 on the CPU."""
    FEATURES_COMPUTED["count"] += 1
    was_training = model.training
    model.eval()
    outputs = []
    indices = torch.arange(len(data), device=data.device)
    # bfloat16 where the hardware runs convolutions faster in it (GPUs, CPUs with AMX)
    fast = automatic_fast_path(data.device, (3, model.input_size, model.input_size), model.backbone)
    for start in range(0, len(data), batch_size):
        images, _ = data.batch(indices[start:start + batch_size])
        with fast.autocast():
            outputs.append(model.features(images).float().cpu())
    model.train(was_training)
    return torch.cat(outputs)


def feature_cache_path(model: TransferModel, dataset_key: str, test_data: DeviceImages,
                       normalization: Normalization) -> Path:
    """Where the features for this dataset, backbone, weights, input size, truncation and normalisation live."""
    return feature_cache_file(model.backbone_name, model.weights_path, model.weights_source, model.input_size,
                              len(model.backbone.blocks), normalization, dataset_key, test_data.images.cpu().numpy())


def feature_cache_file(backbone_name: str, weights_path: Path | None, weights_source: str, input_size: int,
                       blocks: int, normalization: Normalization, dataset_key: str, test_images: np.ndarray) -> Path:
    """The cache file of one backbone's features of one dataset; `cnnlab train` (frozen backbone) and
    `cnnlab features BACKBONE` share it, so whichever runs second reads what the first computed."""
    from cnnlab.data.locate import cache_root
    from cnnlab.models.pretrained import file_digest

    weights_digest = file_digest(weights_path) if weights_path is not None else weights_source
    test_sample = hashlib.sha256(np.ascontiguousarray(test_images[::97]).tobytes()).hexdigest()
    identity = {"dataset": dataset_key, "test": [list(test_images.shape), test_sample],
                "backbone": backbone_name, "weights": weights_digest, "input_size": input_size,
                "blocks": blocks, "normalization": normalization.to_dict(), "version": 1}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]
    name = backbone_name.replace(":", "-").replace("/", "-")
    return cache_root() / "features" / f"{name}-{digest}.safetensors"


def read_feature_cache(path: Path) -> dict[str, torch.Tensor] | None:
    """Cached "train" and "test" features, or None when the file is missing or damaged."""
    from safetensors.torch import load_file

    try:
        features = load_file(str(path))
    except (OSError, ValueError, RuntimeError):
        return None  # missing or damaged: compute again
    return features if {"train", "test"} <= set(features) else None


def write_feature_cache(path: Path, train: torch.Tensor, test: torch.Tensor) -> None:
    """Store train and test features (float32, CPU); an unwritable cache is skipped silently."""
    from safetensors.torch import save

    from cnnlab.runs import write_bytes_atomic

    features = {"train": train.float().cpu().contiguous(), "test": test.float().cpu().contiguous()}
    try:
        write_bytes_atomic(path, save(features))
    except OSError:
        pass  # an unwritable cache only costs the recomputation next time
