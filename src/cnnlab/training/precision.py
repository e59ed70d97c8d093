"""The compute plan: how a model runs on its device (numeric precision, memory layout, compilation).

Every experiment gets one; `train.precision`, `train.channels_last` and `train.compile` override the
automatic choice, and the choice is recorded in each run's metrics (under the key "fast_path")."""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field
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
    reason: str = field(default="", compare=False)  # why this precision, in words (recorded, not compared)
    # False when the model has no depthwise convolution: `DepthwiseInFloat32` would change nothing but costs a
    # Python call per torch function (report004/three-blocks at batch 4: 3.96 against 3.72 ms a step)
    depthwise_in_float32: bool = field(default=True, compare=False)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision for the forward pass and the loss; a no-op for fp32. On a CPU in bfloat16
        (uncompiled), depthwise convolutions that need gradients run in float32: see
        `DepthwiseInFloat32` (left out for a model without them, see `may_run_depthwise_convolutions`)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        autocast = torch.autocast(self.device.type, dtype=AUTOCAST_DTYPES[self.precision])
        if self.device.type != "cpu" or self.compile or not self.depthwise_in_float32:
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
        """The plan as recorded in a run's metrics: precision, channels_last, compile and the reason for
        the precision."""
        return {"precision": self.precision, "channels_last": self.channels_last, "compile": self.compile,
                "reason": self.reason}


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
    and ``model``, with the reason for the precision in words; raises ConfigError for fp16 off CUDA.

    "Convolutional" below means a model with a convolution on colour images or with two or more
    convolutions: measured here, a single convolution on grey images (keras/mnist/model1) runs slower
    in channels-last and gains nothing from bfloat16, while deeper networks run 2-4x faster.
    auto precision: bfloat16 on a GPU that has it (float16 otherwise), and on a CPU with bfloat16
    matrix instructions (see `cpu_bf16_instructions`) for convolutional models; float32 elsewhere.
    auto channels-last: on a GPU for any model with a convolution; on a CPU for convolutional models."""
    convolutions = sum(isinstance(module, nn.Conv2d) for module in model.modules())
    colour = len(input_shape) == 3 and input_shape[0] >= 3
    convolutional = convolutions > 0 and (colour or convolutions >= 2)
    precision = settings.precision
    if precision == "auto":
        precision, reason = automatic_precision(device, convolutional)
    else:
        reason = f"train.precision={precision} in the config"
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(f'train.precision "fp16" needs a CUDA GPU (this run is on {device.type}): use bf16 or fp32.')
    channels_last = settings.channels_last
    if channels_last == "auto":
        channels_last = convolutions > 0 and (device.type == "cuda" or convolutional)
    return ComputePlan(device, precision, bool(channels_last), bool(settings.compile), reason,
                       depthwise_in_float32=may_run_depthwise_convolutions(model))


def may_run_depthwise_convolutions(model: nn.Module) -> bool:
    """Whether ``model`` has a convolution `DepthwiseInFloat32` would change: a depthwise `nn.Conv2d`, or a
    parameter or buffer shaped like a depthwise kernel outside any `nn.Conv2d` (a functional convolution)."""
    convolution_weights = set()
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            if module.in_channels > 1 and module.groups == module.in_channels:
                return True
            convolution_weights.add(id(module.weight))
    tensors = [*model.parameters(), *model.buffers()]
    return any(tensor.dim() == 4 and tensor.shape[1] == 1 and tensor.shape[0] > 1
               and id(tensor) not in convolution_weights for tensor in tensors)


def automatic_precision(device: torch.device, convolutional: bool) -> tuple[str, str]:
    """The automatic precision for ``device`` and a (non-)convolutional model, and why, in words."""
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", "cuda device supports bfloat16: bf16 autocast"
        return "fp16", "cuda device without bfloat16: fp16 autocast with loss scaling"
    if device.type != "cpu":
        return "fp32", f"float32 on {device.type}"
    if not convolutional:
        return "fp32", ("not a convolutional model (no convolution, or one on grey images: bfloat16 measured no "
                        "faster): float32")
    instructions = cpu_bf16_instructions()
    if not instructions:
        return "fp32", "cpu has no bfloat16 matrix instructions (amx_bf16 or avx512_bf16): float32"
    if not torch.backends.mkldnn.is_available():
        return "fp32", f"cpu has {instructions[0]} but this PyTorch has no oneDNN: float32"
    return "bf16", f"cpu has {instructions[0]}: bf16 autocast for a convolutional model"


# The x86 flags (as /proc/cpuinfo spells them) under which oneDNN runs bfloat16 convolutions and matrix
# products natively, best first. AMX-BF16: Intel Sapphire Rapids and later. AVX512-BF16: Intel Cooper Lake
# and later, AMD Zen 4 and later (an EPYC Zen 4 trained fast/mnist in 25.5 s in bf16 against 38.5 s in
# float32, same accuracy). AVX-512 without BF16 (Skylake-X, Ice Lake) only emulates bfloat16 through
# conversions, slower than float32; Zen 3 and older have no AVX-512 at all. ARM's `bf16` feature is left
# out: oneDNN reaches it through the Arm Compute Library, whose bfloat16 training speed nobody has
# measured here.
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_bf16_instructions() -> tuple[str, ...]:
    """The bfloat16 matrix instructions of this CPU that oneDNN uses (`BF16_CPU_FLAGS`), best first;
    empty when it has none."""
    flags = read_cpu_flags()
    return tuple(flag for flag in BF16_CPU_FLAGS if flag in flags)


@functools.lru_cache(maxsize=4)
def read_cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags from ``cpuinfo`` (x86 "flags", ARM "Features"); empty where it cannot be
    read (not Linux)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return frozenset(flags)


def automatic_compute_plan(device: torch.device, input_shape: tuple[int, ...], model: nn.Module) -> ComputePlan:
    """The automatic choices without a config (the train section's defaults: auto precision and
    layout, no compilation), for inference outside training (feature extraction)."""
    return choose_compute_plan(TrainSection(), device, input_shape, model)
