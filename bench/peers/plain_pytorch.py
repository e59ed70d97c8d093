"""Peer: the lab reports' own PyTorch code style, for the same model and recipe as cnnlab.

A torchvision-style Dataset that turns each stored uint8 image into a PIL image and then a tensor
(`transforms.ToTensor()`, exactly what `torchvision.datasets.MNIST/CIFAR10` do per item), a
`DataLoader(batch_size, shuffle=True)` with the default num_workers=0 (workers would compete with
the training threads on a 2-core machine), and the textbook loop: zero_grad, forward, loss,
backward, step. The network is the same nn.Module cnnlab builds for the zoo name, so only the
training machinery differs. float32, PyTorch's default Adam.

    python bench/peers/plain_pytorch.py --data DATA.npz --model keras/mnist/model1 --epochs 2 --seed 0

Prints one JSON line: train_time_s (the epochs only), epoch_times_s, test_accuracy."""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from cnnlab.models import create_model


class StoredImages(Dataset):
    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels
        self.transform = transforms.ToTensor()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = self.images[index]
        picture = Image.fromarray(image[0], mode="L") if image.shape[0] == 1 else Image.fromarray(image.transpose(1, 2, 0))
        return self.transform(picture), int(self.labels[index])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    arrays = np.load(args.data)
    train = DataLoader(StoredImages(arrays["train_images"], arrays["train_labels"]), batch_size=args.batch_size,
                       shuffle=True)
    test = DataLoader(StoredImages(arrays["test_images"], arrays["test_labels"]), batch_size=1000)
    model = create_model(args.model, arrays["train_images"].shape[1:], 10).module
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    criterion = nn.CrossEntropyLoss()

    epoch_times = []
    for _ in range(args.epochs):
        started = time.perf_counter()
        model.train()
        for images, labels in train:
            optimizer.zero_grad()
            loss = criterion(model(images), labels)
            loss.backward()
            optimizer.step()
        epoch_times.append(time.perf_counter() - started)

    model.eval()
    correct = 0
    with torch.no_grad():
        for images, labels in test:
            correct += (model(images).argmax(1) == labels).sum().item()
    print(json.dumps({"train_time_s": sum(epoch_times), "epoch_times_s": epoch_times,
                      "test_accuracy": correct / len(test.dataset)}))


if __name__ == "__main__":
    main()
