"""Parameter counts and the Keras-style model summary."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from torch import nn


@dataclass(frozen=True)
class SummaryRow:
    """One layer of the summary: its output shape (without the batch) and parameter counts."""

    name: str
    type: str
    output_shape: tuple[int, ...]
    params: int  # trainable + non-trainable, as Keras counts them
    trainable: int
    module_names: tuple[str, ...] = ()  # the children of `BuiltModel.module` this layer became


class Summarised(Protocol):
    """What ``format_summary`` reads of a built model (``BuiltModel`` has it), so this module needs
    no import of the builder that fills its rows. Read-only, so a dataclass's narrower types fit."""

    @property
    def module(self) -> nn.Module: ...
    @property
    def rows(self) -> Sequence[SummaryRow]: ...
    @property
    def notes(self) -> Sequence[str]: ...
    @property
    def input_shape(self) -> tuple[int, ...]: ...
    @property
    def n_classes(self) -> int: ...
    @property
    def name(self) -> str: ...


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(trainable, non_trainable) like Keras: non-trainable holds frozen parameters and the
    floating-point buffers (BatchNorm's running mean and variance, not its batch counter)."""
    trainable = sum(parameter.numel() for parameter in module.parameters() if parameter.requires_grad)
    frozen = sum(parameter.numel() for parameter in module.parameters() if not parameter.requires_grad)
    statistics = sum(buffer.numel() for buffer in module.buffers() if buffer.is_floating_point())
    return trainable, frozen + statistics


def format_summary(built: Summarised) -> str:
    """A Keras-style table: layer (type), output shape (None, C, H, W), parameters, totals, then the notes."""
    header = ("Layer (type)", "Output Shape", "Param #")
    body = [(f"{row.name} ({row.type})", _shape_text(row.output_shape), f"{row.params:,}") for row in built.rows]
    widths = [max(len(line[column]) for line in [header, *body]) + 3 for column in range(3)]
    width = sum(widths)
    trainable, non_trainable = count_parameters(built.module)
    title = f'Model: "{built.name}"' if built.name else "Model"
    lines = [f"{title}, input {_shape_text(built.input_shape)}, {built.n_classes} classes", "_" * width,
             _row_text(header, widths), "=" * width]
    for index, line in enumerate(body):
        lines.append(_row_text(line, widths))
        lines.append("=" * width if index == len(body) - 1 else "_" * width)
    lines += [f"Total params: {trainable + non_trainable:,}", f"Trainable params: {trainable:,}",
              f"Non-trainable params: {non_trainable:,}", "_" * width]
    lines += [f"Note: {note}" for note in built.notes]
    return "\n".join(lines) + "\n"


def _shape_text(shape: tuple[int, ...]) -> str:
    return "(None, " + ", ".join(str(size) for size in shape) + ")"


def _row_text(cells: tuple[str, str, str], widths: list[int]) -> str:
    return "".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip()
