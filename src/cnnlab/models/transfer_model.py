"""A pretrained backbone with a new head: input handling (resize, grey to RGB), freezing,
partial fine-tuning, frozen batch-norm statistics and per-group learning-rate factors.

    model = TransferModel(backbone, head, ...)   # model.backbone: BackboneFeatures, model.head: nn.Sequential
    logits = model(images)                       # images normalised with model.mean/std, any size
    features = model.features(images)            # (N, feature_dim), what the head sees"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.models.build import BuiltModel, build_model
from cnnlab.models.layers import parse_layers
from cnnlab.models.pretrained import Backbone, BackboneFeatures, load_backbone
from cnnlab.models.summary import SummaryRow, count_parameters

DEFAULT_HEAD = ["Dense: classes"]
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
Trainable = Union[str, int]  # "none", "all" or the number of last backbone blocks to train


class TransferModel(nn.Module):
    """``head(backbone(prepare(images)))``.

    ``backbone`` (a `BackboneFeatures`, stages in ``backbone.blocks``)
    maps (N, 3, input_size, input_size) images to (N, feature_dim) features; ``head`` (an
    ``nn.Sequential`` built from the layer notation) maps features shaped (N, feature_dim, 1, 1)
    to logits. ``mean``/``std`` are the normalisation the backbone expects of its inputs."""

    def __init__(self, backbone: BackboneFeatures, head: nn.Module, *, name: str, input_size: int, mean: Sequence[float],
                 std: Sequence[float], in_channels: int, feature_dim: int, trainable: Trainable = "none",
                 batchnorm: str = "frozen", backbone_lr_factor: float = 0.1, weights_source: str = "",
                 weights_path: Path | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.backbone_name = name
        self.input_size = input_size
        self.mean, self.std = tuple(mean), tuple(std)
        self.in_channels = in_channels
        self.feature_dim = feature_dim
        self.trainable = trainable
        self.batchnorm = batchnorm
        self.backbone_lr_factor = backbone_lr_factor
        self.weights_source = weights_source
        self.weights_path = weights_path
        self._freeze()

    # ----------------------------------------------------------------- forward

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Grey images to three channels (renormalised exactly per channel) and resize to input_size,
        on the images' device, for the whole batch at once."""
        if images.shape[1] == 1:
            mean = torch.tensor(self.mean, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
            std = torch.tensor(self.std, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
            # the data pipeline normalised the grey channel with the channel-average mean/std
            pixels = images * std.mean() + mean.mean()
            images = (pixels.expand(-1, 3, -1, -1) - mean) / std
        if images.shape[-2:] != (self.input_size, self.input_size):
            images = F.interpolate(images, size=(self.input_size, self.input_size), mode="bilinear",
                                   align_corners=False)
        return images

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone features (N, feature_dim) of normalised images of any size."""
        return self.backbone(self.prepare(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.features(images)
        return self.head(features.view(features.shape[0], -1, 1, 1))

    # ----------------------------------------------------------------- training modes

    @property
    def frozen(self) -> bool:
        """True when no backbone weight trains: its features are a fixed function of the image."""
        return not any(parameter.requires_grad for parameter in self.backbone.parameters())

    def train(self, mode: bool = True) -> "TransferModel":
        super().train(mode)
        if not mode:
            return self
        for block in self.backbone.blocks:
            # frozen blocks run as at inference (their statistics and dropout too);
            # batchnorm "frozen" keeps the ImageNet statistics in the trained blocks as well
            if not any(parameter.requires_grad for parameter in block.parameters()):
                block.eval()
            elif self.batchnorm == "frozen":
                for module in block.modules():
                    if isinstance(module, BATCH_NORMS):
                        module.eval()
        return self

    def lr_groups(self) -> list[tuple[list[nn.Parameter], float]]:
        """(parameters, factor of optimizer.lr) for the trainable parts: backbone, then head."""
        backbone = [parameter for parameter in self.backbone.parameters() if parameter.requires_grad]
        head = [parameter for parameter in self.head.parameters() if parameter.requires_grad]
        return [(backbone, self.backbone_lr_factor), (head, 1.0)]

    def _freeze(self) -> None:
        blocks = list(self.backbone.blocks)
        if self.trainable == "all":
            trained = len(blocks)
        elif self.trainable == "none":
            trained = 0
        else:
            trained = int(self.trainable)
            if not 0 <= trained <= len(blocks):
                raise ConfigError(f"model.trainable is {trained}, but the {self.backbone_name} backbone has "
                                  f"{len(blocks)} blocks: give none, all or a number from 0 to {len(blocks)}.")
        for index, block in enumerate(blocks):
            for parameter in block.parameters():
                parameter.requires_grad_(index >= len(blocks) - trained)


# --------------------------------------------------------------------------- building

def build_transfer_model(settings: Mapping[str, Any], input_shape: Sequence[int], n_classes: int,
                         name: str = "") -> BuiltModel:
    """A `BuiltModel` whose module is a `TransferModel`, from a model section with ``backbone``.

    Reads backbone, weights, head, input_size, trainable, batchnorm, backbone_lr_factor and
    truncate_blocks; raises ConfigError when the weights cannot be found."""
    channels = int(input_shape[0])
    check_channels(channels)
    backbone = load_backbone(settings["backbone"], settings.get("weights"), settings.get("truncate_blocks"))
    input_size = int(settings.get("input_size") or backbone.input_size)
    head_layers = list(settings.get("head") or DEFAULT_HEAD)
    specs = parse_layers(head_layers)
    if specs[0].kind not in ("flatten", "global_avg_pool") and not any(spec.kind == "conv" for spec in specs):
        specs = parse_layers(["Flatten"]) + specs  # features reach the head as (N, D, 1, 1)
    head = build_model(specs, (backbone.feature_dim, 1, 1), n_classes)
    model = TransferModel(backbone.module, head.module, name=backbone.name, input_size=input_size,
                          mean=backbone.mean, std=backbone.std, in_channels=channels,
                          feature_dim=backbone.feature_dim, trainable=settings.get("trainable", "none"),
                          batchnorm=settings.get("batchnorm", "frozen"),
                          backbone_lr_factor=float(settings.get("backbone_lr_factor", 0.1)),
                          weights_source=backbone.weights_source, weights_path=backbone.weights_path)
    trainable, frozen = count_parameters(model.backbone)
    blocks = len(model.backbone.blocks)
    row = SummaryRow("backbone", f"{backbone.name}, {blocks} blocks, input {input_size}px",
                     (backbone.feature_dim,), trainable + frozen, trainable, ("backbone",))
    head_rows = [SummaryRow(r.name, r.type, r.output_shape, r.params, r.trainable,
                            tuple(f"head.{child}" for child in r.module_names)) for r in head.rows]
    notes = [f"Pretrained weights: {backbone.weights_source}.",
             f"Backbone trainable: {model.trainable} (batch norm {model.batchnorm}); inputs resized to "
             f"{input_size}x{input_size} inside the model and normalised with mean {list(backbone.mean)}, "
             f"std {list(backbone.std)}.", *head.notes]
    return BuiltModel(model, [row, *head_rows], notes, tuple(input_shape), n_classes, name or backbone.name,
                      head.layer_specs)


def frozen_backbone(backbone: Backbone, input_size: int, in_channels: int) -> TransferModel:
    """``backbone`` frozen, without a head, taking images of ``in_channels`` channels at ``input_size``:
    the feature extractor of `cnnlab features BACKBONE`, the same computation whose features a
    frozen-backbone training run caches (``model.features(images)``)."""
    check_channels(in_channels)
    return TransferModel(backbone.module, nn.Identity(), name=backbone.name, input_size=input_size,
                         mean=backbone.mean, std=backbone.std, in_channels=in_channels,
                         feature_dim=backbone.feature_dim, weights_source=backbone.weights_source,
                         weights_path=backbone.weights_path)


def check_channels(channels: int) -> None:
    """ConfigError unless images of ``channels`` channels can go into a pretrained backbone (RGB or grey)."""
    if channels not in (1, 3):
        raise ConfigError(f"A pretrained backbone takes RGB or grey images, but these have {channels} channels. "
                          "Use a dataset with 1 or 3 channels, or a model without a backbone.")


def transfer_settings(model: nn.Module) -> dict[str, Any]:
    """What a run records about its backbone (empty for other models)."""
    if not isinstance(model, TransferModel):
        return {}
    return {"backbone": model.backbone_name, "weights_source": model.weights_source, "input_size": model.input_size,
            "trainable": model.trainable, "batchnorm": model.batchnorm, "backbone_lr_factor": model.backbone_lr_factor,
            "backbone_blocks": len(model.backbone.blocks), "mean": list(model.mean), "std": list(model.std)}
