"""Fast recipes: the shortest way this toolkit knows to a good model, through the same trainer.

    cnnlab train fast/mnist                          # >= 99.0% test accuracy on MNIST
    cnnlab train fast/cifar10 dataset.name=cifar10-jpeg

Each entry states the published technique it follows; bench/ measures them against peers."""

from __future__ import annotations

from cnnlab.models.registry import ZooEntry, make_recipe, register

SOURCE = "cnnlab fast recipes"

# Three 3x3 conv / batch-norm / max-pool stages and a linear classifier on the 3x3x128 map:
# 0.1M parameters, ~15 MFLOPs per image; batch norm lets it take a one-cycle schedule's high peak.
MNIST_LAYERS = ["Conv2D: 32, 3, 1, same", "BatchNorm", "MaxPooling: 2",
                "Conv2D: 64, 3, 1, same", "BatchNorm", "MaxPooling: 2",
                "Conv2D: 128, 3, 1, same", "BatchNorm", "MaxPooling: 2",
                "Flatten", "Dense: classes"]
MNIST_RECIPE = make_recipe(
    2, batch_size=128, validation_split=0.0,
    optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
    schedule={"name": "onecycle", "warmup_epochs": 0.5})
MNIST_RECIPE["train"]["label_smoothing"] = 0.1

register(ZooEntry(
    name="fast/mnist", dataset="mnist", layers=MNIST_LAYERS, recipe=MNIST_RECIPE,
    description="At least 99.0% on MNIST in seconds: a 3-stage batch-norm CNN, Nesterov SGD with a one-cycle "
                "schedule, label smoothing 0.1, batch 128, 2 epochs",
    source=SOURCE))
