"""An exponential moving average of a model's weights, kept on the training device.

Averaging the weights of the last steps gives a model that generalises better than the last
step's weights alone (Polyak averaging; the fast CIFAR-10 recipes use it). The average is what a
run evaluates and saves when `train.ema_decay` is set."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn


class WeightAverage:
    """average = decay * average + (1 - decay) * weights, after each optimiser step, with
    decay = min(decay, (1 + steps) / (10 + steps)) so a short run's average is not its initial weights.

    Updating every ``every`` steps with decay**every costs 1/every of the work and tracks the same
    average to first order. Buffers (batch-norm statistics) are not averaged: the model's own are
    kept, as they describe the activations of the current weights."""

    def __init__(self, model: nn.Module, decay: float, every: int = 5):
        self.decay = decay
        self.every = every
        self.steps = 0
        trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        self.names = [name for name, _ in trainable]
        self.parameters = [p for _, p in trainable]
        self.average = [p.detach().clone() for p in self.parameters]

    @torch.no_grad()
    def update(self) -> None:
        """Count one optimiser step; every ``every`` steps, move the average towards the weights."""
        self.steps += 1
        if self.steps % self.every:
            return
        # Early on the average would be mostly the random initial weights: like TensorFlow's
        # ExponentialMovingAverage(num_updates), the decay grows from 0.1 towards its set value.
        decay = min(self.decay, (1 + self.steps) / (10 + self.steps))
        weight = 1 - decay ** self.every
        torch._foreach_lerp_(self.average, [p.detach() for p in self.parameters], weight)

    @torch.no_grad()
    def copy_to_model(self) -> None:
        """Replace the model's trainable weights with their average."""
        torch._foreach_copy_(self.parameters, self.average)

    def averaged_state(self, model: nn.Module) -> dict:
        """A copy of ``model.state_dict()`` with the trainable weights replaced by their average: what
        `copy_to_model` would make the model (the model itself is left as it is)."""
        state = {key: value.detach().clone() for key, value in model.state_dict().items()}
        for name, average in zip(self.names, self.average):
            state[name] = average.clone()
        return state

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The average in the model's weights for the ``with`` block (to evaluate what will be saved),
        the model's own weights back after it, bit for bit, so training continues as if untouched."""
        with torch.no_grad():
            own = [p.detach().clone() for p in self.parameters]
            torch._foreach_copy_(self.parameters, self.average)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self.parameters, own)

    def state_dict(self) -> dict:
        """The step count and the averaged weights (for a training checkpoint)."""
        return {"steps": self.steps, "average": [tensor.clone() for tensor in self.average]}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a `state_dict` of the same model's average."""
        self.steps = int(state["steps"])
        with torch.no_grad():
            torch._foreach_copy_(self.average, [tensor.to(self.average[0].device) for tensor in state["average"]])
