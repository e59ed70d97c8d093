"""Inference: validation loss and accuracy during training; on the test set, probabilities, loss,
accuracy and the saved predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from cnnlab import runs
from cnnlab.augment.test_time import predict_with_views
from cnnlab.data.device_images import DeviceImages
from cnnlab.training.distributed import Distributed


@torch.no_grad()
def evaluate_indices(model: nn.Module, data: DeviceImages, indices: torch.Tensor, batch_size: int,
                     distributed: Distributed | None = None) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``data[indices]`` (eval mode, no augmentation);
    the model's training mode is left as it was. ``distributed`` (torchrun): each process evaluates its
    part of ``indices`` and the sums are reduced, so every process gets the same two numbers."""
    count = len(indices)
    if distributed is not None:
        indices = distributed.shard(indices)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=data.device, dtype=torch.float64)
    correct = torch.zeros((), device=data.device, dtype=torch.long)
    for start in range(0, len(indices), batch_size):
        images, labels = data.batch(indices[start:start + batch_size])
        logits = model(images)
        loss_sum += nn.functional.cross_entropy(logits.float(), labels, reduction="sum").double()
        correct += (logits.argmax(1) == labels).sum()
    model.train(was_training)
    if distributed is not None:
        loss_sum, correct = distributed.sum_over_processes(loss_sum, correct)
    return loss_sum.item() / count, correct.item() / count


@torch.no_grad()
def predict_probabilities(model: nn.Module, data: DeviceImages, batch_size: int = 1024,
                          test_time: str = "none", test_time_below: float | None = None) -> np.ndarray:
    """Softmax probabilities (N, K) for every image in ``data``, in order, in eval mode; with
    ``test_time`` "flip" or "flip_shift" the mean over test-time views (never augmented otherwise), for
    the images whose plain top probability is under ``test_time_below`` only, when it is given."""
    model.eval()
    outputs = []
    indices = torch.arange(len(data), device=data.device)
    for start in range(0, len(data), batch_size):
        images, _ = data.batch(indices[start:start + batch_size])
        outputs.append(predict_with_views(model, images, test_time, test_time_below).cpu())
    return torch.cat(outputs).numpy()


def test_metrics(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Test accuracy (0..1) and mean cross-entropy from saved probabilities."""
    true_probability = probabilities[np.arange(len(labels)), labels]
    loss = float(-np.log(np.clip(true_probability, 1e-12, 1.0)).mean()) + 0.0  # + 0.0 turns -0.0 into 0.0
    accuracy = float((probabilities.argmax(1) == labels).mean())
    return {"test_accuracy": accuracy, "test_loss": loss}


def save_predictions(run_dir: Path, probabilities: np.ndarray, labels: np.ndarray, class_names: list[str],
                     test_images: np.ndarray, example_indices: np.ndarray) -> None:
    """Write predictions.npz and the test images the analysis shows (examples.npz)."""
    runs.write_npz_atomic(
        run_dir / runs.PREDICTIONS_FILE,
        probabilities=probabilities.astype(np.float32),
        labels=labels.astype(np.int64),
        class_names=np.array(class_names, dtype=str),
    )
    example_indices = np.asarray(example_indices, dtype=np.int64)
    runs.write_npz_atomic(run_dir / runs.EXAMPLES_FILE, indices=example_indices, images=test_images[example_indices])
