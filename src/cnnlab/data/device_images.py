"""The dataset as one uint8 tensor on the training device; batches are index gathers,
normalisation is one fused multiply-add on the batch, on that device."""

from __future__ import annotations

import numpy as np
import torch

from cnnlab.data.normalization import Normalization


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
        """uint8 images on the device to the normalised float images the model sees (channels-last when asked)."""
        images = torch.addcmul(self.offset, images_uint8.float(), self.multiplier)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images
