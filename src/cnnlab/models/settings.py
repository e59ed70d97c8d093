"""The model stage's config section (`model:`): a zoo name, a layer list or a pretrained backbone
with its transfer settings."""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from cnnlab.errors import ConfigError, StrictModel
from cnnlab.models.pretrained import check_backbone_name

MAX_LAYERS = 1000  # layers in a list (the deepest zoo network has a few dozen)
MAX_NAME_CHARACTERS = 200
MAX_BLOCKS = 1000  # backbone blocks to train or keep: more than any backbone has
TRANSFER_KEYS = ("weights", "head", "input_size", "trainable", "batchnorm", "backbone_lr_factor", "truncate_blocks",
                 "cache_features")


class ModelSection(StrictModel):
    """`model:` exactly one of a zoo name, a layer list or a pretrained backbone (docs/transfer.md)."""

    name: Optional[str] = Field(default=None, max_length=MAX_NAME_CHARACTERS)
    layers: Optional[list[Union[str, dict[str, Any]]]] = Field(default=None, max_length=MAX_LAYERS)
    # a pretrained backbone and a new head (docs/transfer.md); these keys also refine a zoo entry that has one
    backbone: Optional[str] = Field(default=None, max_length=MAX_NAME_CHARACTERS, description="efficientnet-lite0, resnet50, vgg16, ..., timm:NAME")
    weights: Optional[str] = Field(default=None, max_length=4096, description="local .pth/.safetensors file (default: usual places)")
    head: Optional[list[Union[str, dict[str, Any]]]] = Field(default=None, max_length=MAX_LAYERS, description='layers after the backbone '
                                                                                      '(default ["Dense: classes"])')
    input_size: Optional[int] = Field(default=None, ge=8, le=1024, description="pixels a side (default: backbone's)")
    trainable: Union[Literal["none", "all"], int] = Field(default="none", description="none, all or last N blocks")
    batchnorm: Literal["frozen", "train"] = "frozen"
    backbone_lr_factor: float = Field(default=0.1, gt=0, le=10, description="backbone lr = factor x optimizer.lr")
    truncate_blocks: Optional[int] = Field(default=None, ge=1, le=MAX_BLOCKS, description="keep only the first k backbone blocks")
    cache_features: bool = Field(default=True, description="frozen backbone, no augmentation: compute features once")

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, value: Any) -> Any:
        if value is not None:
            try:
                check_backbone_name(value)
            except ConfigError as error:
                raise ValueError(str(error)) from None
        return value

    @field_validator("trainable")
    @classmethod
    def _non_negative(cls, value: Any) -> Any:
        if isinstance(value, int) and not 0 <= value <= MAX_BLOCKS:
            raise ValueError(f"trainable is none, all or the number (0 to {MAX_BLOCKS}) of last backbone blocks to "
                             "train")
        return value

    @model_validator(mode="after")
    def _one_of(self) -> "ModelSection":
        if sum(part is not None for part in (self.name, self.layers, self.backbone)) != 1:
            raise ValueError("give one of a zoo name (model: NAME), a layer list (model: {layers: [...]}) or a "
                             "pretrained backbone (model: {backbone: efficientnet-lite0})")
        set_keys = [key for key in TRANSFER_KEYS if key in self.model_fields_set]
        if self.layers is not None and set_keys:
            raise ValueError(f"{', '.join(set_keys)} only apply to a pretrained backbone (model.backbone), not to a "
                             "layer list")
        return self

    def to_dict(self) -> dict[str, Any]:
        """The section as saved with a run: a name or layers, or the backbone with all its settings."""
        data = self.model_dump(mode="json")
        if self.backbone is not None:
            return {"backbone": self.backbone, **{key: data[key] for key in TRANSFER_KEYS}}
        if self.layers is not None:
            return {"layers": data["layers"]}
        return {"name": self.name, **{key: data[key] for key in TRANSFER_KEYS if key in self.model_fields_set}}
