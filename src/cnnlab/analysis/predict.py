"""Predicting with a trained run: your own images (files, folders, archives, Pillow images, arrays or
tensors) through the run's network, prepared as its test images were, to class probabilities.

The probabilities are the ones the run's own evaluation computes (`training.evaluation`): the same
uint8-to-float normalisation (`DeviceImages.normalize`), the run's test-time views
(`augment.test_time.predict_with_views`), eval mode, and, on the kind of device the run was evaluated
on, the precision and memory layout it recorded (``fast_path`` in metrics.json), so that a test image
written to a PNG file gets its row of predictions.npz back (bfloat16 rounding included). On another
kind of device the automatic choice for that device is used. Images are decoded on a few threads
(`data.user_images`) and predicted in batches on the device, under `torch.inference_mode`.

    predictions = Predictor.from_run("runs/digits-cnn").predict(["seven.png", "photos/"])
    predictions.top_k(3)  # [[("7", 0.97), ("1", 0.02), ("9", 0.004)], ...]
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from PIL import Image
from torch import nn

from cnnlab import runs
from cnnlab.analysis.run_files import read_metrics
from cnnlab.analysis.trained_run import TrainedModel, load_trained_model
from cnnlab.augment.test_time import TEST_TIME_VIEWS, predict_with_views
from cnnlab.data.device_images import DeviceImages
from cnnlab.data.images import UnreadableImage
from cnnlab.data.user_images import UserImage, decode_user_image, find_user_images
from cnnlab.errors import CnnlabError, DataError
from cnnlab.output_folders import output_kind
from cnnlab.training.precision import AUTOCAST_DTYPES, ComputePlan, automatic_compute_plan

MAX_DECODE_THREADS = 8  # Pillow decodes and resizes without holding the GIL
MAX_CHUNK_BYTES = 256 << 20  # file contents read from archives held at once while they are decoded
IMAGE_CHANNELS = (1, 3, 4)


@dataclass
class Predictions:
    """Class probabilities of the images that could be read, one row each, in the order given (a folder's
    images sorted by path); the files that could not be read, with the reason."""

    probabilities: np.ndarray  # (N, n_classes) float32, rows sum to 1
    class_names: list[str]
    sources: list[str]  # the file path (or ``archive.zip:member``, ``<array 3>``) of each row
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why) of each unreadable file

    def __len__(self) -> int:
        return len(self.sources)

    def top_k(self, k: int) -> list[list[tuple[str, float]]]:
        """Per row, the ``k`` most probable (class name, probability), most probable first (all classes
        when ``k`` is larger; ties in class order)."""
        if k < 1:
            raise CnnlabError(f"top_k needs k of at least 1 (classes shown per image), not {k}.")
        order = np.argsort(-self.probabilities, axis=1, kind="stable")[:, :k]
        return [[(self.class_names[index], float(row[index])) for index in indices]
                for row, indices in zip(self.probabilities, order)]

    def labels(self) -> list[str]:
        """The most probable class name of each row."""
        return [self.class_names[index] for index in self.probabilities.argmax(axis=1)] if len(self) else []


class Predictor:
    """A trained run's network on a device, ready to classify images as the run's evaluation did."""

    def __init__(self, trained: TrainedModel, device: torch.device, plan: ComputePlan, test_time: str = "none",
                 test_time_below: float | None = None):
        self.class_names: list[str] = list(trained.class_names)
        self.input_shape = trained.input_shape  # (C, H, W) every image is converted and resized to
        self.device = device
        self.plan = plan
        self.test_time, self.test_time_below = test_time, test_time_below
        self.module: nn.Module = plan.prepare(trained.module).eval()
        channels, height, width = trained.input_shape
        # the evaluation's own normalisation (a fused multiply-add, channels-last when the plan says so)
        self._inputs = DeviceImages(np.zeros((0, channels, height, width), np.uint8), np.zeros(0, np.int64),
                                    trained.normalization, device, plan.channels_last)

    @classmethod
    def from_run(cls, run_dir: Path | str, device: str = "auto") -> "Predictor":
        """The network of the run in ``run_dir`` on ``device`` ("auto": the GPU when there is one, else the
        CPU; "cpu", "cuda", "cuda:N"). Raises CnnlabError for a folder that is not a finished run."""
        run_dir = runs.require_run_dir(Path(run_dir))
        if output_kind(run_dir) == "seeds":
            seeds = sorted(path.name for path in run_dir.glob("seed-*") if path.is_dir())
            raise CnnlabError(f"{run_dir} is a multi-seed folder: each of its seeds ({', '.join(seeds) or 'none'}) "
                              f"is a model of its own. Give one of them, e.g. {run_dir / (seeds or ['seed-0'])[0]}.")
        trained = load_trained_model(run_dir)
        metrics = read_metrics(run_dir)
        chosen = choose_device(device)
        plan = inference_plan(metrics, chosen, trained)
        below = (trained.config.get("augment") or {}).get("test_time_below")
        return cls(trained, chosen, plan, recorded_test_time(metrics, trained.config), below)

    def predict(self, inputs: Any, batch_size: int = 256) -> Predictions:
        """Class probabilities of ``inputs``: a path (an image file, a folder of images, a .zip/.tar
        archive), a Pillow image, a uint8 array (H, W) or (H, W, C), a uint8 tensor (C, H, W), or a
        sequence of these; or a batch: an array (N, H, W[, C]) or a tensor (N, C, H, W). Files that
        cannot be read are in ``skipped``; a wrong kind of input raises DataError."""
        if batch_size < 1:
            raise CnnlabError(f"batch_size must be at least 1 image, not {batch_size}.")
        rows: list[np.ndarray] = []
        sources: list[str] = []
        skipped: list[tuple[str, str]] = []
        workers = decode_threads()
        with ThreadPoolExecutor(workers) if workers > 1 else _NoPool() as pool:
            for chunk in _chunks(user_images(inputs), batch_size):
                images, labels = self._decode(chunk, pool, skipped)
                if labels:
                    rows.append(self.probabilities(np.stack(images)))
                    sources += labels
        probabilities = np.concatenate(rows) if rows else np.zeros((0, len(self.class_names)), np.float32)
        return Predictions(probabilities, list(self.class_names), sources, skipped)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N, K) float32 of uint8 images (N, C, H, W) already of the input shape."""
        batch = torch.from_numpy(np.ascontiguousarray(images)).to(self.device)
        with torch.inference_mode(), self.plan.autocast():
            probabilities = predict_with_views(self.module, self._inputs.normalize(batch), self.test_time,
                                               self.test_time_below)
        return probabilities.float().cpu().numpy()

    def _decode(self, chunk: list[UserImage], pool: Any,
                skipped: list[tuple[str, str]]) -> tuple[list[np.ndarray], list[str]]:
        channels, height, width = self.input_shape
        readable = []
        for entry in chunk:
            if entry.problem is None:
                readable.append(entry)
            else:
                skipped.append((entry.label, entry.problem))
        images, labels = [], []
        for entry, result in zip(readable, pool.map(_decode_or_reason, readable, [(height, width)] * len(readable),
                                                    [channels] * len(readable))):
            if isinstance(result, str):
                skipped.append((entry.label, result))
            else:
                images.append(result)
                labels.append(entry.label)
        return images, labels


def user_images(inputs: Any) -> Iterator[UserImage]:
    """Each image ``inputs`` holds (see `Predictor.predict`), labelled, files found lazily."""
    if isinstance(inputs, (np.ndarray, torch.Tensor)) and _is_batch(inputs):
        yield from (UserImage(f"<{_kind(inputs)} {row}>", _pixels(image)) for row, image in enumerate(inputs))
        return
    one = isinstance(inputs, (str, Path, Image.Image, np.ndarray, torch.Tensor))
    items: Iterable[Any] = [inputs] if one else inputs
    for position, item in enumerate(items):
        if isinstance(item, (str, Path)):
            yield from find_user_images(Path(item).expanduser())
        elif isinstance(item, Image.Image):
            yield UserImage(f"<image {position}>", item)
        elif isinstance(item, (np.ndarray, torch.Tensor)) and not _is_batch(item):
            yield UserImage(f"<{_kind(item)} {position}>", _pixels(item))
        else:
            raise DataError(f"Item {position} to predict is {_describe(item)}; give image file paths, folders, "
                            "archives, Pillow images, uint8 arrays (H, W[, C]) or uint8 tensors (C, H, W), or one "
                            "batch: an array (N, H, W[, C]) or a tensor (N, C, H, W).")


def choose_device(name: str) -> torch.device:
    """"auto": the GPU when one is visible, else the CPU; otherwise the device named, checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CnnlabError(f'--device {name}: no CUDA GPU is visible. Use --device auto or cpu.')
    try:
        return torch.device(name)
    except RuntimeError:
        raise CnnlabError(f'--device "{name}" is not a device name: use auto, cpu, cuda or cuda:N.') from None


def inference_plan(metrics: dict[str, Any], device: torch.device, trained: TrainedModel) -> ComputePlan:
    """The precision and layout the run's evaluation used (metrics.json ``fast_path``) when ``device`` is of
    the kind it ran on, so its probabilities come back; otherwise the automatic choice for ``device``."""
    recorded = metrics.get("fast_path")
    run_device = str(metrics.get("device") or "").split(":")[0]
    precisions = ("fp32", *AUTOCAST_DTYPES)
    if isinstance(recorded, dict) and run_device == device.type and recorded.get("precision") in precisions:
        return ComputePlan(device, recorded["precision"], bool(recorded.get("channels_last")),
                           reason="the run's own evaluation", depthwise_in_float32=False)
    return automatic_compute_plan(device, trained.input_shape, trained.module)


def recorded_test_time(metrics: dict[str, Any], config: dict[str, Any]) -> str:
    """The run's test-time views (``augment.test_time``): "none", "flip" or "flip_shift"."""
    augment = config.get("augment") if isinstance(config.get("augment"), dict) else {}
    mode = metrics.get("test_time_augmentation") or (augment or {}).get("test_time") or "none"
    if mode not in TEST_TIME_VIEWS:
        raise CnnlabError(f'The run records the test-time views "{mode}", which cnnlab does not know '
                          f"({', '.join(TEST_TIME_VIEWS)}); its metrics.json or config.yaml is damaged.")
    return str(mode)


def decode_threads() -> int:
    """Threads that decode images: the CPUs this process may run on, at most `MAX_DECODE_THREADS`."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(MAX_DECODE_THREADS, available))


def _decode_or_reason(entry: UserImage, size: tuple[int, int], channels: int) -> np.ndarray | str:
    try:
        return decode_user_image(entry.source, size, channels)  # type: ignore[arg-type]
    except UnreadableImage as error:
        return str(error)


def _chunks(entries: Iterator[UserImage], count: int) -> Iterator[list[UserImage]]:
    """Lists of at most ``count`` entries, and of file contents from archives at most `MAX_CHUNK_BYTES`."""
    while True:
        chunk, held = [], 0
        for entry in islice(entries, count):
            chunk.append(entry)
            held += len(entry.source) if isinstance(entry.source, bytes) else 0
            if held >= MAX_CHUNK_BYTES:
                break
        if not chunk:
            return
        yield chunk


def _is_batch(item: np.ndarray | torch.Tensor) -> bool:
    if item.ndim == 4:
        return True
    # a 3-D array is one (H, W, C) image when its last axis could be channels, else (N, H, W) grey images
    return isinstance(item, np.ndarray) and item.ndim == 3 and item.shape[2] not in IMAGE_CHANNELS


def _pixels(item: np.ndarray | torch.Tensor) -> np.ndarray:
    """An image as a NumPy array (H, W[, C]): tensors are (C, H, W) or (H, W), on any device."""
    if isinstance(item, np.ndarray):
        return item
    array = item.detach().cpu().numpy()
    return array.transpose(1, 2, 0) if array.ndim == 3 else array


def _kind(item: np.ndarray | torch.Tensor) -> str:
    return "array" if isinstance(item, np.ndarray) else "tensor"


def _describe(item: Any) -> str:
    if isinstance(item, (np.ndarray, torch.Tensor)):
        return f"a {item.ndim}-dimensional {_kind(item)} shaped {tuple(item.shape)} inside a sequence"
    return f"a {type(item).__name__}"


class _NoPool:
    """`ThreadPoolExecutor`'s map, on this thread: one CPU gains nothing from threads."""

    def __enter__(self) -> "_NoPool":
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    @staticmethod
    def map(function: Any, *iterables: Iterable[Any]) -> Iterator[Any]:
        return map(function, *iterables)


__all__ = ["Predictions", "Predictor", "choose_device", "decode_threads", "inference_plan", "recorded_test_time",
           "user_images"]
