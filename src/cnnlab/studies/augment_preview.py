"""Originals beside augmented versions (the reports' "augmented images" figures), for
`cnnlab augment-preview` and the report's augmentation section."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cnnlab.report import plots
from cnnlab.data.device_images import DeviceImages


def to_pixels(data: DeviceImages, normalised: torch.Tensor) -> np.ndarray:
    """Undo the normalisation: float batch → uint8 (N, C, H, W)."""
    pixels = (normalised - data.offset) / data.multiplier
    return pixels.round().clamp(0, 255).to(torch.uint8).cpu().numpy()


def augmented_versions(data: DeviceImages, augmenter, positions: np.ndarray, views: int) -> tuple[np.ndarray, np.ndarray]:
    """(originals (N, C, H, W), augmented (N, views, C, H, W)), uint8, for training images at ``positions``."""
    indices = torch.as_tensor(np.asarray(positions, dtype=np.int64), device=data.device)
    images, _ = data.batch(indices)
    repeated = images.repeat_interleave(views, dim=0)
    augmented = to_pixels(data, augmenter(repeated))
    originals = to_pixels(data, images)
    return originals, augmented.reshape(len(indices), views, *augmented.shape[1:])


def plot_augmentation(originals: np.ndarray, augmented: np.ndarray):
    """One row per image: the original, then its augmented versions."""
    rows, views = augmented.shape[:2]
    images = np.concatenate([originals[:, None], augmented], axis=1).reshape(rows * (views + 1), *originals.shape[1:])
    captions = [("original" if column == 0 else f"augmented {column}") for _ in range(rows) for column in range(views + 1)]
    return plots.plot_image_grid(images, captions, ncols=views + 1)


def write_preview(config, out_dir: Path, data_dir: Path | None = None, count: int = 8, views: int = 5) -> Path:
    """Write augmentation.png for ``config``'s dataset and augmentation; return its path."""
    from cnnlab.augment.augmenter import build_augmenter, parse_augment
    from cnnlab.data.device_images import fit_normalization
    from cnnlab.data import load_dataset
    from cnnlab.errors import ConfigError

    augment_config = parse_augment(config.augment)
    dataset = load_dataset(config.dataset, data_dir)
    normalization = fit_normalization(config.dataset.normalize, dataset.train_images)
    data = DeviceImages(dataset.train_images, dataset.train_labels, normalization, torch.device("cpu"))
    augmenter = build_augmenter(augment_config, dataset.input_shape, "cpu", config.train.seed, normalization)
    if augmenter is None:
        raise ConfigError("This config has no training augmentation (its augment: section is empty), so there is "
                          "nothing to preview. Add e.g. augment: {horizontal_flip: true, width_shift_range: 0.1}.")
    originals, augmented = augmented_versions(data, augmenter, np.arange(min(count, len(dataset.train_labels))), views)
    path = Path(out_dir) / "augmentation.png"
    plots.save_figure(plot_augmentation(originals, augmented), path)
    return path
