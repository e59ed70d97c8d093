"""Augmented training images back as pixels: originals beside augmented versions, for
`cnnlab augment-preview` and the augmentation examples saved with each run."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from cnnlab.data.device_images import DeviceImages


def to_pixels(data: DeviceImages, normalised: torch.Tensor) -> np.ndarray:
    """Undo the normalisation: float batch → uint8 (N, C, H, W)."""
    pixels = (normalised - data.offset) / data.multiplier
    return pixels.round().clamp(0, 255).to(torch.uint8).cpu().numpy()


def augmented_versions(data: DeviceImages, augmenter: Callable[[torch.Tensor], torch.Tensor], indices: np.ndarray,
                       views: int) -> tuple[np.ndarray, np.ndarray]:
    """(originals (N, C, H, W), augmented (N, views, C, H, W)), uint8, for the training images at ``indices``."""
    chosen = torch.as_tensor(np.asarray(indices, dtype=np.int64), device=data.device)
    images, _ = data.batch(chosen)
    repeated = images.repeat_interleave(views, dim=0)
    augmented = to_pixels(data, augmenter(repeated))
    originals = to_pixels(data, images)
    return originals, augmented.reshape(len(chosen), views, *augmented.shape[1:])
