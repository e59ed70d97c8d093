"""Turning uint8 images into network inputs, per the config's ``normalize`` setting.

Statistics are in pixel units (0..255) and per channel, so one rule serves every mode:
``input = (pixel - mean) / std``. ``zscore`` statistics come from the training images
only, so the test set never leaks into preprocessing.
"""

from __future__ import annotations

import numpy as np

from cnnlab.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALIZE_MODES = ("scale", "zscore", "imagenet", "none")


def normalization_stats(train_images: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (mean, std), float32 arrays of shape (C,) in pixel units, for ``mode``:
    ``scale`` gives inputs in 0..1, ``zscore`` zero mean and unit variance over the
    training images, ``imagenet`` ImageNet's statistics (their average for grey images),
    ``none`` the raw 0..255 values."""
    channels = train_images.shape[1]
    if mode == "scale":
        mean, std = np.zeros(channels), np.full(channels, 255.0)
    elif mode == "none":
        mean, std = np.zeros(channels), np.ones(channels)
    elif mode == "zscore":
        mean, std = _channel_mean_std(train_images)
    elif mode == "imagenet":
        mean, std = _imagenet_stats(channels)
    else:
        raise ConfigError(f'Unknown normalize "{mode}"; choose one of {", ".join(NORMALIZE_MODES)}.')
    return mean.astype(np.float32), std.astype(np.float32)


def normalize_images(images: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """float32 ``(images - mean) / std`` with the per-channel statistics broadcast."""
    shape = (1, -1, 1, 1)
    return (images.astype(np.float32) - mean.reshape(shape)) / std.reshape(shape)


def _channel_mean_std(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Sums over uint8 in float64 chunks: exact enough and no full float copy of the data.
    channels = images.shape[1]
    total, total_squares, count = np.zeros(channels), np.zeros(channels), 0
    for start in range(0, len(images), 8192):
        chunk = images[start : start + 8192].astype(np.float64)
        total += chunk.sum(axis=(0, 2, 3))
        total_squares += np.square(chunk).sum(axis=(0, 2, 3))
        count += chunk.shape[0] * chunk.shape[2] * chunk.shape[3]
    mean = total / max(count, 1)
    std = np.sqrt(np.maximum(total_squares / max(count, 1) - mean**2, 0.0))
    return mean, np.where(std > 0, std, 1.0)


def _imagenet_stats(channels: int) -> tuple[np.ndarray, np.ndarray]:
    mean, std = np.array(IMAGENET_MEAN) * 255, np.array(IMAGENET_STD) * 255
    if channels == 3:
        return mean, std
    return np.full(channels, mean.mean()), np.full(channels, std.mean())
