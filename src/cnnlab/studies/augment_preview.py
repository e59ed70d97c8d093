"""`cnnlab augment-preview`: a config's augmentation applied to the first training images, as a figure."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from cnnlab import output_folders
from cnnlab.augment.augmenter import build_augmenter
from cnnlab.augment.preview import augmented_versions
from cnnlab.config import ExperimentConfig
from cnnlab.data import load_dataset
from cnnlab.data.device_images import DeviceImages
from cnnlab.data.normalization import fit_normalization
from cnnlab.errors import ConfigError
from cnnlab.report import image_plots, plots

PREVIEW_FILE = "augmentation.png"


def write_preview(config: ExperimentConfig, out_dir: Path, data_dir: Optional[Path] = None, count: int = 8,
                  views: int = 5, overwrite: bool = False) -> Path:
    """Write augmentation.png (one row per image: the original, then ``views`` augmented versions) for the
    first ``count`` training images of ``config``'s dataset; return its path. Raises ConfigError when the
    config augments nothing in training. An earlier preview in ``out_dir`` is replaced only with ``overwrite``."""
    output_folders.check_output_folder(out_dir, overwrite, "augment-preview")
    dataset = load_dataset(config.dataset, data_dir)
    normalization = fit_normalization(config.dataset.normalize, dataset.train_images)
    data = DeviceImages(dataset.train_images, dataset.train_labels, normalization, torch.device("cpu"))
    augmenter = build_augmenter(config.augment, dataset.input_shape, "cpu", config.train.seed, normalization)
    if augmenter is None:
        raise ConfigError("This config has no training augmentation (its augment: section is empty), so there is "
                          "nothing to preview. Add e.g. augment: {horizontal_flip: true, width_shift_range: 0.1}.")
    originals, augmented = augmented_versions(data, augmenter, np.arange(min(count, len(dataset.train_labels))), views)
    folder = output_folders.prepare_output_folder(out_dir, overwrite, "augment-preview")
    plots.save_figure(image_plots.plot_augmentation(originals, augmented), folder / PREVIEW_FILE)
    return output_folders.publish_output_folder(folder) / PREVIEW_FILE
