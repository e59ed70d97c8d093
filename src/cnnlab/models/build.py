"""Turn parsed layer specs into an `nn.Sequential` that outputs logits, inferring every shape analytically."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from torch import nn

from cnnlab.errors import ConfigError, ShapeError, require_memory
from cnnlab.models.layers import LayerSpec, parse_layers
from cnnlab.models.summary import SummaryRow, count_parameters
from cnnlab.models.whitening import PatchWhitening

SOFTMAX_NOTE = ("Final softmax folded into the loss: the network outputs logits, CrossEntropyLoss applies "
                "log-softmax, probabilities are softmax(logits).")
MAX_PARAMETERS = 1_000_000_000  # 4 GiB of float32 weights, 16 GiB while Adam trains them
MAX_VALUES_PER_IMAGE = 1 << 28  # one layer's output for one image: 1 GiB of float32
TRAINING_BYTES_PER_PARAMETER = 16  # float32 weight, gradient and Adam's two moments
Shape = tuple[int, ...]  # one example's shape, without the batch dimension: (C, H, W) or (features,)
Pads = tuple[int, int, int, int]  # left, right, top, bottom, as nn.ZeroPad2d takes them


@dataclass
class BuiltModel:
    """A built network: `module` maps (N, C, H, W) images to (N, n_classes) logits."""

    module: nn.Sequential
    rows: list[SummaryRow]
    notes: list[str]
    input_shape: tuple[int, int, int]
    n_classes: int
    name: str = ""
    layer_specs: list[LayerSpec] = field(default_factory=list)

    @property
    def parameter_counts(self) -> tuple[int, int]:
        """(trainable, non_trainable) counted like Keras."""
        return count_parameters(self.module)


def build_model(layers: Sequence[str | Mapping[str, Any] | LayerSpec], input_shape: Sequence[int],
                n_classes: int, name: str = "") -> BuiltModel:
    """Build the network for images shaped `input_shape` (C, H, W) and `n_classes` classes.

    Raises ShapeError naming the layer when a layer cannot take the shape that reaches it,
    and ConfigError when the network does not end in `n_classes` scores."""
    specs = _as_specs(layers)
    shape = _check_input_shape(input_shape)
    if n_classes < 2:
        raise ConfigError(f"A classifier needs at least 2 classes, not {n_classes}.")
    module, rows, notes = nn.Sequential(), [], []
    counters: dict[str, int] = {}
    total_parameters = 0
    for index, spec in enumerate(specs):
        if _is_final_softmax(specs, index):
            notes.append(SOFTMAX_NOTE)
            continue
        total_parameters += _estimate_parameters(spec, shape, n_classes)
        _check_parameters(spec, total_parameters)  # before the layer's weights are allocated
        built, shape, type_name = BUILDERS[spec.kind](spec, shape, n_classes)
        _check_output_size(spec, shape)
        if spec.kind in ("conv", "dense") and spec.options["activation"] == "softmax":
            notes.append(SOFTMAX_NOTE)
        layer_name = _unique_name(_base_name(spec), counters)
        children = [(layer_name if not suffix else f"{layer_name}_{suffix}", child) for suffix, child in built]
        for child_name, child in children:
            module.add_module(child_name, child)
        trainable, frozen = count_parameters(nn.ModuleList([child for _, child in children]))
        names = tuple(child_name for child_name, _ in children)
        rows.append(SummaryRow(layer_name, type_name, shape, trainable + frozen, trainable, names))
    _check_output(specs, shape, n_classes, notes)
    return BuiltModel(module, rows, notes, tuple(input_shape), n_classes, name, specs)


def _estimate_parameters(spec: LayerSpec, shape: Shape, n_classes: int) -> int:
    """The parameters ``spec`` will hold on input ``shape``, counted without allocating them (a convolution's
    shape is checked first: that message is the more useful one)."""
    channels = shape[0]
    if spec.kind == "conv":
        kernel, filters = spec.options["kernel"], spec.options["filters"]
        _need_image(spec, shape)
        _window_pads(spec, shape, kernel, "kernel")
        return channels * filters * kernel * kernel + filters
    if spec.kind == "dense" and len(shape) == 1:
        units = n_classes if spec.options["units"] == "classes" else spec.options["units"]
        return channels * units + units
    if spec.kind == "whiten":
        outputs = 2 * channels * spec.options["kernel"] ** 2
        return outputs * channels * spec.options["kernel"] ** 2 + outputs
    return 2 * channels if spec.kind == "batch_norm" else 0


def _check_parameters(spec: LayerSpec, total: int) -> None:
    remedy = ("Make the layer narrower (fewer filters or units), shrink its input (pooling, a stride, or a smaller "
              "dataset.image_size before a Flatten), or use GlobalAvgPool instead of Flatten.")
    if total > MAX_PARAMETERS:
        raise ConfigError(f"Up to {spec.describe()} the network has {total:,} parameters, more than the "
                          f"{MAX_PARAMETERS:,} cnnlab builds ({total * 4 / 2**30:,.1f} GiB of weights, about "
                          f"{total * TRAINING_BYTES_PER_PARAMETER / 2**30:,.0f} GiB while training). {remedy}")
    require_memory(total * TRAINING_BYTES_PER_PARAMETER, f"Training the network up to {spec.describe()} "
                   f"({total:,} parameters)", remedy)


def _check_output_size(spec: LayerSpec, shape: Shape) -> None:
    values = math.prod(shape)
    if values > MAX_VALUES_PER_IMAGE:
        raise ConfigError(f"{spec.describe()[:1].upper()}{spec.describe()[1:]} outputs {_shown(shape)}: {values:,} "
                          f"values for each image, more than the {MAX_VALUES_PER_IMAGE:,} cnnlab allows (1 GiB per "
                          "image). Use fewer filters, a stride or pooling, or a smaller dataset.image_size.")


def _as_specs(layers: Sequence[Any]) -> list[LayerSpec]:
    if isinstance(layers, Sequence) and layers and all(isinstance(layer, LayerSpec) for layer in layers):
        return list(layers)
    return parse_layers(layers)


def _check_input_shape(input_shape: Sequence[int]) -> Shape:
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(size, int) and size >= 1 for size in shape):
        raise ShapeError(f"The input shape must be (channels, height, width), e.g. (3, 32, 32), not {input_shape}.")
    return shape


def _is_final_softmax(specs: list[LayerSpec], index: int) -> bool:
    spec = specs[index]
    return index == len(specs) - 1 and spec.kind == "activation" and spec.options["activation"] == "softmax"


def _base_name(spec: LayerSpec) -> str:
    if spec.kind == "activation":
        return spec.options["activation"]
    if spec.kind == "dense":
        return "linear" if spec.style == "torch" else "dense"
    return {"conv": "conv2d"}.get(spec.kind, spec.kind)


def _unique_name(base: str, counters: dict[str, int]) -> str:
    counters[base] = counters.get(base, 0) + 1
    return f"{base}_{counters[base]}"


def _shown(shape: Shape) -> str:
    return "(None, " + ", ".join(str(size) for size in shape) + ")"


def _shape_error(spec: LayerSpec, shape: Shape, why: str) -> ShapeError:
    return ShapeError(f"Layer {spec.position} \"{spec.text}\" gets input of shape {_shown(shape)}: {why}")


def _need_image(spec: LayerSpec, shape: Shape) -> None:
    if len(shape) != 3:
        raise _shape_error(spec, shape, f"{spec.type_name} needs an image-shaped input (channels, height, "
                           "width), but a Flatten, Dense or global pooling before it has already made it flat. "
                           "Move this layer before the Flatten.")


def _window_pads(spec: LayerSpec, shape: Shape, window: int, label: str) -> tuple[Pads, Shape]:
    """Padding (left, right, top, bottom) and output (height, width) of a sliding window."""
    stride, padding = spec.options["stride"], spec.options["padding"]
    height, width = shape[1], shape[2]
    if padding == "same":
        # Keras/TensorFlow 'same': output = ceil(size / stride), any odd pixel of padding goes after.
        totals = [max((math.ceil(size / stride) - 1) * stride + window - size, 0) for size in (height, width)]
        top, left = totals[0] // 2, totals[1] // 2
        pads = (left, totals[1] - left, top, totals[0] - top)
    else:
        pads = (padding, padding, padding, padding)
    padded_height, padded_width = height + pads[2] + pads[3], width + pads[0] + pads[1]
    if padding == "same" and window > min(height, width):
        raise _shape_error(spec, shape, f"{label} {window} ({window}x{window}) is larger than the {height}x{width} "
                           "input: with padding 'same' most of each window would be padding. Use a "
                           f"{label} of at most {min(height, width)}, or fewer pooling layers before it.")
    if window > min(padded_height, padded_width):
        padded = "" if not any(pads) else f" (after padding: {padded_height}x{padded_width})"
        raise _shape_error(spec, shape, f"{label} {window} ({window}x{window}) is larger than the "
                           f"{height}x{width} input{padded}. Use a smaller kernel or pool, padding 'same', "
                           "or fewer pooling layers before it.")
    return pads, ((padded_height - window) // stride + 1, (padded_width - window) // stride + 1)


def _activation_module(name: str) -> nn.Module | None:
    modules: dict[str, Callable[[], nn.Module]] = {
        "relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "elu": nn.ELU, "gelu": nn.GELU,
        "leaky_relu": nn.LeakyReLU,
    }
    return modules[name]() if name in modules else None  # "none"; a final "softmax" lives in the loss


def _with_activation(layer: nn.Module, spec: LayerSpec) -> list[tuple[str, nn.Module]]:
    if spec.style == "keras":
        _keras_initialization(layer)
    activation = _activation_module(spec.options["activation"])
    return [("", layer)] + ([(spec.options["activation"], activation)] if activation else [])


def _keras_initialization(layer: nn.Module) -> None:
    """Keras' defaults for Conv2D and Dense: Glorot-uniform kernels and zero biases. PyTorch's own
    default (Kaiming-uniform with a=sqrt(5)) starts deep ReLU networks with smaller signals; with
    report 001's plain SGD at lr 0.01, cifar10/cnn did not leave chance level in its first epoch
    under PyTorch's initialisation, as it does under Keras'."""
    for module in layer.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def _build_conv(spec: LayerSpec, shape: Shape, n_classes: int):
    _need_image(spec, shape)
    kernel, stride = spec.options["kernel"], spec.options["stride"]
    pads, (height, width) = _window_pads(spec, shape, kernel, "kernel")
    left, right, top, bottom = pads
    filters = spec.options["filters"]
    if left == right and top == bottom:
        layer: nn.Module = nn.Conv2d(shape[0], filters, kernel, stride, padding=(top, left))
    else:
        layer = nn.Sequential(nn.ZeroPad2d(pads), nn.Conv2d(shape[0], filters, kernel, stride))
    return _with_activation(layer, spec), (filters, height, width), spec.type_name


def _build_pool(spec: LayerSpec, shape: Shape, n_classes: int):
    _need_image(spec, shape)
    pool, stride = spec.options["pool"], spec.options["stride"]
    pads, (height, width) = _window_pads(spec, shape, pool, "pool")
    left, right, top, bottom = pads
    if max(pads) >= pool:
        raise _shape_error(spec, shape, f"padding {max(pads)} would give windows of padding only; "
                           f"use at most {pool - 1} pixels or 'same'.")
    symmetric = left == right and top == bottom and max(pads) <= pool // 2
    if spec.kind == "max_pool":
        layer: nn.Module = nn.MaxPool2d(pool, stride, padding=(top, left)) if symmetric else \
            nn.Sequential(nn.ConstantPad2d(pads, float("-inf")), nn.MaxPool2d(pool, stride))
    elif symmetric:
        layer = nn.AvgPool2d(pool, stride, padding=(top, left), count_include_pad=False)
    else:
        raise _shape_error(spec, shape, f"average pooling with uneven padding {pads} is not supported; "
                           "use an odd pool size, a whole-number padding or 'valid'.")
    return [("", layer)], (shape[0], height, width), spec.type_name


def _build_global_pool(spec: LayerSpec, shape: Shape, n_classes: int):
    _need_image(spec, shape)
    return [("", GlobalAveragePool())], (shape[0],), spec.type_name


def _build_batch_norm(spec: LayerSpec, shape: Shape, n_classes: int):
    constants = {"momentum": spec.options.get("momentum", 0.1), "eps": spec.options.get("epsilon", 1e-5)}
    if len(shape) == 3:
        layer, suffix = nn.BatchNorm2d(shape[0], **constants), "2d"
    else:
        layer, suffix = nn.BatchNorm1d(shape[0], **constants), "1d"
    type_name = spec.type_name + suffix if spec.type_name == "BatchNorm" else spec.type_name
    return [("", layer)], shape, type_name


def _build_dropout(spec: LayerSpec, shape: Shape, n_classes: int):
    return [("", nn.Dropout(spec.options["rate"]))], shape, spec.type_name


def _build_flatten(spec: LayerSpec, shape: Shape, n_classes: int):
    return [("", nn.Flatten())], (math.prod(shape),), spec.type_name


def _build_dense(spec: LayerSpec, shape: Shape, n_classes: int):
    if len(shape) != 1:
        raise _shape_error(spec, shape, f"{spec.type_name} needs a flat vector, not an image-shaped input. "
                           f'Add "Flatten" before it (it would give {math.prod(shape):,} features), or '
                           '"GlobalAvgPool" to average each channel.')
    units = n_classes if spec.options["units"] == "classes" else spec.options["units"]
    return _with_activation(nn.Linear(shape[0], units), spec), (units,), spec.type_name


def _build_activation(spec: LayerSpec, shape: Shape, n_classes: int):
    activation = _activation_module(spec.options["activation"])
    return [("", activation or nn.Identity())], shape, spec.type_name


def _build_whiten(spec: LayerSpec, shape: Shape, n_classes: int):
    _need_image(spec, shape)
    kernel = spec.options["kernel"]
    if kernel > min(shape[1:]):
        raise _shape_error(spec, shape, f"patches of {kernel}x{kernel} do not fit the image")
    layer = PatchWhitening(shape[0], kernel)
    return [("", layer)], (layer.out_channels, shape[1] - kernel + 1, shape[2] - kernel + 1), spec.type_name


def _build_scale(spec: LayerSpec, shape: Shape, n_classes: int):
    return [("", Scale(spec.options["factor"]))], shape, spec.type_name


class GlobalAveragePool(nn.Module):
    """Average each channel over height and width: (N, C, H, W) -> (N, C), like Keras's GlobalAveragePooling2D."""

    def forward(self, images):
        return images.mean(dim=(2, 3))


class Scale(nn.Module):
    """Multiply by a constant: a low output scale (e.g. 1/8) keeps early logits small, as fast
    CIFAR-10 recipes do before the softmax."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, inputs):
        return inputs * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor:g}"


BUILDERS = {
    "conv": _build_conv, "max_pool": _build_pool, "avg_pool": _build_pool, "global_avg_pool": _build_global_pool,
    "batch_norm": _build_batch_norm, "dropout": _build_dropout, "flatten": _build_flatten, "dense": _build_dense,
    "activation": _build_activation, "whiten": _build_whiten, "scale": _build_scale,
}


def _check_output(specs: list[LayerSpec], shape: Shape, n_classes: int, notes: list[str]) -> None:
    dense = [spec for spec in specs if spec.kind == "dense"]
    if len(shape) != 1:
        raise ConfigError(f"The network ends with an image-shaped output {_shown(shape)}, but a classifier must "
                          f'end with {n_classes} class scores. Add "Flatten" and "Dense: classes" at the end.')
    if shape[0] != n_classes:
        if dense and dense[-1].options["units"] != "classes":
            last = dense[-1]
            raise ConfigError(f'The last {last.type_name} (layer {last.position} "{last.text}") has {shape[0]} '
                              f"units but the dataset has {n_classes} classes. Set it to {n_classes}, or write "
                              f'"{last.type_name}: classes" to follow the dataset.')
        raise ConfigError(f"The network outputs {shape[0]} values but the dataset has {n_classes} classes. "
                          f'End it with "Dense: classes".')
    final = specs[-1].options.get("activation", "none")
    if final not in ("none", "softmax"):
        notes.append(f"The last layer applies {final} to the logits, which limits the scores the loss sees; "
                     "classifiers usually end without an activation.")
