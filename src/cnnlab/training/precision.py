"""The compute plan: how a model runs on its device (numeric precision, memory layout, compilation).

Every experiment gets one; `train.precision`, `train.channels_last` and `train.compile` override the
automatic choice, and the choice is recorded in each run's metrics (under the key "fast_path")."""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from cnnlab.errors import ConfigError
from cnnlab.training.settings import TrainSection

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class ComputePlan:
    """How a model runs on one device: precision, memory layout and compilation."""

    device: torch.device
    precision: str = "fp32"  # "fp32", "bf16" (autocast) or "fp16" (autocast with loss scaling, CUDA only)
    channels_last: bool = False
    compile: bool = False

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision for the forward pass and the loss; a no-op for fp32. On a CPU in bfloat16
        (uncompiled), depthwise convolutions that need gradients run in float32: see
        `DepthwiseInFloat32`."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        autocast = torch.autocast(self.device.type, dtype=AUTOCAST_DTYPES[self.precision])
        if self.device.type != "cpu" or self.compile:
            return autocast
        stack = contextlib.ExitStack()
        stack.enter_context(autocast)
        stack.enter_context(DepthwiseInFloat32())
        return stack

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Loss scaling, which only float16 needs (bfloat16 has float32's range)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    def prepare(self, model: nn.Module) -> nn.Module:
        """Move ``model`` to the device and memory layout (compilation happens in the trainer)."""
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def to_dict(self) -> dict:
        """The plan as recorded in a run's metrics: precision, channels_last, compile."""
        return {"precision": self.precision, "channels_last": self.channels_last, "compile": self.compile}


class DepthwiseInFloat32(TorchFunctionMode):
    """Runs depthwise convolutions (one filter per channel) in float32 while they need gradients.

    PyTorch's CPU backward of a bfloat16 depthwise convolution is 3-10x slower than float32's in
    channels-last (measured with torch 2.15 on an AMX Xeon, e.g. 672 channels, 5x5, stride 2: 143 ms
    against 14 ms for a batch of 64), which made fine-tuning EfficientNet-style networks on a CPU
    slower in bfloat16 than in float32. Under this mode those convolutions take float32 inputs with
    autocast off; everything else keeps autocast's bfloat16. Without gradients (evaluation, feature
    extraction) bfloat16 is as fast, so nothing changes there."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.conv2d and torch.is_grad_enabled() and len(args) >= 2:
            images, weight = args[0], args[1]
            if weight.dim() == 4 and weight.shape[1] == 1 and images.dim() == 4 and images.shape[1] == weight.shape[0] > 1:
                args = tuple(arg.float() if isinstance(arg, torch.Tensor) else arg for arg in args)
                kwargs = {key: value.float() if isinstance(value, torch.Tensor) else value
                          for key, value in kwargs.items()}
                with torch.autocast("cpu", enabled=False):
                    return func(*args, **kwargs)
        return func(*args, **kwargs)


def choose_compute_plan(settings: TrainSection, device: torch.device, input_shape: tuple[int, ...],
                        model: nn.Module) -> ComputePlan:
    """Resolve the train section's precision, channels_last and compile ("auto" or forced) for ``device``
    and ``model``; raises ConfigError for fp16 off CUDA.

    "Convolutional" below means a model with a convolution on colour images or with two or more
    convolutions: measured here, a single convolution on grey images (keras/mnist/model1) runs slower
    in channels-last and gains nothing from bfloat16, while deeper networks run 2-4x faster.
    auto precision: bfloat16 on a GPU that has it (float16 otherwise), and on a CPU with bfloat16
    matrix units (Intel AMX) for convolutional models; float32 elsewhere. auto channels-last: on a
    GPU for any model with a convolution; on a CPU for convolutional models."""
    convolutions = sum(isinstance(module, nn.Conv2d) for module in model.modules())
    colour = len(input_shape) == 3 and input_shape[0] >= 3
    convolutional = convolutions > 0 and (colour or convolutions >= 2)
    precision = settings.precision
    if precision == "auto":
        if device.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        elif device.type == "cpu" and convolutional and cpu_has_bf16_matrix_units():
            precision = "bf16"
        else:
            precision = "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(f'train.precision "fp16" needs a CUDA GPU (this run is on {device.type}): use bf16 or fp32.')
    channels_last = settings.channels_last
    if channels_last == "auto":
        channels_last = convolutions > 0 and (device.type == "cuda" or convolutional)
    return ComputePlan(device, precision, bool(channels_last), bool(settings.compile))


@functools.lru_cache(maxsize=1)
def cpu_has_bf16_matrix_units() -> bool:
    """True on CPUs with AMX-BF16 tiles (Intel Sapphire Rapids and later), read from /proc/cpuinfo."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags and torch.backends.mkldnn.is_available()


def automatic_compute_plan(device: torch.device, input_shape: tuple[int, ...], model: nn.Module) -> ComputePlan:
    """The automatic choices without a config (the train section's defaults: auto precision and
    layout, no compilation), for inference outside training (feature extraction)."""
    return choose_compute_plan(TrainSection(), device, input_shape, model)
