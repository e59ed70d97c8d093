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
FITTED_MODES = ("zscore", "zscore-global")  # the modes whose statistics come from the training images


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
    """Statistics for ``mode`` from the training images only: "scale" ([0, 1]), "symmetric" ([-1, 1], the
    PyTorch tutorials' ``Normalize((0.5,) * 3, (0.5,) * 3)``), "zscore" (per channel), "zscore-global" (one
    mean and one std over every pixel of every channel, as ``(x - x.mean()) / x.std()`` in NumPy),
    "imagenet" or "none" (raw 0-255 values)."""
    channels = train_images.shape[1]
    if mode == "none":
        return Normalization(mode, [0.0] * channels, [1.0] * channels, 1.0)
    if mode == "scale":
        return Normalization(mode, [0.0] * channels, [1.0] * channels, 1 / 255)
    if mode == "symmetric":
        return Normalization(mode, [0.5] * channels, [0.5] * channels, 1 / 255)
    if mode == "imagenet":
        mean = list(IMAGENET_MEAN) if channels == 3 else [float(np.mean(IMAGENET_MEAN))] * channels
        std = list(IMAGENET_STD) if channels == 3 else [float(np.mean(IMAGENET_STD))] * channels
        return Normalization(mode, mean, std, 1 / 255)
    total, squares, count = _channel_sums(train_images)
    if mode == "zscore-global":
        total, squares, count = total.sum(keepdims=True), squares.sum(keepdims=True), count * channels
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean ** 2, 1e-12))
    return Normalization(mode, np.broadcast_to(mean, channels).tolist(), np.broadcast_to(std, channels).tolist(), 1 / 255)


def _channel_sums(train_images: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-channel sum and sum of squares of the pixels in [0, 1], and the pixel count per channel,
    accumulated in float64 chunks so that a large uint8 array is never copied whole."""
    channels = train_images.shape[1]
    total = np.zeros(channels)
    squares = np.zeros(channels)
    count = 0
    for start in range(0, len(train_images), 4096):
        chunk = train_images[start:start + 4096].astype(np.float64) / 255
        total += chunk.sum(axis=(0, 2, 3))
        squares += (chunk ** 2).sum(axis=(0, 2, 3))
        count += chunk.shape[0] * chunk.shape[2] * chunk.shape[3]
    return total, squares, count


def cached_normalization(mode: str, dataset_key: str, train_images: np.ndarray, indices: np.ndarray) -> Normalization:
    """``fit_normalization`` on ``train_images[indices]``, computed once per dataset and split and
    kept in the user cache (z-score statistics of 50,000 images take seconds; reading them, none)."""
    if mode not in FITTED_MODES:
        return fit_normalization(mode, train_images[indices])
    key = dataset_key if mode == "zscore" else f"{mode}|{dataset_key}"  # "zscore" keeps its earlier cache files
    digest = hashlib.sha256(key.encode() + np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()[:24]
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
