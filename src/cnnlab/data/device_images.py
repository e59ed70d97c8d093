"""The dataset as one uint8 tensor on the training device; batches are index gathers,
normalisation is one fused multiply-add on the batch, on that device."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

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


def cached_normalization(mode: str, dataset_key: str, train_images: np.ndarray, positions: np.ndarray) -> Normalization:
    """``fit_normalization`` on ``train_images[positions]``, computed once per dataset and split and
    kept in the user cache (z-score statistics of 50,000 images take seconds; reading them, none)."""
    if mode != "zscore":
        return fit_normalization(mode, train_images[positions])
    import hashlib
    import json

    from cnnlab.data.locate import cache_root
    from cnnlab.runs import write_json_atomic

    digest = hashlib.sha256(dataset_key.encode() + np.asarray(positions, dtype=np.int64).tobytes()).hexdigest()[:24]
    path = cache_root() / "normalization" / f"{digest}.json"
    try:
        return Normalization(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        pass
    normalization = fit_normalization(mode, train_images[positions])
    try:
        write_json_atomic(path, normalization.to_dict())
    except OSError:
        pass  # an unwritable cache only costs the recomputation next time
    return normalization


class DeviceImages:
    """uint8 images (N, C, H, W) and int64 labels resident on ``device``."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, normalization: Normalization,
                 device: torch.device, channels_last: bool = False):
        self.images = torch.from_numpy(np.ascontiguousarray(images)).to(device)
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device)
        self.device = device
        self.channels_last = channels_last
        shape = (1, -1, 1, 1)
        std = torch.tensor(normalization.std, dtype=torch.float32, device=device).view(shape)
        mean = torch.tensor(normalization.mean, dtype=torch.float32, device=device).view(shape)
        # (x * scale - mean) / std  ==  x * multiplier + offset
        self.multiplier = normalization.scale / std
        self.offset = -mean / std

    def __len__(self) -> int:
        return self.labels.shape[0]

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gather ``indices`` and return (normalised float images, labels)."""
        images = self.images.index_select(0, indices)
        return self.normalize(images), self.labels.index_select(0, indices)

    def normalize(self, images_uint8: torch.Tensor) -> torch.Tensor:
        images = torch.addcmul(self.offset, images_uint8.float(), self.multiplier)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images
