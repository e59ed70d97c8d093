"""The model zoo: every model the lab reports describe, by name, plus an MLP baseline.

    from cnnlab.models import zoo
    entry = zoo.get_entry("keras/cifar10/model7")   # layers, recipe, reported accuracy and time

Entries are registered by `zoo_lab4` (reports 000/002), `zoo_cifar10` (reports 001, 003, 004) and
`zoo_transfer` (efficientnet-lite0 transfer learning) when this module is imported."""

from __future__ import annotations

from cnnlab.models.zoo import cifar10_reports, fast, report000, transfer  # noqa: F401  (importing them registers their entries)
from cnnlab.models.zoo.registry import (
    DATASET_INPUT_SHAPES, PRETRAINED_REASON, ZooEntry, get_entry, list_entries, make_recipe, register,
)

__all__ = ["DATASET_INPUT_SHAPES", "PRETRAINED_REASON", "ZooEntry", "get_entry", "list_entries", "make_recipe",
           "register"]


@register
def mlp() -> ZooEntry:
    return ZooEntry(
        name="mlp", dataset="digits",
        layers=["Flatten", "Dense: 512, relu", "Dropout: 0.2", "Dense: 256, relu", "Dense: classes"],
        recipe=make_recipe(20, batch_size=32, optimizer={"name": "adam", "lr": 1e-3}),
        description="Multilayer perceptron baseline (512 and 256 ReLU units, dropout 0.2), the kind of model the "
                    "Lab 4 reports compare their CNNs with; Adam lr 1e-3, batch 32, 20 epochs",
        source="cnnlab baseline")
