"""Report 001, "Classification of the CIFAR-10 dataset" (Keras, CIFAR-10).

Recipe as the report states it: Keras SGD at lr 0.01, batch 32, 10 epochs, validation_split 0.25
(the dense network: no validation split, its fit trains on all 50,000 images), for every model: a naive dense network, a small CNN, the CNN with dropout, then with batch norm,
and a head on frozen VGG16 features. Its figures are test accuracy for the dense network and
validation accuracy for the others, as the report gives them."""

from __future__ import annotations

from typing import Any

from cnnlab.models.zoo.registry import KERAS_BATCH_NORM, ZooEntry, make_recipe, register

TITLE = 'report 001, "Classification of the CIFAR-10 dataset" (Keras, SGD)'
SOURCE = "report 001"
RECIPE = make_recipe(10, batch_size=32, validation_split=0.25, optimizer={"name": "sgd", "lr": 0.01})
AS_REPORTED = "Keras SGD (lr 0.01), batch 32, 10 epochs, validation_split 0.25 as in the report"
CNN = ["Conv2D: 32, 3", "Conv2D: 32, 3", "MaxPooling: 2", "Conv2D: 64, 3", "Conv2D: 64, 3", "MaxPooling: 2",
       "Flatten", "Dense: 512, relu", "Dense: 10, softmax"]
CNN_DROPOUT = ["Conv2D: 32, 3", "Conv2D: 32, 3", "Dropout: 0.25", "MaxPooling: 2",
               "Conv2D: 64, 3", "Conv2D: 64, 3", "Dropout: 0.25", "MaxPooling: 2",
               "Flatten", "Dense: 512, relu", "Dropout: 0.25", "Dense: 10, softmax"]
CNN_BATCHNORM = ["Conv2D: 32, 3", "Conv2D: 32, 3", KERAS_BATCH_NORM, "Dropout: 0.25", "MaxPooling: 2",
                 "Conv2D: 64, 3", "Conv2D: 64, 3", KERAS_BATCH_NORM, "Dropout: 0.25", "MaxPooling: 2",
                 "Flatten", "Dense: 512, relu", KERAS_BATCH_NORM, "Dropout: 0.25", "Dense: 10, softmax"]


def report_entry(name: str, layers: list[str], accuracy: float, accuracy_kind: str, description: str,
                 **fields: Any) -> ZooEntry:
    """An entry trained with the report's one recipe; `accuracy_kind` says which figure the report gives."""
    return ZooEntry(name=name, dataset="cifar10", layers=layers, recipe=RECIPE,
                    description=f"{description}. {AS_REPORTED}.", source=SOURCE, reported_accuracy=accuracy,
                    reported_accuracy_kind=accuracy_kind, **fields)


# The dense network's train_model calls model.fit(x, y, batch_size=32, epochs=10) without a
# validation split (only the CNNs' train_cnn passes validation_split=0.25): it trains on all 50,000.
register(ZooEntry(name="cifar10/dense", dataset="cifar10",
                  layers=["Flatten", "Dense: 2048, relu", "Dense: 1024, relu", "Dense: 512, relu", "Dense: 256, relu",
                          "Dense: 10, softmax"],
                  recipe=make_recipe(10, batch_size=32, validation_split=0.0, optimizer={"name": "sgd", "lr": 0.01}),
                  description="Naive dense network: four ReLU layers of 2048, 1024, 512, 256 units (9,050,378 "
                              "parameters). Keras SGD (lr 0.01), batch 32, 10 epochs on all 50,000 training images "
                              "(its fit has no validation split) as in the report",
                  source=SOURCE, reported_accuracy=0.4976, reported_accuracy_kind="test"))
register(report_entry("cifar10/cnn", CNN, 0.6361, "validation",
                      "Two stages of two 3x3 convolutions and a max-pool, a 512-unit layer (890,410 parameters)"))
register(report_entry("cifar10/cnn-dropout", CNN_DROPOUT, 0.6207, "validation",
                      "cifar10/cnn with Dropout 0.25 before each max-pool and before the last Dense"))
register(report_entry("cifar10/cnn-batchnorm", CNN_BATCHNORM, 0.6347, "validation",
                      "cifar10/cnn-dropout with BatchNorm before each Dropout"))
register(report_entry("cifar10/vgg16-features", ["Flatten", "Dense: 512, relu", "Dense: 10, softmax"], 0.5533,
                      "validation", "Frozen VGG16 (ImageNet) features of the 32x32 images (1x1x512, so pooling is "
                      "flattening) with a new 512-unit head (14,982,474 parameters)",
                      backbone={"backbone": "vgg16", "trainable": "none", "input_size": 32}))
