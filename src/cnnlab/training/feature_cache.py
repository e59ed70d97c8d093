"""Transfer-learning steps of an experiment: the input normalisation a backbone expects, and the
feature cache that lets a frozen backbone run once so training the head takes seconds.

The feature cache lives under `cnnlab.data.locate.cache_root()/features`, one safetensors file per
dataset identity, backbone, weights file digest, input size, truncation and normalisation. It is the
one place frozen-backbone features are computed and stored: `cnnlab train` (a frozen backbone) and
`cnnlab features BACKBONE` both call `backbone_features`, so whichever runs second reads what the
first computed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save
from torch import nn

from cnnlab import runs
from cnnlab.augment.augmenter import Augmenter
from cnnlab.data import DatasetConfig
from cnnlab.data.registry import NORMALIZE_MODES
from cnnlab.data.device_images import DeviceImages
from cnnlab.data.locate import cache_root
from cnnlab.data.normalization import Normalization
from cnnlab.errors import ConfigError
from cnnlab.models.settings import ModelSection
from cnnlab.models.transfer_model import TransferModel
from cnnlab.training.precision import automatic_compute_plan

FEATURE_BATCH_SIZE = 256
# From this many images on, the backbone runs through torch.compile: efficientnet-lite0 on two Zen 4 cores
# extracted 1.51x faster after about 40 s of compiling (bench/results/feature_extraction_speed.md).
COMPILE_FROM_IMAGES = 10_000


def backbone_normalization(model: nn.Module, dataset_config: DatasetConfig, channels: int) -> Normalization | None:
    """The backbone's own mean/std for a `TransferModel` (or for ``dataset.normalize: backbone``),
    unless the config chose another mode explicitly; None when the usual modes apply."""
    explicit = "normalize" in dataset_config.model_fields_set
    mode = dataset_config.normalize
    if not isinstance(model, TransferModel):
        if mode == "backbone":
            others = ", ".join(mode for mode in NORMALIZE_MODES if mode != "backbone")
            raise ConfigError(f"dataset.normalize is backbone, but the model has no pretrained backbone. Use one of "
                              f"{others}, or set model.backbone.")
        return None
    if explicit and mode != "backbone":
        return None  # the user asked for this mode: honour it (the run records it)
    return normalization_for_backbone(model.mean, model.std, channels)


def normalization_for_backbone(mean: Sequence[float], std: Sequence[float], channels: int) -> Normalization:
    """A backbone's mean/std as the normalisation of uint8 images with ``channels`` channels."""
    mean, std = [float(value) for value in mean], [float(value) for value in std]
    if channels == 1:
        # grey images: the model turns them into three channels and renormalises each exactly
        mean, std = [float(np.mean(mean))], [float(np.mean(std))]
    return Normalization("backbone", mean, std, 1 / 255)


def uses_feature_cache(model: nn.Module, model_config: ModelSection, augmenter: Augmenter | None) -> bool:
    """True for a frozen backbone, no augmentation and the cache not switched off."""
    return isinstance(model, TransferModel) and model.frozen and augmenter is None and model_config.cache_features


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
    """Train and test features of ``model``'s frozen backbone on the data's device, read from the cache
    or computed once, for training the head."""
    path = feature_cache_path(model, dataset_key, test_data, normalization)
    train, test, _ = backbone_features(model, train_data, test_data, path, show_progress=show_progress)
    device = train_data.device
    return DeviceFeatures(train.to(device), train_data.labels), DeviceFeatures(test.to(device), test_data.labels)


def backbone_features(model: TransferModel, train_data: DeviceImages, test_data: DeviceImages, path: Path,
                      use_cache: bool = True, show_progress: bool = True,
                      batch_size: int = FEATURE_BATCH_SIZE) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(train features, test features, read from the cache) of ``model``'s frozen backbone, float32 on
    the CPU: read from the cache file ``path`` when it holds one row per image (and ``use_cache``),
    otherwise computed with `compute_features` and written there."""
    cached = read_feature_cache(path) if use_cache else None
    if cached is not None and (len(cached["train"]), len(cached["test"])) == (len(train_data), len(test_data)):
        runs.log_line(f"{model.backbone_name} features read from the cache {path}", show_progress)
        return cached["train"], cached["test"], True
    runs.log_line(f"computing {model.backbone_name} features of {len(train_data) + len(test_data)} images once "
                  f"(cached in {path})", show_progress)
    train = compute_features(model, train_data, batch_size, "train features", show_progress)
    test = compute_features(model, test_data, batch_size, "test features", show_progress)
    write_feature_cache(path, train, test)
    return train, test, False


@torch.no_grad()
def compute_features(model: TransferModel, data: DeviceImages, batch_size: int = FEATURE_BATCH_SIZE,
                     description: str = "features", show_progress: bool = False) -> torch.Tensor:
    """The backbone's features (N, D) of every image in ``data``, in order, in eval mode, float32 on the CPU."""
    was_training = model.training
    model.eval()
    outputs = []
    indices = torch.arange(len(data), device=data.device)
    # bfloat16 where the hardware runs convolutions faster in it (GPUs, CPUs with AMX or AVX512-BF16), and
    # channels-last where the plan says so: efficientnet-lite0 at 224 px, batch 256, one Zen 4 core, bf16 gave
    # 19.4 features/s in channels-last against 11.1 contiguous (bench/results/frozen_features_study.md)
    plan = automatic_compute_plan(data.device, (3, model.input_size, model.input_size), model.backbone)
    layout = torch.channels_last if plan.channels_last else torch.contiguous_format
    if plan.channels_last:
        model.backbone.to(memory_format=layout)  # as `ComputePlan.prepare` lays out a model for training
    extract = BackboneRunner(model.backbone, batch_size, compiled=len(data) >= COMPILE_FROM_IMAGES)
    with runs.progress_bar(len(data), description, enabled=show_progress) as bar:
        for start in range(0, len(data), batch_size):
            images, _ = data.batch(indices[start:start + batch_size])
            with plan.autocast():
                resized = model.prepare(images).contiguous(memory_format=layout)
                outputs.append(extract(resized, show_progress).float().cpu())
            bar.update(len(images))
    model.train(was_training)
    return torch.cat(outputs)


class BackboneRunner:
    """Runs the backbone on batches: full batches through torch.compile when asked (fixed shapes, so it
    compiles once; a shorter last batch runs uncompiled), everything uncompiled if compiling fails."""

    def __init__(self, backbone: nn.Module, batch_size: int, compiled: bool):
        self.backbone, self.batch_size = backbone, batch_size
        self.compiled = torch.compile(backbone, dynamic=False) if compiled else None

    def __call__(self, images: torch.Tensor, show_progress: bool) -> torch.Tensor:
        if self.compiled is None or len(images) != self.batch_size:
            return self.backbone(images)
        try:
            return self.compiled(images)
        except Exception as error:  # no C++ compiler, an operator inductor lacks...: eager is always right
            runs.log_line(f"torch.compile failed ({type(error).__name__}: {str(error)[:200]}); extracting "
                          "features uncompiled", show_progress)
            self.compiled = None
            return self.backbone(images)


def feature_cache_path(model: TransferModel, dataset_key: str, test_data: DeviceImages,
                       normalization: Normalization) -> Path:
    """The cache file of one frozen backbone's features of one dataset: keyed by the dataset's identity
    and test pixels, the backbone, its weights file digest, input size, truncation and normalisation."""
    weights_digest = runs.file_digest(model.weights_path)[:16] if model.weights_path is not None else model.weights_source
    test_images = test_data.images.cpu().numpy()
    test_sample = hashlib.sha256(np.ascontiguousarray(test_images[::97]).tobytes()).hexdigest()
    identity = {"dataset": dataset_key, "test": [list(test_images.shape), test_sample],
                "backbone": model.backbone_name, "weights": weights_digest, "input_size": model.input_size,
                "blocks": len(model.backbone.blocks), "normalization": normalization.to_dict(), "version": 1}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]
    name = model.backbone_name.replace(":", "-").replace("/", "-")
    return cache_root() / "features" / f"{name}-{digest}.safetensors"


def read_feature_cache(path: Path) -> dict[str, torch.Tensor] | None:
    """Cached "train" and "test" features, or None when the file is missing or damaged."""
    try:
        features = load_file(str(path))
    except (OSError, ValueError, RuntimeError):
        return None  # missing or damaged: compute again
    return features if {"train", "test"} <= set(features) else None


def write_feature_cache(path: Path, train: torch.Tensor, test: torch.Tensor) -> None:
    """Store train and test features (float32, CPU); an unwritable cache is skipped silently."""
    features = {"train": train.float().cpu().contiguous(), "test": test.float().cpu().contiguous()}
    try:
        runs.write_bytes_atomic(path, save(features))
    except OSError:
        pass  # an unwritable cache only costs the recomputation next time
