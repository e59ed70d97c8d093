"""Layer specs: the reports' notation ("Conv2D: 32, 3, 1, 'valid'") or YAML mappings, parsed and checked.

Parsing knows nothing about shapes; `cnnlab.models.build` turns the specs into modules.
Keras names (Conv2D, Dense) default to ReLU, as in the reports' Keras code, except the
last Dense, which outputs logits; PyTorch names (Conv2d, Linear) default to no activation.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

from cnnlab.errors import ConfigError, did_you_mean, short_repr, shorten

ACTIVATIONS = ("relu", "none", "softmax", "tanh", "sigmoid", "elu", "gelu", "leaky_relu")
# Lower-case name without "_" or "-" -> activation.
ACTIVATION_NAMES = {**{name.replace("_", ""): name for name in ACTIVATIONS}, "linear": "none", "identity": "none"}
CLASSES_WORDS = ("classes", "n_classes", "num_classes")
MAX_WIDTH = 65_536  # filters of a convolution or units of a Dense layer (the widest zoo layer has 4,096)
MAX_WINDOW = 4_096  # kernel, pool, stride and padding in pixels: the largest image cnnlab resizes to

# Every accepted spelling of a layer type -> kind of layer. Matching ignores case, "_", "-" and spaces.
LAYER_NAMES = {
    "Conv2D": "conv", "Conv": "conv", "Convolution2D": "conv",
    "MaxPooling": "max_pool", "MaxPool": "max_pool", "MaxPooling2D": "max_pool", "MaxPool2d": "max_pool",
    "AvgPool": "avg_pool", "AvgPooling": "avg_pool", "AvgPool2d": "avg_pool", "AvgPooling2D": "avg_pool",
    "AveragePooling": "avg_pool", "AveragePooling2D": "avg_pool",
    "GlobalAvgPool": "global_avg_pool", "GlobalAvgPool2d": "global_avg_pool",
    "GlobalAveragePooling": "global_avg_pool", "GlobalAveragePooling2D": "global_avg_pool",
    "BatchNorm": "batch_norm", "BatchNormalization": "batch_norm", "BatchNorm2d": "batch_norm",
    "BatchNorm1d": "batch_norm", "BN": "batch_norm",
    "Dropout": "dropout", "Flatten": "flatten", "Dense": "dense", "Linear": "dense", "Activation": "activation",
    "ReLU": "relu", "Tanh": "tanh", "Sigmoid": "sigmoid", "ELU": "elu", "GELU": "gelu",
    "LeakyReLU": "leaky_relu", "Softmax": "softmax",
    "Whiten": "whiten", "PatchWhitening": "whiten", "Scale": "scale", "Multiply": "scale",
}


def _squash(name: str) -> str:
    return re.sub(r"[\s_\-]", "", name.lower())


LAYER_KINDS = {_squash(name): kind for name, kind in LAYER_NAMES.items()}
PRETTY_NAMES = {_squash(name): name for name in reversed(list(LAYER_NAMES))}

# Exact PyTorch class names: these layers follow PyTorch's defaults (no implicit activation).
# Any other spelling of a convolution ("Conv2D", "conv2d") is read as Keras.
TORCH_NAMES = {"Conv2d", "Linear", "MaxPool2d", "AvgPool2d", "BatchNorm2d", "BatchNorm1d"}
KERAS_DISPLAY_NAMES = {
    "conv": "Conv2D", "max_pool": "MaxPooling2D", "avg_pool": "AveragePooling2D",
    "global_avg_pool": "GlobalAveragePooling2D", "batch_norm": "BatchNormalization",
    "dropout": "Dropout", "flatten": "Flatten", "dense": "Dense", "activation": "Activation",
    "whiten": "PatchWhitening", "scale": "Scale",
}
# BatchNorm becomes BatchNorm2d or BatchNorm1d once the incoming shape is known.
TORCH_DISPLAY_NAMES = {"conv": "Conv2d", "max_pool": "MaxPool2d", "avg_pool": "AvgPool2d",
                       "batch_norm": "BatchNorm", "dense": "Linear"}
ACTIVATION_LAYER_NAMES = {"relu": "ReLU", "tanh": "Tanh", "sigmoid": "Sigmoid", "elu": "ELU", "gelu": "GELU",
                          "leaky_relu": "LeakyReLU", "softmax": "Softmax", "none": "Identity"}

# Arguments each kind takes, in positional order, with the aliases accepted in mappings.
ARGUMENTS = {
    "conv": ("filters", "kernel", "stride", "padding", "activation"),
    "max_pool": ("pool", "stride", "padding"),
    "avg_pool": ("pool", "stride", "padding"),
    "global_avg_pool": (),
    "batch_norm": ("momentum", "epsilon"),
    "dropout": ("rate",),
    "flatten": (),
    "dense": ("units", "activation"),
    "activation": ("activation",),
    "whiten": ("kernel",),
    "scale": ("factor",),
}
REQUIRED = {"conv": ("filters", "kernel"), "max_pool": ("pool",), "avg_pool": ("pool",),
            "dense": ("units",), "activation": ("activation",), "whiten": ("kernel",), "scale": ("factor",)}
ARGUMENT_ALIASES = {
    "out": "filters", "out_channels": "filters", "kernel_size": "kernel", "strides": "stride",
    "pool_size": "pool", "size": "pool", "p": "rate", "out_features": "units", "name": "activation",
    "eps": "epsilon",
}
EXAMPLES = {
    "conv": '"Conv2D: 32, 3, 1, valid" (filters, kernel, stride, padding[, activation])',
    "max_pool": '"MaxPooling: 2, 2, valid" (pool, stride, padding)',
    "avg_pool": '"AvgPool: 2, 2, valid" (pool, stride, padding)',
    "batch_norm": '"BatchNorm: momentum=0.01, epsilon=0.001" (Keras\' constants; momentum as in PyTorch: the weight '
                  "of each new batch in the running statistics, so Keras' 0.99 is 0.01 here; defaults 0.1 and 1e-5)",
    "dropout": '"Dropout: 0.25"', "dense": '"Dense: 128, relu" (units[, activation])',
    "activation": '"Activation: relu"',
    "whiten": '"Whiten: 2" (patch size: a frozen convolution set from the training images\' patch covariance)',
    "scale": '"Scale: 0.125" (multiplies its input by a constant)',
}


@dataclass(frozen=True)
class LayerSpec:
    """One parsed layer. `options` holds its arguments under their canonical names."""

    kind: str  # conv, max_pool, avg_pool, global_avg_pool, batch_norm, dropout, flatten, dense, activation
    type_name: str  # the type as the summary shows it: Conv2D, Conv2d, Dense, Linear, ...
    style: str  # "keras" or "torch": decides the default activation
    position: int  # 1-based place in the layer list
    text: str  # the spec as written, for messages
    options: Mapping[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """'layer 3 "Conv2D: 64, 5"': how messages name this layer."""
        return f'layer {self.position} "{shorten(self.text)}"'


def parse_layers(specs: Sequence[str | Mapping[str, Any]]) -> list[LayerSpec]:
    """Parse a layer list (strings or mappings) and resolve each layer's activation.

    Raises ConfigError naming the layer for an unknown type, wrong arguments, or a
    softmax anywhere but at the very end of the network."""
    if isinstance(specs, (str, Mapping)) or not isinstance(specs, Sequence):
        raise ConfigError("The model's layers must be a list, e.g. [\"Flatten\", \"Dense: classes\"].")
    if not specs:
        raise ConfigError("The model has no layers. Give at least one, e.g. [\"Flatten\", \"Dense: classes\"].")
    parsed = [parse_layer(spec, position) for position, spec in enumerate(specs, start=1)]
    return _resolve_activations(parsed)


def parse_layer(spec: str | Mapping[str, Any], position: int) -> LayerSpec:
    """Parse one layer written as a string or a mapping; `position` is 1-based."""
    if isinstance(spec, str):
        type_name, positional, named = _split_string(spec, position)
        text = spec.strip()
    elif isinstance(spec, Mapping):
        type_name, positional, named = _split_mapping(spec, position)
        text = _mapping_text(spec)
    else:
        raise ConfigError(f"Layer {position} is a {type(spec).__name__} ({short_repr(spec)}); write it as a string "
                          'like "Conv2D: 32, 3" or a mapping like {type: Conv2D, filters: 32, kernel: 3}.')
    key = _squash(type_name)
    if key not in LAYER_KINDS:
        hint = re.sub(r'"(.*)"', lambda match: f'"{PRETTY_NAMES[match.group(1)]}"', did_you_mean(key, PRETTY_NAMES))
        raise ConfigError(f'Layer {position} "{shorten(text)}": unknown layer type "{shorten(type_name)}".'
                          f"{hint} Known types: Conv2D, Conv2d, MaxPooling, AvgPool, "
                          "GlobalAvgPool, BatchNorm, Dropout, Flatten, Dense, Linear, Activation, ReLU, Softmax, "
                          "Whiten, Scale.")
    kind = LAYER_KINDS[key]
    style = "torch" if type_name in TORCH_NAMES or key == "linear" else "keras"
    display = _display_name(kind, style)
    if kind in ACTIVATIONS:
        # A bare activation layer ("ReLU", "Softmax") is an Activation layer with its function preset.
        if positional or named:
            raise ConfigError(f'Layer {position} "{shorten(text)}": {type_name} takes no arguments.')
        kind, display, named = "activation", ACTIVATION_LAYER_NAMES[kind], {"activation": kind}
    bare = LayerSpec(kind, display, style, position, text)
    options = _bind_arguments(bare, positional, named)
    return replace(bare, options=_check_options(bare, options))


def _split_string(text: str, position: int) -> tuple[str, list[Any], dict[str, Any]]:
    cleaned = text.strip().rstrip(".").strip()
    match = re.fullmatch(r"([A-Za-z][A-Za-z0-9_\-]*)\s*(?::\s*(.*)|\s+(.*))?", cleaned, flags=re.DOTALL)
    if not match:
        raise ConfigError(f'Layer {position} "{shorten(text)}" cannot be read: write the type, a colon and the '
                          'arguments, e.g. "Conv2D: 32, 3, 1, valid" or "Dense: 10".')
    arguments_text = match.group(2) if match.group(2) is not None else (match.group(3) or "")
    positional: list[Any] = []
    named: dict[str, Any] = {}
    for piece in _argument_pieces(arguments_text):
        if "=" in piece:
            name, value = (part.strip() for part in piece.split("=", 1))
            named[name.lower()] = _string_value(value)
        elif named:
            raise ConfigError(f'Layer {position} "{shorten(text)}": positional argument "{shorten(piece)}" comes after '
                              "a named one.")
        else:
            positional.append(_string_value(piece))
    return match.group(1), positional, named


def _argument_pieces(arguments_text: str) -> list[str]:
    pieces = []
    for chunk in arguments_text.split(","):
        chunk = chunk.strip()
        pieces.extend([chunk] if "=" in chunk else chunk.split())
    return [piece for piece in pieces if piece]


def _string_value(text: str) -> Any:
    text = text.strip().strip("()").strip().strip("'\"")
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def _split_mapping(spec: Mapping[str, Any], position: int) -> tuple[str, list[Any], dict[str, Any]]:
    named = {str(key).lower(): value for key, value in spec.items()}
    type_name = named.pop("type", None)
    if not isinstance(type_name, str):
        raise ConfigError(f"Layer {position} {_mapping_text(spec)} has no \"type\" key: write e.g. "
                          "{type: Conv2D, filters: 32, kernel: 3}.")
    return type_name, [], named


def _mapping_text(spec: Mapping[str, Any]) -> str:
    return shorten("{" + ", ".join(f"{key}: {shorten(str(value))}" for key, value in spec.items()) + "}", 200)


def _display_name(kind: str, style: str) -> str:
    if style == "torch" and kind in TORCH_DISPLAY_NAMES:
        return TORCH_DISPLAY_NAMES[kind]
    return KERAS_DISPLAY_NAMES.get(kind, kind)


def _bind_arguments(spec: LayerSpec, positional: list[Any], named: dict[str, Any]) -> dict[str, Any]:
    accepted = ARGUMENTS[spec.kind]
    if len(positional) > len(accepted):
        takes = f"at most {len(accepted)} ({', '.join(accepted)})" if accepted else "no arguments"
        raise ConfigError(f"{_capital(spec.describe())}: {spec.type_name} takes {takes} but got "
                          f"{len(positional)}. Example: {EXAMPLES.get(spec.kind, spec.type_name)}.")
    options = dict(zip(accepted, positional))
    for name, value in named.items():
        canonical = ARGUMENT_ALIASES.get(name, name)
        if canonical not in accepted:
            valid = ", ".join(accepted) or "none"
            raise ConfigError(f'{_capital(spec.describe())}: {spec.type_name} has no argument "{shorten(name)}".'
                              f"{did_you_mean(name, list(accepted) + list(ARGUMENT_ALIASES))} Arguments: {valid}.")
        if canonical in options:
            raise ConfigError(f'{_capital(spec.describe())}: argument "{canonical}" is given twice.')
        options[canonical] = value
    missing = [name for name in REQUIRED.get(spec.kind, ()) if name not in options]
    if missing:
        raise ConfigError(f"{_capital(spec.describe())}: {spec.type_name} needs {', '.join(missing)}. "
                          f"Example: {EXAMPLES[spec.kind]}.")
    return options


def _check_options(spec: LayerSpec, options: dict[str, Any]) -> dict[str, Any]:
    checked: dict[str, Any] = {}
    for name, value in options.items():
        if name in ("filters", "kernel", "pool", "stride"):
            checked[name] = _positive_int(spec, name, value, MAX_WIDTH if name == "filters" else MAX_WINDOW)
        elif name == "units":
            is_classes = isinstance(value, str) and value.lower() in CLASSES_WORDS
            checked[name] = "classes" if is_classes else _positive_int(spec, name, value, MAX_WIDTH)
        elif name == "padding":
            checked[name] = _padding(spec, value)
        elif name == "rate":
            checked[name] = _rate(spec, value)
        elif name == "activation":
            checked[name] = _activation(spec, value)
        elif name in ("momentum", "epsilon"):
            checked[name] = _batch_norm_constant(spec, name, value)
        elif name == "factor":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ConfigError(f"{_capital(spec.describe())}: the factor must be a positive finite number, not "
                                  f"{short_repr(value)}.")
            checked[name] = float(value)
    if spec.kind == "dropout":
        checked.setdefault("rate", 0.5)
    if spec.kind in ("max_pool", "avg_pool"):
        checked.setdefault("stride", checked["pool"])
    if spec.kind in ("conv", "max_pool", "avg_pool"):
        checked.setdefault("stride", 1)
        checked.setdefault("padding", 0)
    return checked


def _positive_int(spec: LayerSpec, name: str, value: Any, maximum: int) -> int:
    if isinstance(value, (list, tuple)) and len(value) == 2 and value[0] == value[1]:
        value = value[0]  # a square (3, 3) kernel is the same as 3
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        hint = " (only square kernels and pools are supported)" if isinstance(value, (list, tuple)) else ""
        raise ConfigError(f"{_capital(spec.describe())}: {name} must be a whole number of at least 1 and at most {maximum:,}, "
                          f"not {short_repr(value)}{hint}.")
    return value


def _padding(spec: LayerSpec, value: Any) -> str | int:
    if isinstance(value, str) and value.lower() in ("valid", "same"):
        return 0 if value.lower() == "valid" else "same"
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_WINDOW:
        return value
    raise ConfigError(f"{_capital(spec.describe())}: padding must be 'valid', 'same' or a whole number "
                      f"of pixels (0 to {MAX_WINDOW:,}), not {short_repr(value)}.")


def _batch_norm_constant(spec: LayerSpec, name: str, value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1:
        return float(value)
    raise ConfigError(f"{_capital(spec.describe())}: the batch norm's {name} must be a number between 0 and 1, not "
                      f"{short_repr(value)}. Example: {EXAMPLES['batch_norm']}.")


def _rate(spec: LayerSpec, value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1:
        return float(value)
    raise ConfigError(f"{_capital(spec.describe())}: the dropout rate must be a number from 0 to below 1 "
                      f"(the fraction of units dropped), not {short_repr(value)}.")


def _activation(spec: LayerSpec, value: Any) -> str:
    key = _squash(str(value)) if value is not None else "none"
    if key not in ACTIVATION_NAMES:
        raise ConfigError(f'{_capital(spec.describe())}: unknown activation "{shorten(str(value))}".'
                          f"{did_you_mean(str(value).lower(), ACTIVATIONS)} Known: {', '.join(ACTIVATIONS)} "
                          "(linear is the same as none).")
    return ACTIVATION_NAMES[key]


def _resolve_activations(specs: list[LayerSpec]) -> list[LayerSpec]:
    """Fill in default activations and reject a softmax anywhere but at the very end."""
    dense_positions = [index for index, spec in enumerate(specs) if spec.kind == "dense"]
    last_dense = dense_positions[-1] if dense_positions else None
    resolved = []
    for index, spec in enumerate(specs):
        if spec.kind in ("conv", "dense") and "activation" not in spec.options:
            keras_default = spec.style == "keras" and index != last_dense
            spec = replace(spec, options={**spec.options, "activation": "relu" if keras_default else "none"})
        if spec.options.get("activation") == "softmax":
            _check_softmax_place(specs, index)
        resolved.append(spec)
    return resolved


def _check_softmax_place(specs: list[LayerSpec], index: int) -> None:
    spec = specs[index]
    is_last = index == len(specs) - 1
    doubled = is_last and spec.kind == "activation" and index > 0 and \
        specs[index - 1].options.get("activation") == "softmax"
    if is_last and not doubled:
        return
    where = "right after another softmax" if doubled else "before the end of the network"
    raise ConfigError(
        f"{_capital(spec.describe())}: a softmax {where} is a mistake. cnnlab trains on logits with "
        "CrossEntropyLoss, which applies log-softmax itself, so a final softmax is folded into the loss; a softmax "
        "inside the network squashes its features into probabilities and flattens the gradients (report 000's "
        "PyTorch model with a softmax before CrossEntropyLoss never predicted some classes). Remove it, or use "
        'another activation such as "relu".')


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]
