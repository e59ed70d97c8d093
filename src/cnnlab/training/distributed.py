"""One run on several processes, launched by torchrun: data-parallel training with PyTorch's own
DistributedDataParallel (NCCL between GPUs, gloo between CPU processes).

How the work is shared, so that ``train.batch_size`` keeps its meaning (the global batch):
- every process holds the whole dataset on its device and draws the same seeded order each epoch; step
  s's global batch is ``order[s*B:(s+1)*B]`` as in one process, and process r trains on the r-th of its
  N near-equal parts (`share`). A part's mean loss is weighted by its size (N * part / batch), so the
  gradient DDP averages is the global batch's mean gradient even when the last batch does not divide evenly;
- one all-reduce per epoch sums the running loss, the correct count and the images seen (`reduce_epoch`),
  so every process records the same history row; validation is sharded the same way and its sums reduced
  (`sum_over_processes`), so early stopping and the divergence checks decide the same on every process;
- batch normalisation: on GPUs the layers become SyncBatchNorm, whose statistics are those of the global
  batch, as in one process; on CPUs PyTorch's SyncBatchNorm does not run, so each process normalises with
  the statistics of its own batch_size / N images (and rank 0's running statistics are kept);
- dropout masks and augmentation parameters come from per-process random streams (`start`), so the parts
  of one batch do not repeat each other's draws;
- process 0 (the main process) alone writes the run folder, checkpoints and report, and evaluates the test
  set; the others write nothing and get the published folder's path from it (`announce`/`published`)."""

from __future__ import annotations

import atexit
import datetime
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.training.divergence import DivergenceGuard
from cnnlab.training.interrupt import StopRequest
from cnnlab.training.session import EpochProgress, TrainingSession
from cnnlab.training.settings import TrainSection
from cnnlab.training.step import TrainingStep

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
# how long the other processes wait for the main one to evaluate the test set and write the report
PUBLISH_TIMEOUT = datetime.timedelta(hours=2)


@dataclass
class Distributed:
    """This process's place in a torchrun job; `join` connects it to the others."""

    rank: int
    world_size: int
    local_rank: int
    device: Optional[torch.device] = None
    control: Any = None  # a gloo group for messages between the CPUs (the path of the published run folder)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def join(self, device: torch.device) -> torch.device:
        """This process's device (GPU LOCAL_RANK when training on GPUs) and the process group: NCCL between
        GPUs, gloo between CPUs (joined once per process; later runs of the same process reuse it)."""
        if device.type == "cuda":
            if device.index is not None:
                raise ConfigError(f'train.device is "{device}", but under torchrun each process takes the GPU of '
                                  'its LOCAL_RANK: use train.device=auto or cuda.')
            if self.local_rank >= torch.cuda.device_count():
                raise ConfigError(f"torchrun started process LOCAL_RANK={self.local_rank}, but this machine shows "
                                  f"{torch.cuda.device_count()} GPUs: start at most that many (--nproc-per-node).")
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        self.device = device
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            atexit.register(_leave)
        if self.control is None:
            self.control = (dist.new_group(backend="gloo", timeout=PUBLISH_TIMEOUT) if device.type == "cuda"
                            else dist.new_group(timeout=PUBLISH_TIMEOUT))
        return device

    def describe(self, batch_size: int) -> dict:
        """What metrics.json records of the job (key ``distributed``)."""
        on_gpus = self.device is not None and self.device.type == "cuda"
        return {"processes": self.world_size, "backend": "nccl" if on_gpus else "gloo",
                "batch_per_process": batch_size // self.world_size,
                "batch_norm": ("synchronised across processes (SyncBatchNorm): statistics of the global batch"
                               if on_gpus else f"per process: statistics of its {batch_size // self.world_size} "
                               "images (SyncBatchNorm needs GPUs)")}

    def start(self, step: TrainingStep, session: TrainingSession, seed: int) -> None:
        """Before the first step of a `fit`: batch normalisation synchronised on GPUs, the model wrapped in
        DistributedDataParallel for the training steps (validation and saving use the model itself), this
        process's own random streams, and a resumed epoch's running sums counted once (by the main process)."""
        if self.device is not None and self.device.type == "cuda":
            converted = nn.SyncBatchNorm.convert_sync_batchnorm(step.model)
            assert converted is step.model  # the layers are replaced inside the model, which keeps its identity
            step.forward = nn.parallel.DistributedDataParallel(step.model, device_ids=[self.device.index])
        else:
            step.forward = nn.parallel.DistributedDataParallel(step.model)
        stream = int(np.random.SeedSequence([seed, self.rank, session.epochs_done]).generate_state(1)[0])
        torch.manual_seed(stream)  # dropout masks
        if isinstance(getattr(step.augment, "generator", None), torch.Generator):
            step.augment.generator.manual_seed(stream + 1)  # augmentation parameters (flips by image stay shared)
        progress = session.progress
        if progress is not None and not self.is_main:  # a checkpoint's sums so far are the whole job's
            progress.loss_sum.zero_()
            progress.correct.zero_()
            progress.seen = 0

    def share(self, indices: torch.Tensor) -> tuple[torch.Tensor, float]:
        """This process's part of a global batch and the weight of its mean loss (N * part / batch: 1.0 for
        equal parts), so that DDP's average of the gradients is the gradient of the batch's mean loss."""
        part = self.shard(indices)
        return part, len(part) * self.world_size / len(indices)

    def shard(self, indices: torch.Tensor) -> torch.Tensor:
        """This process's part of ``indices`` (near-equal contiguous parts, possibly empty)."""
        return torch.tensor_split(indices, self.world_size)[self.rank]

    def sum_over_processes(self, *values: torch.Tensor) -> list[torch.Tensor]:
        """Each value summed over the processes (one all-reduce, in float64)."""
        total = torch.stack([value.double() for value in values])
        dist.all_reduce(total)
        return list(total.unbind())

    def reduce_epoch(self, progress: EpochProgress, stop: StopRequest, guard: DivergenceGuard) -> bool:
        """At an epoch's end: the running loss, correct count and images seen summed over the processes (one
        all-reduce), so each records the whole batch's row; in the first epoch, the divergence yardstick (the
        first batch's loss) made the same everywhere. Returns whether any process was asked to stop: all
        then stop after this epoch (a request arriving after the all-reduce counts at the next epoch's end)."""
        device = progress.loss_sum.device
        guard.limit()  # reads the first batch's loss
        first = guard.first_loss if guard.first_loss is not None else 0.0
        flags = torch.tensor([float(progress.seen), float(stop.requested), first], dtype=torch.float64, device=device)
        loss_sum, correct, seen, stops, first_sum = self.sum_over_processes(progress.loss_sum, progress.correct, *flags)
        progress.loss_sum, progress.correct, progress.seen = loss_sum, correct, int(seen.item())
        if progress.epoch == 1:
            guard.first_loss = first_sum.item() / self.world_size
        if stops.item() > 0 and not stop.requested:
            stop.request(signal.SIGTERM)  # (for the message: this process itself got no signal)
        return stops.item() > 0

    def announce(self, run_dir: Path) -> Path:
        """The main process: tell the others where the run folder was published; returns it."""
        dist.broadcast_object_list([str(run_dir)], src=0, group=self.control)
        return run_dir

    def published(self) -> Path:
        """The other processes: wait for the main one to publish the run folder; its path."""
        message: list[Optional[str]] = [None]
        dist.broadcast_object_list(message, src=0, group=self.control)
        return Path(str(message[0]))


def torchrun_process(settings: TrainSection) -> Optional[Distributed]:
    """This process's place in a torchrun job of two or more processes, read from torchrun's RANK,
    WORLD_SIZE and LOCAL_RANK (None: one process, trained as always). ConfigError for settings a job
    cannot share: a batch size the processes cannot divide, or torch.compile."""
    if not all(name in os.environ for name in TORCHRUN_VARIABLES):
        return None
    try:
        rank, world_size, local_rank = (int(os.environ[name]) for name in TORCHRUN_VARIABLES)
    except ValueError:
        raise ConfigError(f"RANK, WORLD_SIZE and LOCAL_RANK must be whole numbers (torchrun sets them), not "
                          f"{', '.join(os.environ[name] for name in TORCHRUN_VARIABLES)}.") from None
    if world_size < 2:
        return None
    if settings.batch_size % world_size:
        raise ConfigError(f"train.batch_size {settings.batch_size} is the global batch, shared by the {world_size} "
                          f"processes torchrun started, so it must be a multiple of {world_size}: choose e.g. "
                          f"train.batch_size={max(world_size, settings.batch_size // world_size * world_size)}, "
                          f"or another --nproc-per-node.")
    if settings.compile:
        raise ConfigError("train.compile is not supported under torchrun yet: set train.compile=false (each "
                          "process then trains its part of every batch uncompiled).")
    return Distributed(rank, world_size, local_rank)


def announce(distributed: Optional[Distributed], run_dir: Path) -> Path:
    """``run_dir``, once the main process has written it; under torchrun the other processes, which wait
    for it before they end, are told where it is."""
    return run_dir if distributed is None else distributed.announce(run_dir)


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
