"""The dataset registry: the `Dataset` record, its config, and `load_dataset`.

A loader is a small function decorated with `@register_dataset("name")` that reads
the whole dataset and returns a `Dataset`; `load_dataset` looks the name up, calls the
loader and applies the config's subsets and image size. Names of the form
``prefix:argument`` (e.g. ``imagefolder:PATH``) reach a loader registered with
``takes_argument=True``; a loader registered with ``takes_config=True`` also gets the
whole `DatasetConfig` (keyword ``config``) for options of its own.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Optional, Union, get_args

import numpy as np
from pydantic import Field, field_validator, model_validator

from cnnlab.data.images import DEFAULT_SIZE, MAX_KEPT_SIZE, HeightWidth, as_height_width, resize_images
from cnnlab.errors import TUPLE_FROM_LIST, ConfigError, DataError, StrictModel, did_you_mean, require_memory, shorten

Loader = Callable[..., "Dataset"]
MAX_IMAGE_SIZE = 4096
MAX_IMAGES = 2**31 - 1  # subset sizes: more than any dataset holds
MAX_SEED = 2**32 - 1


@dataclass
class Dataset:
    """A whole dataset in memory: uint8 images shaped (N, C, H, W), int64 labels."""

    name: str
    classes: list[str]
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            images = getattr(self, f"{split}_images")
            labels = getattr(self, f"{split}_labels")
            if images.dtype != np.uint8 or images.ndim != 4:
                raise DataError(
                    f"The {split} images of {self.name} (from {self.source}) are {images.dtype} "
                    f"shaped {images.shape}; cnnlab needs uint8 shaped (N, C, H, W)."
                )
            if labels.dtype != np.int64 or labels.shape != (len(images),):
                raise DataError(
                    f"The {split} labels of {self.name} (from {self.source}) are {labels.dtype} "
                    f"shaped {labels.shape}; cnnlab needs int64 shaped ({len(images)},), one per image."
                )
        if self.train_images.shape[1:] != self.test_images.shape[1:]:
            raise DataError(
                f"The train and test images of {self.name} (from {self.source}) differ in shape: "
                f"{self.train_images.shape[1:]} and {self.test_images.shape[1:]}."
            )

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        channels, height, width = self.train_images.shape[1:]
        return int(channels), int(height), int(width)

    @property
    def n_classes(self) -> int:
        return len(self.classes)


NormalizeMode = Literal["scale", "symmetric", "zscore", "zscore-global", "imagenet", "none", "backbone"]
NORMALIZE_MODES: tuple[str, ...] = get_args(NormalizeMode)


class DatasetConfig(StrictModel):
    """Which dataset to load and how to prepare it. A bare string means ``{name: ...}``."""

    name: str = Field(max_length=4096)  # imagefolder:PATH holds a path
    # scale: [0, 1]; symmetric: [-1, 1] (the PyTorch tutorials'); zscore: per channel; zscore-global: one
    # mean and std over all channels; none: raw 0-255; "backbone": the pretrained backbone's own mean/std
    # (the default whenever model.backbone is set). See data/normalization.py.
    normalize: NormalizeMode = "scale"
    subset: Optional[int] = Field(default=None, ge=1, le=MAX_IMAGES, description="use only the first N training images")
    test_subset: Optional[int] = Field(default=None, ge=1, le=MAX_IMAGES, description="use only the first N test images")
    image_size: Annotated[Optional[Union[int, tuple[int, int]]], TUPLE_FROM_LIST] = Field(
        default=None,
        description="resize every image to SIZE x SIZE or (HEIGHT, WIDTH); imagefolder by default keeps a "
        f"common size up to {MAX_KEPT_SIZE}, else uses {DEFAULT_SIZE}",
    )
    test_fraction: float = Field(default=0.2, gt=0, lt=1, description="imagefolder without a test folder: share of each class held out for testing")
    split_seed: int = Field(default=0, ge=0, le=MAX_SEED, description="seed of that held-out test split")

    @model_validator(mode="before")
    @classmethod
    def _accept_bare_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("image_size")
    @classmethod
    def _check_image_size(cls, value: Any) -> Any:
        if value is not None and not all(1 <= side <= MAX_IMAGE_SIZE for side in as_height_width(value)):
            raise ValueError(f"image_size must be between 1 and {MAX_IMAGE_SIZE} pixels a side, e.g. 32 or [32, 48] (height, width)")
        return value

    @property
    def image_height_width(self) -> HeightWidth | None:
        """``image_size`` as (height, width), or None when not set."""
        return as_height_width(self.image_size)


@dataclass
class DatasetEntry:
    """One registered dataset: its loader and where else (system folders) it may live."""

    name: str
    loader: Loader
    takes_argument: bool = False
    folder_aliases: tuple[str, ...] = ()
    system_dirs: tuple[Path, ...] = ()
    description: str = ""
    takes_config: bool = False


_REGISTRY: dict[str, DatasetEntry] = {}


def register_dataset(
    name: str,
    *,
    takes_argument: bool = False,
    takes_config: bool = False,
    folder_aliases: tuple[str, ...] = (),
    system_dirs: tuple[Path | str, ...] = (),
    description: str = "",
) -> Callable[[Loader], Loader]:
    """Decorator: register ``loader(data_dir)`` (or ``loader(data_dir, argument)`` when
    ``takes_argument``; with ``takes_config`` also the keyword ``config=DatasetConfig``)
    under ``name``. ``folder_aliases`` are extra sub-folder names to look for inside a
    data root; ``system_dirs`` are folders searched after the cache."""

    def decorate(loader: Loader) -> Loader:
        _REGISTRY[name] = DatasetEntry(
            name=name,
            loader=loader,
            takes_argument=takes_argument,
            takes_config=takes_config,
            folder_aliases=tuple(folder_aliases),
            system_dirs=tuple(Path(folder) for folder in system_dirs),
            description=description or _first_line(loader.__doc__),
        )
        return loader

    return decorate


def _first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0] if lines else ""


def dataset_names() -> list[str]:
    """The registered names, sorted; parameterised ones are shown as ``name:ARGUMENT``."""
    return sorted(f"{name}:PATH" if entry.takes_argument else name for name, entry in _REGISTRY.items())


def find_entry(name: str) -> tuple[DatasetEntry, str | None]:
    """The registry entry for ``name`` and its argument (after ``:``), or ConfigError."""
    key, separator, argument = name.partition(":")
    key = key.strip().lower().replace("_", "-")
    entry = _REGISTRY.get(key)
    if entry is None or entry.takes_argument != bool(separator):
        known = dataset_names()
        hint = did_you_mean(key, list(_REGISTRY))
        if entry is not None and entry.takes_argument:
            hint = f' "{key}" needs an argument: write it as "{key}:PATH".'
        elif entry is not None:
            hint = f' "{key}" takes no argument: write it as "{key}".'
        raise ConfigError(f'Unknown dataset "{shorten(name)}".{hint} Known datasets: {", ".join(known)}.')
    return entry, (argument if separator else None)


def load_dataset(config: DatasetConfig | str, data_dir: Path | None = None) -> Dataset:
    """Load the dataset ``config`` names, reading files from ``data_dir`` first when given.

    Returns uint8 images (normalisation is the trainer's job, on the device: `cnnlab.data.device_images`),
    cut to the first ``subset`` train and ``test_subset`` test images when those are set,
    and resized to ``image_size`` when that is set.
    Raises ConfigError for an unknown name and DataError for missing or corrupt files.
    """
    if isinstance(config, str):
        config = DatasetConfig(name=config)
    entry, argument = find_entry(config.name)
    data_dir = check_data_dir(data_dir)
    arguments = (data_dir, argument) if entry.takes_argument else (data_dir,)
    options = {"config": config} if entry.takes_config else {}
    dataset = take_subsets(entry.loader(*arguments, **options), config.subset, config.test_subset, config.split_seed)
    return resize_dataset(dataset, config.image_height_width)


def check_data_dir(data_dir: Path | str | None) -> Path | None:
    """``data_dir`` with ``~`` expanded; DataError when it names something that is not a folder (a file given
    by mistake would otherwise be passed over in silence while the dataset is looked for elsewhere)."""
    if data_dir is None:
        return None
    folder = Path(data_dir).expanduser()
    if folder.exists() and not folder.is_dir():
        raise DataError(f"--data-dir {folder} is a file, not a folder. Give the folder that holds the datasets "
                        "(e.g. DIR where DIR/mnist/ or DIR/cifar10-jpeg.tar.gz lies), or leave --data-dir out.")
    return folder


def resize_dataset(dataset: Dataset, size: HeightWidth | None) -> Dataset:
    """``dataset`` with every image resized to ``size`` (height, width); itself when
    ``size`` is None or already the images' size."""
    if size is None or dataset.train_images.shape[2:] == size:
        return dataset
    count = len(dataset.train_images) + len(dataset.test_images)
    require_memory(count * dataset.train_images.shape[1] * size[0] * size[1],
                   f"Resizing the {count:,} images of {dataset.name} to {size[0]}x{size[1]}",
                   "Lower dataset.image_size, or use fewer images with dataset.subset and dataset.test_subset.")
    return dataclasses.replace(
        dataset,
        train_images=resize_images(dataset.train_images, size, f"{dataset.name}: resizing train images"),
        test_images=resize_images(dataset.test_images, size, f"{dataset.name}: resizing test images"),
    )


def take_subsets(dataset: Dataset, subset: int | None, test_subset: int | None, seed: int = 0) -> Dataset:
    """A seeded random sample of ``subset`` train and ``test_subset`` test images, kept in their
    original order (all when None or larger than the split). A random sample, not the first N:
    datasets stored class by class (CIFAR-10 JPEGs, image folders) would otherwise lose classes."""
    if subset is None and test_subset is None:
        return dataset
    train = _sample(len(dataset.train_labels), subset, seed)
    test = _sample(len(dataset.test_labels), test_subset, seed + 1)
    return dataclasses.replace(
        dataset,
        train_images=dataset.train_images[train],
        train_labels=dataset.train_labels[train],
        test_images=dataset.test_images[test],
        test_labels=dataset.test_labels[test],
    )


def _sample(total: int, count: int | None, seed: int) -> np.ndarray:
    if count is None or count >= total:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).permutation(total)[:count])


def split_validation(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out ``round(n * fraction)`` of ``range(n)`` (at least one when fraction > 0),
    chosen by a permutation seeded with ``seed``. Returns sorted int64 index arrays
    (train_idx, val_idx) that are disjoint and together cover ``range(n)``."""
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(
            f"validation_split must be at least 0 and below 1, got {fraction}. "
            "Use 0 for no validation set, or e.g. 0.1 to hold out a tenth of the training images."
        )
    n_validation = 0 if fraction == 0 else max(1, int(round(n * fraction)))
    if n_validation >= n and n_validation > 0:
        raise ConfigError(
            f"validation_split {fraction} of {n} training images leaves none to train on. "
            "Lower validation_split or use more training images (subset)."
        )
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_validation:]).astype(np.int64), np.sort(order[:n_validation]).astype(np.int64)


__all__ = [
    "Dataset",
    "DatasetConfig",
    "DatasetEntry",
    "dataset_names",
    "find_entry",
    "load_dataset",
    "register_dataset",
    "resize_dataset",
    "split_validation",
    "take_subsets",
]
