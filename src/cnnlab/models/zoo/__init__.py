"""The model zoo: every model the lab reports describe, by name, plus cnnlab's own presets and a baseline.

    from cnnlab.models import zoo
    entry = zoo.get_entry("keras/cifar10/model7")   # layers, recipe, reported accuracy and time

One module per lab report (report000, report001, report003, report004) and per cnnlab family
(fast, transfer, baselines); importing this package imports them all, and each registers its
entries with `register(ZooEntry(...))`. `PREFIXES` says which report or family each name prefix
stands for (`cnnlab models` prints it as a legend)."""

from __future__ import annotations

from cnnlab.models.zoo import baselines, fast, report000, report001, report003, report004, transfer
from cnnlab.models.zoo.registry import (
    DATASET_INPUT_SHAPES, RENAMED, ZooEntry, get_entry, list_entries, make_recipe, name_prefix, register,
)

# What each name prefix stands for, in the order `cnnlab models` lists them.
PREFIXES = {
    "mlp": baselines.TITLE,
    "fast/": fast.TITLE,
    "transfer/": transfer.TITLE,
    "keras/": f"{report000.TITLE}, Keras part (MNIST and CIFAR-10)",
    "torch/": f"{report000.TITLE}, PyTorch part (MNIST and CIFAR-10)",
    "cifar10/": f"{report001.TITLE}; {report003.TITLE}",
    "report004/": report004.TITLE,
}

__all__ = ["DATASET_INPUT_SHAPES", "PREFIXES", "RENAMED", "ZooEntry", "get_entry", "list_entries", "make_recipe",
           "name_prefix", "register"]
