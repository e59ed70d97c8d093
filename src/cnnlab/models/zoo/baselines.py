"""cnnlab's baseline (no lab report): the multilayer perceptron the Lab 4 reports compare their CNNs with.

Recipe: Adam at lr 1e-3, batch 32, 20 epochs (the Lab 4 reports' Keras defaults), on the small
`digits` dataset so it trains in seconds; give `dataset=mnist` or `dataset=cifar10` for the
reports' comparison."""

from __future__ import annotations

from cnnlab.models.zoo.registry import ZooEntry, make_recipe, register

TITLE = "cnnlab's multilayer-perceptron baseline (no lab report)"
SOURCE = "cnnlab baseline"

register(ZooEntry(
    name="mlp", dataset="digits",
    layers=["Flatten", "Dense: 512, relu", "Dropout: 0.2", "Dense: 256, relu", "Dense: classes"],
    recipe=make_recipe(20, batch_size=32, optimizer={"name": "adam", "lr": 1e-3}),
    description="Multilayer perceptron baseline (512 and 256 ReLU units, dropout 0.2), the kind of model the "
                "Lab 4 reports compare their CNNs with; Adam lr 1e-3, batch 32, 20 epochs",
    source=SOURCE))
