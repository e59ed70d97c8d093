"""cnnlab's transfer-learning recipes (no lab report): efficientnet-lite0 with ImageNet weights (the
`pretrained` extra), frozen with a new head or fine-tuned whole.

Recipes are for CIFAR-10; run them on the JPEG copy with `dataset=cifar10-jpeg`. Images are
resized to 224x224 inside the model, on the device, and normalised with the backbone's mean/std."""

from __future__ import annotations

from cnnlab.models.zoo.registry import ZooEntry, make_recipe, register

TITLE = "cnnlab's transfer learning from a pretrained ImageNet backbone (no lab report)"
SOURCE = "cnnlab transfer learning"
FLIP_SHIFT = {"horizontal_flip": True, "width_shift_range": 0.1, "height_shift_range": 0.1}

register(ZooEntry(
    name="transfer/efficientnet-lite0-linear", dataset="cifar10", layers=["Dense: classes"],
    backbone={"backbone": "efficientnet-lite0", "trainable": "none", "input_size": 224},
    recipe=make_recipe(30, batch_size=256, optimizer={"name": "adamw", "lr": 1e-3, "weight_decay": 1e-4},
                       schedule={"name": "cosine"}),
    description="Frozen efficientnet-lite0 (ImageNet) features of 224x224 upscaled images, computed once and "
                "cached, with a linear classifier: AdamW lr 1e-3, weight decay 1e-4, cosine, batch 256, 30 epochs",
    source=SOURCE))

register(ZooEntry(
    name="transfer/efficientnet-lite0-mlp", dataset="cifar10",
    layers=["Dense: 256, relu", "BatchNorm", "Dropout: 0.3", "Dense: classes"],
    backbone={"backbone": "efficientnet-lite0", "trainable": "none", "input_size": 224},
    recipe=make_recipe(30, batch_size=256, optimizer={"name": "adamw", "lr": 1e-3, "weight_decay": 1e-4},
                       schedule={"name": "cosine"}),
    description="transfer/efficientnet-lite0-linear with the reports' kind of head: Dense 256 relu, batch norm, "
                "dropout 0.3 (features cached)",
    source=SOURCE))

register(ZooEntry(
    name="transfer/efficientnet-lite0-finetune", dataset="cifar10", layers=["Dropout: 0.2", "Dense: classes"],
    backbone={"backbone": "efficientnet-lite0", "trainable": "all", "input_size": 224, "batchnorm": "frozen",
              "backbone_lr_factor": 0.1},
    recipe=make_recipe(10, batch_size=64, optimizer={"name": "adamw", "lr": 1e-3, "weight_decay": 0.01},
                       schedule={"name": "cosine", "warmup_epochs": 1}, augment=FLIP_SHIFT),
    description="efficientnet-lite0 (ImageNet) fine-tuned whole at 224x224: backbone lr 0.1 x the head's "
                "(AdamW 1e-3, weight decay 0.01), 1 warm-up epoch then cosine, batch 64, flips and shifts of 0.1, "
                "batch-norm statistics kept at ImageNet's (updating them cost 15-26 points of accuracy after "
                "one epoch on a 9,000-image sample, docs/transfer.md); 10 epochs",
    source=SOURCE))
