"""Datasets: load them by name into uint8 (N, C, H, W) arrays, from disk or a checked download.

Importing this package registers the built-in datasets (``digits``, ``mnist``,
``fashion-mnist``, ``cifar10``, ``cifar10-jpeg``, ``imagefolder:PATH``); more are added
with ``@register_dataset`` in a module imported here.
"""

from cnnlab.data import cifar10, cifar10_jpeg, digits, imagefolder, mnist  # noqa: F401  (registers the built-in datasets)
from cnnlab.data.archives import extract_archive
from cnnlab.data.idx import read_idx
from cnnlab.data.locate import cache_root, find_data_dirs, is_offline
from cnnlab.data.registry import (
    Dataset,
    DatasetConfig,
    dataset_names,
    load_dataset,
    register_dataset,
    resize_dataset,
    split_validation,
)
from cnnlab.data.safe_pickle import load_restricted_pickle

__all__ = [
    "Dataset",
    "DatasetConfig",
    "cache_root",
    "dataset_names",
    "extract_archive",
    "find_data_dirs",
    "is_offline",
    "load_dataset",
    "load_restricted_pickle",
    "read_idx",
    "register_dataset",
    "resize_dataset",
    "split_validation",
]
