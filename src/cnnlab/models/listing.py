"""The zoo as a table for `cnnlab models`: name, dataset, parameter count, source report and a
description, then what each name prefix stands for."""

from __future__ import annotations

import textwrap

from cnnlab.models import count_parameters, create_model, zoo

HEADER = ("name", "dataset", "params")


def zoo_listing(width: int = 100) -> str:
    """Every zoo entry (parameters counted on a model built for 10 classes; a pretrained backbone is named,
    not loaded), the legend of name prefixes and how to train one."""
    rows = [(entry.name, entry.dataset, _parameters(entry), entry.description, entry.source)
            for entry in zoo.list_entries()]
    widths = [max(len(row[column]) for row in rows + [HEADER]) for column in range(3)]
    lines = ["  ".join(cell.ljust(size) for cell, size in zip(HEADER, widths)) + "  source"]
    for row in rows:
        lines.append("  ".join(cell.ljust(size) for cell, size in zip(row[:3], widths)) + f"  {row[4]}")
        lines.append(textwrap.fill(row[3], width=width, initial_indent="    ", subsequent_indent="    "))
    prefix_width = max(len(prefix) for prefix in zoo.PREFIXES)
    lines.append("\nName prefixes:")
    for prefix, meaning in zoo.PREFIXES.items():
        lines.append(textwrap.fill(meaning, width=width, initial_indent=f"  {prefix.ljust(prefix_width)}  ",
                                   subsequent_indent=" " * (prefix_width + 4)))
    lines.append("\nTrain one with `cnnlab train NAME`; `cnnlab summary NAME` shows its layers.")
    return "\n".join(lines)


def _parameters(entry: zoo.ZooEntry) -> str:
    if entry.backbone is not None:
        return f"pretrained {entry.backbone['backbone']}"  # counting would load its weights
    return f"{sum(count_parameters(create_model(entry.name, entry.input_shape, 10).module)):,}"
