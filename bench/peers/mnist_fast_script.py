"""Peer for fast/mnist: the best single-file PyTorch script for 99.0% on MNIST that we could write by hand.

What an experienced PyTorch user writes when speed matters: the whole training set normalised
once into one float tensor in memory; batches are index slices of a random permutation (no
Dataset, no DataLoader); a 3-stage batch-norm CNN; Nesterov SGD with OneCycleLR; label smoothing;
no validation pass. Optional bfloat16 autocast and channels-last (--bf16, --channels-last), which
this CPU's AMX units make faster, so the peer can use every trick cnnlab uses.

How it was tuned: bench/tune_mnist_script.py runs a small grid (1 or 2 epochs, batch 64/128/256
with peak lr 0.05/0.1/0.2) for two seeds (results in BENCHMARKS.md). Every two-epoch setting reached
99.0% for both seeds, in the same time within this machine's noise; the defaults are one of them
(batch 128, as fast/mnist). One epoch lands around 99.0%, not reliably above it.

    python bench/peers/mnist_fast_script.py --data DATA.npz [--epochs 2] [--bf16 --channels-last]

Prints one JSON line: train_time_s, test_accuracy."""

from __future__ import annotations

import argparse
import contextlib
import json
import time

import numpy as np
import torch
from torch import nn


def network() -> nn.Module:
    def stage(inputs: int, outputs: int) -> list[nn.Module]:
        return [nn.Conv2d(inputs, outputs, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(outputs), nn.MaxPool2d(2)]

    return nn.Sequential(*stage(1, 32), *stage(32, 64), *stage(64, 128), nn.Flatten(), nn.Linear(128 * 3 * 3, 10))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    arrays = np.load(args.data)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    to_float = lambda images: torch.from_numpy(images).float().div_(255).contiguous(memory_format=memory_format)
    x_train, y_train = to_float(arrays["train_images"]), torch.from_numpy(arrays["train_labels"]).long()
    x_test, y_test = to_float(arrays["test_images"]), torch.from_numpy(arrays["test_labels"]).long()
    model = network().to(memory_format=memory_format)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps = len(x_train) // args.batch_size
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.epochs * steps,
                                                   pct_start=0.25)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if args.bf16 else contextlib.nullcontext

    started = time.perf_counter()
    for _ in range(args.epochs):
        model.train()
        order = torch.randperm(len(x_train))
        for step in range(steps):
            batch = order[step * args.batch_size:(step + 1) * args.batch_size]
            with autocast():
                loss = criterion(model(x_train[batch]).float(), y_train[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    train_time = time.perf_counter() - started

    model.eval()
    with torch.no_grad(), autocast():
        predictions = torch.cat([model(x_test[start:start + 2000]).argmax(1) for start in range(0, len(x_test), 2000)])
    print(json.dumps({"train_time_s": train_time, "test_accuracy": (predictions == y_test).float().mean().item()}))


if __name__ == "__main__":
    main()
