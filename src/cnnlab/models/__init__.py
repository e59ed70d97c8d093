"""Models: the reports' layer notation, a shape-checked builder, a Keras-style summary and the zoo."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from cnnlab.errors import ConfigError
from cnnlab.models import zoo  # importing the zoo registers every entry
from cnnlab.models.build import SOFTMAX_NOTE, BuiltModel, build_model
from cnnlab.models.layers import LayerSpec, parse_layers
from cnnlab.models.summary import SummaryRow, count_parameters, format_summary
from cnnlab.models.transfer_model import TransferModel, build_transfer_model

__all__ = [
    "BuiltModel", "LayerSpec", "SOFTMAX_NOTE", "SummaryRow", "build_model", "count_parameters", "create_model",
    "format_summary", "parse_layers", "TransferModel", "build_transfer_model",
]


def create_model(model_config: str | Mapping[str, Any], input_shape: Sequence[int], n_classes: int) -> BuiltModel:
    """Build a zoo model by name, or a model from `{layers: [...]}`, `{name: zoo-name}` or
    `{backbone: NAME, head: [...], ...}` (a `TransferModel` with `.backbone` and `.head`).

    Raises ConfigError for an unknown zoo name, or a config with
    neither or both of `name` and `layers`."""
    if isinstance(model_config, str):
        model_config = {"name": model_config}
    if not isinstance(model_config, Mapping):
        raise ConfigError(f"model must be a zoo name or a mapping with layers: or name:, not {model_config!r}.")
    name, layers, backbone = model_config.get("name"), model_config.get("layers"), model_config.get("backbone")
    if sum(part is not None for part in (name, layers, backbone)) != 1:
        raise ConfigError("model must give one of a zoo name (model: NAME), a layer list (model: {layers: [...]}) "
                          "or a pretrained backbone (model: {backbone: NAME}), not both or neither.")
    if backbone is not None:
        return build_transfer_model(model_config, input_shape, n_classes)
    if layers is not None:
        return build_model(layers, input_shape, n_classes)
    entry = zoo.get_entry(name)
    if entry.backbone is not None:
        # the entry's backbone settings, refined by the config's own (model.weights=PATH, input_size, ...)
        refinements = {key: value for key, value in model_config.items() if key != "name" and value is not None}
        settings = {**entry.backbone, "head": entry.layers, **refinements}
        return build_transfer_model(settings, input_shape, n_classes, name=entry.name)
    return build_model(entry.layers, input_shape, n_classes, name=entry.name)
