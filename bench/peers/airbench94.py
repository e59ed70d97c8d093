"""Peer: airbench94, Keller Jordan's CIFAR-10 speed baseline, as the `airbench` package from PyPI
(version 0.1.8, a source package only: bench/prepare_gpu_carry.sh builds its wheel), on the arrays
cnnlab trains on.

How it gets our data: airbench's `CifarLoader(path)` reads ``path/train.pt`` and ``path/test.pt``
(``{"images": uint8 N x 32 x 32 x 3, "labels": int64 N, "classes": [...]}``) and downloads CIFAR-10
through torchvision only when they are missing. bench/gpu_bench.py writes cifar10-jpeg's arrays, as
cnnlab loads them, to ``DATA/cifar10/{train,test}.pt``, and this script runs in ``DATA``, because
airbench's `train()` opens its test set by the relative path ``cifar10``.

Code path (airbench/lib_airbench94.py and utils.py of 0.1.8, airbench's documented use): the training
loader train94 builds by default (batch 1024, flip + 2-pixel translate, alternating flips),
`airbench.warmup94(train_loader=...)` (one step, so cuDNN's autotuning is not timed, as its README
does), then `airbench.train94(train_loader=..., verbose=False)` with every other hyperparameter at its
default (9.9 epochs, lr 11.5 per 1024, label smoothing 0.2, lookahead), timed from one CUDA
synchronisation to the next (network construction and whitening initialisation included, as in
airbench's own timer; no evaluation inside). Then `airbench.evaluate(net, test_loader, tta_level=2)`:
the mirror + translate test-time augmentation train94 reports. airbench has no seed argument: the
seed goes to `torch.manual_seed`.

    python bench/peers/airbench94.py --data DATA --seed 0 [--smoke]

--smoke runs on the CPU, 1 epoch at batch 256, with airbench's CUDA calls redirected (events,
synchronize, `.cuda()`, loading to the GPU) and float32 for its float16: it checks the plumbing only,
never a figure.

Prints one JSON line: train_time_s, test_time_s, test_accuracy, epochs, batch_size, airbench."""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import time
from pathlib import Path

import torch
from torch import nn

import airbench
from airbench.lib_airbench94 import hyp


class _CpuEvent:
    """torch.cuda.Event's timing interface on the CPU clock (--smoke only)."""

    def __init__(self, enable_timing: bool = False):
        self.time_s = 0.0

    def record(self) -> None:
        self.time_s = time.perf_counter()

    def elapsed_time(self, end: "_CpuEvent") -> float:
        return 1000 * (end.time_s - self.time_s)


def redirect_cuda_to_cpu() -> None:
    """--smoke only: airbench 0.1.8 calls CUDA directly (net.cuda(), CUDA events, loading to GPU 0) and
    trains in float16, which the CPU runs hundreds of times slower than float32: keep float32 there."""
    load = torch.load
    torch.load = lambda *args, **kwargs: load(*args, **{**kwargs, "map_location": "cpu"})
    nn.Module.cuda = lambda self, device=None: self
    nn.Module.half = lambda self: self
    torch.Tensor.half = lambda self, memory_format=torch.preserve_format: self.float()
    torch.cuda.Event = _CpuEvent
    torch.cuda.synchronize = lambda device=None: None


def code_identity() -> dict:
    """Which airbench ran: its installed version and the SHA-256 of the two files that define airbench94."""
    folder = Path(airbench.__file__).parent
    digest = hashlib.sha256()
    for name in ("lib_airbench94.py", "utils.py"):
        digest.update((folder / name).read_bytes())
    return {"version": importlib.metadata.version("airbench"), "lib_airbench94_and_utils_sha256": digest.hexdigest()}


def synchronized_seconds() -> float:
    torch.cuda.synchronize()
    return time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder holding cifar10/train.pt and cifar10/test.pt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="CPU, 1 epoch at batch 256: plumbing check only")
    args = parser.parse_args()
    if args.smoke:
        redirect_cuda_to_cpu()
    os.chdir(args.data)
    torch.manual_seed(args.seed)
    batch_size = 256 if args.smoke else hyp["opt"]["batch_size"]
    epochs = 1 if args.smoke else hyp["opt"]["train_epochs"]
    train_loader = airbench.CifarLoader("cifar10", train=True, batch_size=batch_size, aug=hyp["aug"], altflip=True)
    test_loader = airbench.CifarLoader("cifar10", train=False, batch_size=2000)
    airbench.warmup94(train_loader=train_loader)
    started = synchronized_seconds()
    net = airbench.train94(train_loader=train_loader, epochs=epochs, verbose=False)
    train_time_s = synchronized_seconds() - started
    test_accuracy = airbench.evaluate(net, test_loader, tta_level=hyp["net"]["tta_level"])
    test_time_s = synchronized_seconds() - started - train_time_s
    print(json.dumps({"train_time_s": train_time_s, "test_time_s": test_time_s, "test_accuracy": test_accuracy,
                      "epochs": epochs, "batch_size": batch_size, "tta_level": hyp["net"]["tta_level"],
                      "train_images": len(train_loader.labels),
                      "test_images": len(test_loader.labels), "seed": args.seed, "airbench": code_identity()}))


if __name__ == "__main__":
    main()
