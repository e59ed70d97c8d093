"""Optimisers, Keras-style L2 penalties and learning-rate schedules as functions of training progress."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from cnnlab.training.settings import OptimizerSection, ScheduleSection


def make_optimizer(model: nn.Module, settings: OptimizerSection) -> torch.optim.Optimizer:
    """Build the optimiser; each parameter group remembers its base lr in ``base_lr``.

    A model with ``lr_groups()`` (a pretrained backbone and its head) gets one group per part,
    at ``settings.lr`` times that part's factor."""
    params: list = [p for p in model.parameters() if p.requires_grad]
    fused = _fused(params)
    if hasattr(model, "lr_groups"):
        params = [{"params": group, "lr": settings.lr * factor} for group, factor in model.lr_groups() if group]
    if settings.name == "sgd":
        optimizer = torch.optim.SGD(
            params, lr=settings.lr, momentum=settings.momentum,
            nesterov=settings.nesterov and settings.momentum > 0, weight_decay=settings.weight_decay, fused=fused,
        )
    elif settings.name == "adam":
        optimizer = torch.optim.Adam(params, lr=settings.lr, betas=settings.betas, weight_decay=settings.weight_decay,
                                     fused=fused)
    elif settings.name == "rmsprop":
        # Keras' RMSprop: the squared-gradient average decays by rho (PyTorch's alpha) and its epsilon
        # is 1e-7 (PyTorch's default is 1e-8); PyTorch's RMSprop has no fused kernel on the CPU.
        optimizer = torch.optim.RMSprop(params, lr=settings.lr, alpha=settings.rho, eps=1e-7,
                                        momentum=settings.momentum, weight_decay=settings.weight_decay)
    else:
        optimizer = torch.optim.AdamW(params, lr=settings.lr, betas=settings.betas, weight_decay=settings.weight_decay,
                                      fused=fused)
    for group in optimizer.param_groups:
        group["base_lr"] = group["lr"]
    return optimizer


def _fused(params: list[torch.Tensor]) -> bool | None:
    """One fused kernel per step instead of several per tensor (same update; tested against the
    unfused optimiser): for float32 parameters on a CPU or CUDA device."""
    if not params:
        return None
    devices = {p.device.type for p in params}
    return True if devices <= {"cpu", "cuda"} and len(devices) == 1 and all(
        p.dtype == torch.float32 for p in params) else None


def kernel_weights(model: nn.Module, layers: str = "all") -> list[torch.Tensor]:
    """The kernels a Keras ``kernel_regularizer=l2(...)`` would penalise: conv and dense ("all"),
    or only "conv" or only "dense" ones (report 003 regularised its convolutions only)."""
    kinds = {"all": (nn.Conv2d, nn.Linear), "conv": (nn.Conv2d,), "dense": (nn.Linear,)}[layers]
    return [m.weight for m in model.modules() if isinstance(m, kinds) and m.weight.requires_grad]


def l2_penalty(kernels: list[torch.Tensor], strength: float) -> torch.Tensor | float:
    """``strength`` times the summed squares of ``kernels`` (0.0 when there is nothing to penalise)."""
    if strength == 0 or not kernels:
        return 0.0
    return strength * sum(w.pow(2).sum() for w in kernels)


def lr_factor_function(schedule: ScheduleSection, base_lr: float, epochs: int) -> Callable[[float], float]:
    """Return f(progress) -> multiplier of the base lr, progress measured in epochs (0..epochs).

    ``step`` and ``piecewise`` change at epoch starts like Keras' LearningRateScheduler;
    ``cosine`` and ``onecycle`` change every step. A linear warm-up applies first when set."""
    warmup = schedule.warmup_epochs

    def with_warmup(inner: Callable[[float], float]) -> Callable[[float], float]:
        if warmup <= 0:
            return inner
        return lambda progress: inner(progress) * min(1.0, (progress + 1e-9) / warmup) if progress < warmup else inner(progress)

    if schedule.name == "constant":
        return with_warmup(lambda progress: 1.0)
    if schedule.name == "step":
        return with_warmup(lambda progress: schedule.gamma ** (int(progress) // schedule.step_size))
    if schedule.name == "piecewise":
        boundaries, values = list(schedule.boundaries), list(schedule.values)

        def piecewise(progress: float) -> float:
            epoch = int(progress)
            index = sum(1 for boundary in boundaries if epoch >= boundary)
            return values[index] / base_lr

        return with_warmup(piecewise)
    min_factor = schedule.min_lr / base_lr
    if schedule.name == "cosine":
        def cosine(progress: float) -> float:
            span = max(epochs - warmup, 1e-9)
            position = min(max(progress - warmup, 0.0) / span, 1.0)
            return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * position))

        return with_warmup(cosine)
    # one-cycle: rise from peak/25 to the peak over the warm-up (30% by default), then cosine down to peak/1e4
    peak = (schedule.max_lr or base_lr) / base_lr
    rise = warmup if warmup > 0 else 0.3 * epochs

    def one_cycle(progress: float) -> float:
        if progress < rise:
            return peak / 25 + (peak - peak / 25) * progress / rise
        position = min((progress - rise) / max(epochs - rise, 1e-9), 1.0)
        low = peak / 1e4
        return low + (peak - low) * 0.5 * (1 + math.cos(math.pi * position))

    return one_cycle


def apply_lr(optimizer: torch.optim.Optimizer, factor: float) -> float:
    """Set every group's lr to its base lr times ``factor``; return the first group's lr."""
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor
    return optimizer.param_groups[0]["lr"]
