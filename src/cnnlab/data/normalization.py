"""The input normalisation every run records: per-channel ``x_float = (x_uint8 * scale - mean) / std``,
its statistics fitted on the training images only, z-score statistics kept in the user cache."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from cnnlab import runs
from cnnlab.data.locate import cache_root

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Normalization:
    """x_float = (x_uint8 * scale - mean) / std, per channel; recorded in every run."""

    mode: str
    mean: list[float]
    std: list[float]
    scale: float

    def to_dict(self) -> dict:
        return {"mode": self.mode, "mean": self.mean, "std": self.std, "scale": self.scale}


def fit_normalization(mode: str, train_images: np.ndarray) -> Normalization:
    """Statistics for ``mode`` ("scale", "zscore", "imagenet", "none") from the training images only."""
    channels = train_images.shape[1]
    if mode == "none":
        return Normalization(mode, [0.0] * channels, [1.0] * channels, 1.0)
    if mode == "scale":
        return Normalization(mode, [0.0] * channels, [1.0] * channels, 1 / 255)
    if mode == "imagenet":
        mean = list(IMAGENET_MEAN) if channels == 3 else [float(np.mean(IMAGENET_MEAN))] * channels
        std = list(IMAGENET_STD) if channels == 3 else [float(np.mean(IMAGENET_STD))] * channels
        return Normalization(mode, mean, std, 1 / 255)
    # z-score: accumulate per-channel sums in float64 chunks so a large uint8 array is never copied whole
    total = np.zeros(channels)
    squares = np.zeros(channels)
    count = 0
    for start in range(0, len(train_images), 4096):
        chunk = train_images[start:start + 4096].astype(np.float64) / 255
        total += chunk.sum(axis=(0, 2, 3))
        squares += (chunk ** 2).sum(axis=(0, 2, 3))
        count += chunk.shape[0] * chunk.shape[2] * chunk.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean ** 2, 1e-12))
    return Normalization(mode, mean.tolist(), std.tolist(), 1 / 255)


def cached_normalization(mode: str, dataset_key: str, train_images: np.ndarray, indices: np.ndarray) -> Normalization:
    """``fit_normalization`` on ``train_images[indices]``, computed once per dataset and split and
    kept in the user cache (z-score statistics of 50,000 images take seconds; reading them, none)."""
    if mode != "zscore":
        return fit_normalization(mode, train_images[indices])
    digest = hashlib.sha256(dataset_key.encode() + np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()[:24]
    path = cache_root() / "normalization" / f"{digest}.json"
    try:
        return Normalization(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        pass
    normalization = fit_normalization(mode, train_images[indices])
    try:
        runs.write_json_atomic(path, normalization.to_dict())
    except OSError:
        pass  # an unwritable cache only costs the recomputation next time
    return normalization
