"""Models: the reports' layer notation, a shape-checked builder, a Keras-style summary and the zoo."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from cnnlab.errors import ConfigError
from cnnlab.models.build import SOFTMAX_NOTE, BuiltModel, build_model
from cnnlab.models.layers import LayerSpec, parse_layers
from cnnlab.models.summary import SummaryRow, count_parameters, format_summary

__all__ = [
    "BuiltModel", "LayerSpec", "SOFTMAX_NOTE", "SummaryRow", "build_model", "count_parameters", "create_model",
    "format_summary", "parse_layers",
]


def create_model(model_config: str | Mapping[str, Any], input_shape: Sequence[int], n_classes: int) -> BuiltModel:
    """Build a zoo model by name, or a model from `{layers: [...]}` or `{name: zoo-name}`.

    Raises ConfigError for an unknown or not-yet-available zoo name, or a config with
    neither or both of `name` and `layers`."""
    from cnnlab.models import zoo  # the zoo registers every entry on import

    if isinstance(model_config, str):
        model_config = {"name": model_config}
    if not isinstance(model_config, Mapping):
        raise ConfigError(f"model must be a zoo name or a mapping with layers: or name:, not {model_config!r}.")
    name, layers = model_config.get("name"), model_config.get("layers")
    if (name is None) == (layers is None):
        raise ConfigError("model must give either a zoo name (model: NAME) or a layer list "
                          "(model: {layers: [...]}), not both or neither.")
    if layers is not None:
        return build_model(layers, input_shape, n_classes)
    entry = zoo.get_entry(name)
    if not entry.available:
        raise ConfigError(f'Zoo model "{entry.name}" is known but not available yet: {entry.unavailable_reason}. '
                          "Run `cnnlab models` to see the models you can train now.")
    return build_model(entry.layers, input_shape, n_classes, name=entry.name)
