"""Reports 000/002, "DLCV Lab 4": its Keras part and its PyTorch part, on MNIST and CIFAR-10.

Recipe as the report states it: 20 epochs (100 for keras/cifar10/model10 and torch/cifar10/praisynet),
batch 32. It names no optimizer: Adam at lr 1e-3 (the Keras default) is assumed for both parts.
Layers are written as the report lists them; Keras names (`Conv2D`, `Dense`) get a ReLU after each
layer but the last, PyTorch names (`Conv2d`, `Linear`) only where the report lists a `ReLU`."""

from __future__ import annotations

from typing import Any

from cnnlab.models.zoo.registry import KERAS_BATCH_NORM, ZooEntry, make_recipe, register

TITLE = 'reports 000/002, "DLCV Lab 4"'
KERAS_SOURCE = "report 000, Keras part"
TORCH_SOURCE = "report 000, PyTorch part"
KERAS_ASSUMED = "batch 32; optimizer not stated, Keras defaults assumed (Adam lr 1e-3, ReLU after each Conv2D)"
TORCH_ASSUMED = "batch 32; optimizer not stated, Adam lr 1e-3 assumed; no ReLU where the report lists none"
SHIFT_FLIP = {"horizontal_flip": True, "width_shift_range": 0.1, "height_shift_range": 0.1}
PRAISYNET_AUGMENT = {"random_affine": {"degrees": 0, "scale": [0.2, 1.2], "shear": 10},
                     "horizontal_flip": True, "rotation_range": 10}


def keras_conv(filters: int, kernel: int) -> str:
    """A Keras Conv2D layer as the report writes it: stride 1, no padding."""
    return f"Conv2D: {filters}, {kernel}, 1, 'valid'"


def torch_conv(filters: int, kernel: int) -> str:
    """A PyTorch Conv2d layer as the report writes it: stride 1, no padding."""
    return f"Conv2d: {filters}, {kernel}, 1, 0"


KERAS_MODEL1 = [keras_conv(32, 3), "Flatten", "Dense: 10, 'softmax'"]
KERAS_MODEL5 = [keras_conv(64, 5), keras_conv(128, 5), KERAS_BATCH_NORM, "MaxPooling: 2, 2, 'valid'",
                keras_conv(256, 5), "Flatten", "Dense: 10, 'softmax'"]
KERAS_MODEL7 = [keras_conv(64, 5), keras_conv(64, 5), "MaxPooling: 2, 2, 'valid'", KERAS_BATCH_NORM,
                keras_conv(128, 5), keras_conv(128, 5), "MaxPooling: 2, 2, 'valid'", KERAS_BATCH_NORM,
                "Flatten", "Dense: 128, 'relu'", "Dense: 10, 'softmax'"]
TORCH_MODEL1 = [torch_conv(32, 3), "Flatten", "Linear: 10"]
TORCH_MODEL3_BLOCK = [torch_conv(64, 3), torch_conv(32, 3), "Dropout", "ReLU", "MaxPool2d: 2, 1, 0"]
TORCH_MODEL3 = [*TORCH_MODEL3_BLOCK, torch_conv(16, 3), "Flatten", "Linear: 10"]
PRAISNET = [torch_conv(64, 5), torch_conv(64, 5), "MaxPool2d: 2, 2, 0", "BatchNorm2d",
            torch_conv(128, 5), torch_conv(128, 5), "MaxPool2d: 2, 2, 0", "BatchNorm2d",
            "Flatten", "Linear: 128", "ReLU", "Linear: 10"]


def keras_entry(name: str, dataset: str, layers: list[str], accuracy: float, time_s: float, description: str,
                epochs: int = 20, augment: dict[str, Any] | None = None, **fields: Any) -> ZooEntry:
    """An entry of the report's Keras part, with its recipe and its stated assumptions."""
    return ZooEntry(name=name, dataset=dataset, layers=layers, recipe=make_recipe(epochs, augment=augment),
                    description=f"{description}. {KERAS_ASSUMED}.", source=KERAS_SOURCE, reported_accuracy=accuracy,
                    reported_time_s=time_s, **fields)


def torch_entry(name: str, dataset: str, layers: list[str], accuracy: float, time_s: float, description: str,
                epochs: int = 20, augment: dict[str, Any] | None = None, **fields: Any) -> ZooEntry:
    """An entry of the report's PyTorch part, with its recipe and its stated assumptions."""
    return ZooEntry(name=name, dataset=dataset, layers=layers, recipe=make_recipe(epochs, augment=augment),
                    description=f"{description}. {TORCH_ASSUMED}.", source=TORCH_SOURCE,
                    reported_accuracy=accuracy, reported_time_s=time_s, **fields)


# --------------------------------------------------------------------------- Keras, MNIST

# The previous lab's best multilayer perceptron, the baseline both Keras comparisons (sections 1.3)
# quote: "best lab3.3". Neither report 000 nor 002 gives its layers or recipe; cnnlab's own `mlp`
# baseline (512 and 256 ReLU units, dropout 0.2) with this report's Keras recipe is assumed.
MLP = ["Flatten", "Dense: 512, relu", "Dropout: 0.2", "Dense: 256, relu", "Dense: 10, 'softmax'"]
MLP_ASSUMED = ("the layers are not in the report (only its figures): 512 and 256 ReLU units with dropout 0.2 "
               "assumed, as cnnlab's mlp baseline")
register(keras_entry("keras/mnist/mlp", "mnist", MLP, 0.9759, 42.64,
                     f"Best multilayer perceptron of the previous lab (lab 3.3), the report's baseline; {MLP_ASSUMED}"))
register(keras_entry("keras/cifar10/mlp", "cifar10", MLP, 0.4450, 46.06,
                     f"Best multilayer perceptron of the previous lab (lab 3.3) on CIFAR-10, the report's baseline; "
                     f"{MLP_ASSUMED}"))
register(keras_entry("keras/mnist/model1", "mnist", KERAS_MODEL1, 0.9196, 46.96,
                     "First CNN: one 3x3 convolution and a softmax layer (report 002 re-run: 92.43%)"))
register(keras_entry("keras/mnist/model2", "mnist",
                     [keras_conv(32, 3), keras_conv(64, 3), "MaxPooling: 2, 1, 'valid'", keras_conv(128, 3),
                      "Flatten", "Dense: 10, 'softmax'"], 0.9781, 144.61,
                     "Three 3x3 convolutions with a stride-1 max-pool, the architecture given in class"))
register(keras_entry("keras/mnist/model3", "mnist",
                     [keras_conv(32, 5), keras_conv(64, 5), KERAS_BATCH_NORM, "MaxPooling: 2, 1, 'valid'",
                      keras_conv(128, 5), "Flatten", "Dense: 10, 'softmax'"], 0.9812, 143.87,
                     "5x5 convolutions with batch normalization and a stride-1 max-pool"))
register(keras_entry("keras/mnist/model4", "mnist",
                     [keras_conv(32, 5), keras_conv(64, 5), KERAS_BATCH_NORM, "MaxPooling: 2, 2, 'valid'",
                      keras_conv(128, 5), "Flatten", "Dense: 10, 'softmax'"], 0.9813, 113.17,
                     "model3 with a stride-2 max-pool: as accurate and faster, the report's pick"))
register(keras_entry("keras/mnist/model5", "mnist", KERAS_MODEL5, 0.9804, 211.00,
                     "model4 with twice the filters (64, 128, 256)"))

# --------------------------------------------------------------------------- Keras, CIFAR-10

register(keras_entry("keras/cifar10/model1", "cifar10", KERAS_MODEL1, 0.3335, 53.39,
                     "keras/mnist/model1 on CIFAR-10"))
register(keras_entry("keras/cifar10/model5", "cifar10", KERAS_MODEL5, 0.5596, 200.59,
                     "keras/mnist/model5 on CIFAR-10"))
register(keras_entry("keras/cifar10/model6", "cifar10",
                     [keras_conv(64, 5), "MaxPooling: 2, 2, 'valid'", KERAS_BATCH_NORM, keras_conv(128, 5),
                      "MaxPooling: 2, 2, 'valid'", KERAS_BATCH_NORM, "Flatten", "Dense: 128, 'relu'",
                      "Dense: 10, 'softmax'"], 0.6378, 95.43,
                     "Two conv/pool/batch-norm stages and a 128-unit hidden layer"))
register(keras_entry("keras/cifar10/model7", "cifar10", KERAS_MODEL7, 0.6857, 158.78,
                     "Two stages of two 5x5 convolutions, max-pool and batch norm, 128-unit hidden layer"))
register(keras_entry("keras/cifar10/model8", "cifar10", KERAS_MODEL7, 0.6978, 340.25,
                     "model7 with augmentation: flips, shifts 0.1, rotation 10, zoom 0.2",
                     augment={**SHIFT_FLIP, "rotation_range": 10, "zoom_range": 0.2}))
register(keras_entry("keras/cifar10/model9", "cifar10", KERAS_MODEL7, 0.7208, 323.14,
                     "model7 with augmentation: horizontal flips and shifts of 0.1", augment=dict(SHIFT_FLIP)))
register(keras_entry("keras/cifar10/model10", "cifar10", KERAS_MODEL7, 0.7633, 1557.88,
                     "model9 trained for 100 epochs (the report's model9bis)", epochs=100, augment=dict(SHIFT_FLIP)))
# ResNet50 fine-tuned whole at the recipe's one learning rate, on the 32x32 images as given (ImageNet
# mean/std input, batch-norm statistics updated as Keras does for trainable layers).
RESNET50_ALL = {"backbone": "resnet50", "trainable": "all", "input_size": 32, "batchnorm": "train",
                "backbone_lr_factor": 1.0}
register(keras_entry("keras/cifar10/resnet50", "cifar10", ["Dense: 10, 'softmax'"], 0.7363, 1153.49,
                     "ResNet50 with ImageNet weights (global average pooling), a new 10-class head, all layers "
                     "trained on 32x32 inputs", backbone=RESNET50_ALL))
register(keras_entry("keras/cifar10/resnet50-da", "cifar10", ["Dense: 10, 'softmax'"], 0.7615, 1172.44,
                     "keras/cifar10/resnet50 with model9's augmentation", augment=dict(SHIFT_FLIP),
                     backbone=RESNET50_ALL))

# --------------------------------------------------------------------------- PyTorch, MNIST

register(torch_entry("torch/mnist/model1", "mnist", TORCH_MODEL1, 0.9174, 92.76,
                     "First CNN: one linear 3x3 convolution and a linear layer; softmax only inside the loss "
                     "(report 002 re-run: 93.21%)"))
register(torch_entry("torch/mnist/model2", "mnist",
                     [torch_conv(64, 3), torch_conv(32, 3), "MaxPool2d: 2, 1, 0", torch_conv(16, 3), "Flatten",
                      "Linear: 10"], 0.9720, 97.12,
                     "Three 3x3 convolutions without ReLU (the report lists none) and a stride-1 max-pool"))
register(torch_entry("torch/mnist/model3", "mnist", TORCH_MODEL3, 0.9855, 98.83,
                     "model2 with Dropout (PyTorch default 0.5) and one ReLU before the max-pool"))
# The MNIST section lists model4's layers only partly; its CIFAR-10 section says "This time, the model4,
# one of the best models we've tested, is used" and lists them whole: model3 with a 128-unit ReLU layer.
register(torch_entry("torch/mnist/model4", "mnist",
                     [*TORCH_MODEL3_BLOCK, torch_conv(16, 3), "Flatten", "Linear: 128", "ReLU", "Linear: 10"],
                     0.9876, 103.71,
                     "model3 with a 128-unit ReLU hidden layer: the report's MNIST table is cut, its CIFAR-10 "
                     "section reuses 'the model4' with these layers"))

# --------------------------------------------------------------------------- PyTorch, CIFAR-10

register(torch_entry("torch/cifar10/model1", "cifar10", TORCH_MODEL1, 0.3053, 100.20,
                     "torch/mnist/model1 on CIFAR-10"))
register(torch_entry("torch/cifar10/model4", "cifar10",
                     [*TORCH_MODEL3_BLOCK, torch_conv(16, 3), "Flatten", "Linear: 128", "ReLU", "Linear: 10"],
                     0.6751, 107.47, "torch/mnist/model3 with a 128-unit ReLU hidden layer"))
register(torch_entry("torch/cifar10/model5", "cifar10",
                     [*TORCH_MODEL3_BLOCK, *TORCH_MODEL3_BLOCK, torch_conv(16, 3), "Flatten",
                      "Linear: 128", "ReLU", "Linear: 256", "ReLU", "Linear: 10"], 0.7011, 134.46,
                     "model4 with the conv/dropout/ReLU/pool block twice and hidden layers of 128 and 256 "
                     "(ReLU after both, as report 000 lists 'relu')"))
register(torch_entry("torch/cifar10/praisnet", "cifar10", PRAISNET, 0.6980, 160.63,
                     "PraisNet: two stages of two linear 5x5 convolutions, max-pool and batch norm, "
                     "a 128-unit ReLU layer (the Keras model7 in PyTorch)"))
register(torch_entry("torch/cifar10/praisynet", "cifar10", PRAISNET, 0.7718, 899.34,
                     "PraisNet with augmentation (RandomAffine scale 0.2-1.2 shear 10, flips, rotation 10), "
                     "100 epochs", epochs=100, augment=PRAISYNET_AUGMENT))
register(torch_entry("torch/cifar10/resnet50", "cifar10", ["Linear: 10"], 0.8243, 1076.82,
                     "ResNet50 with ImageNet weights, fine-tuned with a new 10-class layer (32x32 inputs assumed)",
                     backbone=RESNET50_ALL))
register(torch_entry("torch/cifar10/resnet50-da", "cifar10", ["Linear: 10"], 0.8067, 1079.93,
                     "torch/cifar10/resnet50 with augmentation (PraisyNet's assumed)", augment=PRAISYNET_AUGMENT,
                     backbone=RESNET50_ALL))
