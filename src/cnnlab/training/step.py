"""The one training step: set the learning rate, gather a batch on the device, augment it, forward
in the compute plan's precision, the loss with its L2 penalty, backward (loss-scaled for float16),
the optimiser step and the weight average. `fit` and `cnnlab lr-find` both take their steps here,
so a learning-rate sweep runs with the precision, memory layout and augmentation of training."""

from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

from cnnlab.data.device_images import DeviceImages
from cnnlab.training.optimizers import apply_lr, kernel_weights, l2_penalty, make_optimizer
from cnnlab.training.precision import ComputePlan
from cnnlab.training.settings import TrainingRecipe
from cnnlab.training.weight_average import WeightAverage

Augment = Callable[..., torch.Tensor]  # augment(images, indices=..., epoch=...)


@dataclass
class StepOutput:
    """What one step leaves for the caller's running totals: all detached, still on the device."""

    loss: torch.Tensor  # the mean loss of the batch (penalty included), a scalar
    logits: torch.Tensor  # (batch, classes), in the forward pass's precision
    labels: torch.Tensor  # (batch,)
    lr: float  # the first parameter group's learning rate during the step


class TrainingStep:
    """One optimiser step on the images ``data[indices]``; owns the optimiser, loss, L2 kernels, grad
    scaler and weight average of one training run. ``forward`` is the module the batch runs through:
    ``model`` itself, or its compiled form after `compile`."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, criterion: nn.Module, plan: ComputePlan,
                 data: DeviceImages, augment: Optional[Augment] = None, kernels: Optional[list[torch.Tensor]] = None,
                 l2: float = 0.0, average: Optional[WeightAverage] = None):
        self.model = model
        self.forward: nn.Module = model
        self.optimizer = optimizer
        self.criterion = criterion
        self.plan = plan
        self.scaler = plan.grad_scaler()
        self.data = data
        self.augment = augment
        self.kernels = kernels or []
        self.l2 = l2
        self.average = average

    @classmethod
    def from_recipe(cls, model: nn.Module, recipe: TrainingRecipe, plan: ComputePlan, data: DeviceImages,
                    augment: Optional[Augment] = None, average_weights: bool = True) -> "TrainingStep":
        """The step a recipe describes: its optimiser, label smoothing, L2 penalty and (when
        ``average_weights`` and `train.ema_decay` is set) a moving average of the weights."""
        settings = recipe.train
        optimizer = make_optimizer(model, recipe.optimizer)
        average = WeightAverage(model, settings.ema_decay) if average_weights and settings.ema_decay else None
        criterion = nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)
        kernels = kernel_weights(model, recipe.optimizer.l2_layers) if recipe.optimizer.l2 > 0 else []
        return cls(model, optimizer, criterion, plan, data, augment, kernels, recipe.optimizer.l2, average)

    def __call__(self, indices: torch.Tensor, lr_factor: float, epoch: int, loss_weight: float = 1.0) -> StepOutput:
        """Train on ``data[indices]`` at the base learning rate times ``lr_factor``; ``epoch`` (from 1)
        is passed to the augmenter, whose alternating flips depend on it. The gradient is that of the loss
        times ``loss_weight`` (a torchrun process's share of a global batch: `Distributed.share`); the
        output's loss is the batch's own."""
        lr = apply_lr(self.optimizer, lr_factor)
        images, labels = self.data.batch(indices)
        if self.augment is not None:
            images = self.augment(images, indices=indices, epoch=epoch)
        with self.plan.autocast():
            logits = self.forward(images)
            loss = self.criterion(logits.float(), labels) + l2_penalty(self.kernels, self.l2)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss if loss_weight == 1.0 else loss * loss_weight).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.average is not None:
            self.average.update()
        return StepOutput(loss.detach(), logits.detach(), labels, lr)

    def compile(self, indices: torch.Tensor) -> float:
        """Run the batches through ``torch.compile(model)`` from now on, paying its one-time cost now on
        ``data[indices]``; returns the seconds it took."""
        self.forward, seconds = compile_model(self.model, self.data, indices, self.plan)
        return seconds

    def evaluating(self) -> contextlib.AbstractContextManager:
        """For a ``with`` block, the model holds the weights the run will save: the weight average when
        there is one (swapped back out after the block, bit for bit), else the model's own."""
        return self.average.swapped_in() if self.average is not None else contextlib.nullcontext()

    def evaluated_state(self) -> dict:
        """A copy of the state dict `evaluating` puts in the model (what early stopping keeps as best)."""
        if self.average is not None:
            return self.average.averaged_state(self.model)
        return copy.deepcopy(self.model.state_dict())

    def finish(self) -> None:
        """Put the weight average (if any) into the model: what the run evaluates and saves."""
        if self.average is not None:
            self.average.copy_to_model()


def compile_model(model: nn.Module, data: DeviceImages, indices: torch.Tensor,
                  plan: ComputePlan) -> tuple[nn.Module, float]:
    """torch.compile ``model`` and pay its one-time cost now, on one batch (training and evaluation
    graphs), leaving weights, statistics and gradients as they were. Returns (compiled, seconds)."""
    started = time.perf_counter()
    compiled = torch.compile(model)
    state = copy.deepcopy(model.state_dict())
    images, labels = data.batch(indices)
    with plan.autocast():
        nn.functional.cross_entropy(compiled(images).float(), labels).backward()
        model.eval()
        with torch.no_grad():
            compiled(images)
        model.train()
    model.zero_grad(set_to_none=True)
    model.load_state_dict(state)
    if data.device.type == "cuda":
        torch.cuda.synchronize(data.device)
    return compiled, time.perf_counter() - started
