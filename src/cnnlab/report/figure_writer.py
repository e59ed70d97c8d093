"""Figures of a report: drawn, saved under ``<folder>/figures`` and kept as PNG bytes for the HTML.

A writer made with ``deferred=True`` (the run report) keeps each figure (or the function that draws it) when
it is added and builds, draws and encodes them all in `FigureWriter.finish`, on two processes where the
machine has two cores: figures are most of a report's time (a 10,000-image CIFAR-10 report: 3.0 s in one
process on two idle Zen 4 cores), and matplotlib holds the GIL while it draws, so threads would not help.
The workers are forked, so they inherit the figures and their data; the sections compute their tensors
(Grad-CAM, feature maps) before adding a figure, and each worker runs PyTorch on one thread should a drawing
function call it (as DataLoader workers do after a fork). A figure that cannot be drawn never stops a report:
its block becomes a Callout naming the figure and the error, whichever process found it."""

from __future__ import annotations

import multiprocessing
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch

from cnnlab import runs
from cnnlab.report import plots
from cnnlab.report.blocks import Block, Callout, Image, ImageRow

MIN_PARALLEL_FIGURES = 4  # below this, starting processes costs more than it saves
PROCESSES_VARIABLE = "CNNLAB_REPORT_PROCESSES"  # 1: draw in this process only


@dataclass
class PendingFigure:
    name: str
    caption: str
    path: str  # relative to the folder: figures/<name>.png
    figure: Any  # a matplotlib Figure not yet drawn, or a function that builds one


_INHERITED: list[PendingFigure] = []  # what forked workers draw (set just before the fork)


class FigureWriter:
    """Saves figures under ``<folder>/figures`` and keeps their bytes for the HTML (``pngs``)."""

    def __init__(self, folder: Path, deferred: bool = False):
        self.folder = folder
        self.deferred = deferred
        self.pngs: dict[str, bytes] = {}
        self.failures: list[str] = []  # names of the figures that could not be drawn
        self._pending: list[PendingFigure] = []
        self._failed_blocks: dict[str, Callout] = {}

    def add(self, name: str, figure: Any, caption: str) -> Union[Image, Callout]:
        """Save ``figure`` (a Figure, or a function that draws one) as figures/<name>.png and return its
        Image block, or a Callout naming the figure and the error when it cannot be drawn (writing the file
        may still fail, with the file named, as every write does). Deferred: the PNG is made in `finish`."""
        path = f"{runs.FIGURES_DIR}/{name}.png"
        if self.deferred:
            self._pending.append(PendingFigure(name, caption, path, figure))
            return Image(path, caption)
        try:
            png = plots.figure_to_png(figure() if callable(figure) else figure)
        except Exception as error:  # noqa: BLE001 - any drawing failure, by design: the report goes on
            return self._failed(name, caption, f"{type(error).__name__}: {error}")
        self._save(path, png)
        return Image(path, caption)

    def finish(self, blocks: Sequence[Block]) -> list[Block]:
        """Draw the deferred figures (on two processes where that pays), save them, and return ``blocks``
        with the Image of each figure that could not be drawn replaced by its Callout."""
        pending, self._pending = self._pending, []
        for figure, (png, error) in zip(pending, _draw_all(pending)):
            if png is None:
                self._failed_blocks[figure.path] = self._failed(figure.name, figure.caption, error)
            else:
                self._save(figure.path, png)
        return [_replace_failed(block, self._failed_blocks) for block in blocks]

    def _save(self, path: str, png: bytes) -> None:
        runs.write_bytes_atomic(self.folder / path, png)
        self.pngs[path] = png

    def _failed(self, name: str, caption: str, error: str) -> Callout:
        self.failures.append(name)
        kind, _, message = error.partition(": ")
        detail = message.strip().splitlines()[0][:300] if message.strip() else ""
        return Callout(f"The figure \"{name}\" ({caption}) could not be drawn: {kind}"
                       f"{': ' + detail if detail else ''}. The rest of the report is complete.", "warning")


def report_processes(figure_count: int) -> int:
    """How many processes draw ``figure_count`` figures: two on a machine with two or more cores, fork
    available and no other Python thread running (forking a threaded process can deadlock); else one.
    ``CNNLAB_REPORT_PROCESSES=1`` keeps everything in this process."""
    wanted = os.environ.get(PROCESSES_VARIABLE, "").strip()
    limit = int(wanted) if wanted.isdigit() and int(wanted) >= 1 else 2
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if (figure_count < MIN_PARALLEL_FIGURES or "fork" not in multiprocessing.get_all_start_methods()
            or threading.active_count() > 1):
        return 1
    return max(1, min(limit, cores))


def _draw_all(pending: list[PendingFigure]) -> list[tuple[Optional[bytes], Optional[str]]]:
    processes = report_processes(len(pending))
    if processes == 1:
        return [_draw(figure) for figure in pending]
    global _INHERITED
    _INHERITED = pending
    try:
        with multiprocessing.get_context("fork").Pool(processes, initializer=_one_thread) as pool:
            return pool.map(_draw_inherited, range(len(pending)), chunksize=1)
    finally:
        _INHERITED = []


def _one_thread() -> None:
    torch.set_num_threads(1)  # OpenMP's threads do not survive a fork: a forked worker runs without them


def _draw_inherited(index: int) -> tuple[Optional[bytes], Optional[str]]:
    return _draw(_INHERITED[index])


def _draw(figure: PendingFigure) -> tuple[Optional[bytes], Optional[str]]:
    try:
        built = figure.figure() if callable(figure.figure) else figure.figure
        return plots.figure_to_png(built), None
    except Exception as error:  # noqa: BLE001 - reported as the figure's Callout
        return None, f"{type(error).__name__}: {error}"


def _replace_failed(block: Block, failed: dict[str, Callout]) -> Block:
    if isinstance(block, Image) and block.path in failed:
        return failed[block.path]
    if isinstance(block, ImageRow) and any(isinstance(image, Image) and image.path in failed
                                           for image in block.images):
        return ImageRow([failed.get(image.path, image) if isinstance(image, Image) else image
                         for image in block.images])
    return block
