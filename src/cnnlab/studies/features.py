"""`cnnlab features`: penultimate-layer features of a trained run or a pretrained backbone for a
dataset's train and test images, then a kNN classifier and a linear probe on them, written as
metrics.json and a small report (report 003's kNN section).

A run directory gives its network rebuilt from config.yaml + model.safetensors, read at the input
of its last Dense/Linear layer; a backbone name gives ``cnnlab.models.pretrained.load_backbone``.
Images go to the device as uint8 in batches and are converted there (grey to three channels,
resized with ``F.interpolate``, normalised as the network expects). A backbone's features are
cached in the same file `cnnlab train` uses for a frozen backbone (``cnnlab.training.feature_cache.feature_cache_file``:
keyed by dataset pixels, backbone, weights digest, input size, truncation and normalisation), so
either command reuses what the other computed; a run's features are computed every time."""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from cnnlab import runs
from cnnlab.report import plots
from cnnlab.errors import CnnlabError, ConfigError
from cnnlab.analysis.probes import ProbeResult, confusion_matrix, knn_probe, linear_probe
from cnnlab.report.document import (
    Block, Callout, FigureWriter, Heading, ImageRow, Paragraph, Table, format_percent, format_seconds,
    render_html, render_markdown,
)


@dataclass
class FeatureExtractor:
    """Maps uint8 images (N, C, H, W) on the device to features (N, feature_dim)."""

    name: str
    kind: str  # "run" or "backbone"
    module: nn.Module
    prepare: Callable[[torch.Tensor], torch.Tensor]  # uint8 batch -> the network's float input
    weights_digest: str
    weights_source: str
    dataset_config: dict[str, Any]  # image_size and normalisation a run was trained with, else {}
    input_size: int | None = None  # backbones: the size images are resized to
    backbone: Any = None  # backbones: the loaded `cnnlab.models.pretrained.Backbone` (for the feature cache)

    def __call__(self, images_uint8: torch.Tensor) -> torch.Tensor:
        return self.module(self.prepare(images_uint8)).flatten(1)


def open_extractor(source: str, weights: Path | None, device: torch.device,
                   input_size: int | None = None) -> FeatureExtractor:
    """A run directory (an existing folder) or a backbone name (resizing images to ``input_size``,
    default the backbone's own); ConfigError when it is neither."""
    if Path(source).is_dir():
        return _run_extractor(Path(source), weights, device)
    try:
        from cnnlab.models import pretrained
    except ImportError:  # the backbone module ships separately in some checkouts
        raise ConfigError(f'"{source}" is not a run directory, and this cnnlab has no pretrained backbones '
                          "(cnnlab.models.pretrained is missing). Give a folder written by `cnnlab train`.") from None
    try:
        pretrained.check_backbone_name(source)
    except ConfigError as error:
        raise ConfigError(f"No run directory {source} exists, and it is not a backbone name either: {error} "
                          "For a trained run, give the folder `cnnlab train` printed.") from None
    backbone = pretrained.load_backbone(source, weights=weights)
    module = backbone.module.to(device).eval()
    size = input_size or backbone.input_size
    mean = torch.tensor(backbone.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std = torch.tensor(backbone.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)

    def prepare(images: torch.Tensor) -> torch.Tensor:
        pixels = _to_channels(images.float() / 255, 3)
        return (_resize(pixels, (size, size)) - mean) / std

    return FeatureExtractor(backbone.name, "backbone", module, prepare, backbone.weights_digest,
                            backbone.weights_source, {}, size, backbone)


def _run_extractor(run_dir: Path, weights: Path | None, device: torch.device) -> FeatureExtractor:
    from cnnlab.analysis.trained_run import load_trained_model

    trained = load_trained_model(run_dir, weights=weights)
    channels, height, width = trained.input_shape
    network = trained.module.to(device).eval()

    def prepare(images: torch.Tensor) -> torch.Tensor:
        return trained.normalize(_resize(_to_channels(images.float(), channels), (height, width)))

    dataset = trained.config.get("dataset") if isinstance(trained.config.get("dataset"), dict) else {}
    return FeatureExtractor(str(run_dir), "run", PenultimateFeatures(network), prepare,
                            _file_digest(trained.weights_path), f"file: {trained.weights_path}", dict(dataset or {}))


def _file_digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


class PenultimateFeatures(nn.Module):
    """A classifier's input to its last Dense/Linear layer (the features it classifies)."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network
        linear = [module for module in network.modules() if isinstance(module, nn.Linear)]
        if not linear:
            raise CnnlabError("The run's model has no Dense/Linear layer, so it has no penultimate features to "
                              "read. Use a model that ends in a Dense layer, or a backbone name.")
        self.last_linear = linear[-1]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        captured: list[torch.Tensor] = []
        handle = self.last_linear.register_forward_pre_hook(lambda module, inputs: captured.append(inputs[0]))
        try:
            self.network(images)
        finally:
            handle.remove()
        return captured[-1]


def _to_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    if images.shape[1] == channels:
        return images
    if images.shape[1] == 1:
        return images.expand(-1, channels, -1, -1)
    if channels == 1:
        return images.mean(dim=1, keepdim=True)
    raise CnnlabError(f"The images have {images.shape[1]} channels but the network takes {channels}; "
                      "give a dataset with grey or RGB images.")


def _resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    shrinking = images.shape[-1] > size[1]
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=shrinking)


@torch.no_grad()
def extract_features(extractor: FeatureExtractor, images: np.ndarray, batch_size: int, device: torch.device,
                     description: str, show_progress: bool = True) -> np.ndarray:
    """Features (N, feature_dim) float32 of uint8 ``images`` (N, C, H, W), in order."""
    from cnnlab.training.precision import automatic_fast_path

    chunks = []
    bar = tqdm(total=len(images), desc=description, unit="img", leave=False,
               disable=not show_progress or not sys.stderr.isatty())
    # bfloat16 where the hardware runs convolutions faster in it (GPUs, CPUs with AMX)
    fast = automatic_fast_path(device, (3, 224, 224), extractor.module)
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])).to(device)
        with fast.autocast():
            chunks.append(extractor(batch).float().cpu())
        bar.update(len(batch))
    bar.close()
    return torch.cat(chunks).numpy() if chunks else np.zeros((0, 0), np.float32)


def run_features(source: str, dataset_name: str, out: Path | None = None, data_dir: Path | None = None,
                 subset: int | None = None, test_subset: int | None = None, batch_size: int = 128,
                 weights: Path | None = None, device_name: str = "auto", show_progress: bool = True,
                 input_size: int | None = None, use_cache: bool = True) -> Path:
    """Extract features (a backbone's from the shared feature cache when it has them, unless
    ``use_cache`` is false), fit both probes, write metrics.json, report.md and report.html; return
    the folder."""
    from cnnlab.data import DatasetConfig, load_dataset
    from cnnlab.experiment import resolve_device

    started = time.perf_counter()
    device = resolve_device(device_name)
    extractor = open_extractor(source, weights, device, input_size)
    if input_size and extractor.kind == "run":
        raise ConfigError("--input-size applies to pretrained backbones only: a trained run sees images at the "
                          "size it was trained on. Leave --input-size out.")
    # the run's own image size when it is the run's dataset (its images then match the network as trained)
    settings = {key: extractor.dataset_config[key] for key in ("image_size",)
                if extractor.dataset_config.get(key) is not None and extractor.dataset_config.get("name") == dataset_name}
    dataset = load_dataset(DatasetConfig(name=dataset_name, subset=subset, test_subset=test_subset, **settings), data_dir)
    folder = runs.make_run_dir(f"features-{_slug(Path(source).name or source)}-{_slug(dataset_name)}", out)
    _log(show_progress, f"{dataset.name}: {len(dataset.train_labels)} train, {len(dataset.test_labels)} test images; "
                        f"features of {extractor.name} on {device}")
    extraction_started = time.perf_counter()
    cache_path = _cache_path(extractor, dataset) if extractor.kind == "backbone" else None
    cached = _read_cached(cache_path, dataset) if cache_path is not None and use_cache else None
    if cached is not None:
        train, test = cached
        _log(show_progress, f"features read from the cache {cache_path}")
    else:
        train = extract_features(extractor, dataset.train_images, batch_size, device, "train features", show_progress)
        test = extract_features(extractor, dataset.test_images, batch_size, device, "test features", show_progress)
        if cache_path is not None:
            from cnnlab.training.feature_cache import write_feature_cache

            write_feature_cache(cache_path, torch.from_numpy(train), torch.from_numpy(test))
    extraction_time_s = time.perf_counter() - extraction_started
    _log(show_progress, f"features {train.shape[1]}-d in {extraction_time_s:.1f}s; fitting kNN and linear probe")
    knn = knn_probe(train, dataset.train_labels, test, dataset.test_labels, dataset.n_classes)
    linear = linear_probe(train, dataset.train_labels, test, dataset.test_labels)
    metrics = {
        "source": source, "kind": extractor.kind, "dataset": dataset_name, "data_source": dataset.source,
        "knn_accuracy": knn.accuracy, "linear_accuracy": linear.accuracy, "feature_dim": int(train.shape[1]),
        "k": knn.details["k"], "knn_validation_accuracy_by_k": knn.details["validation_accuracy_by_k"],
        "linear_C": linear.details["C"],
        "linear_validation_accuracy_by_C": linear.details["validation_accuracy_by_C"],
        "linear_converged": linear.details["converged"], "linear_iterations": linear.details["iterations"],
        "linear_max_iter": linear.details["max_iter"], "train_size": len(dataset.train_labels),
        "test_size": len(dataset.test_labels), "n_classes": dataset.n_classes, "image_shape": list(dataset.input_shape),
        "extraction_time_s": extraction_time_s, "features_from_cache": cached is not None,
        "feature_cache": str(cache_path) if cache_path is not None else None, "knn_fit_time_s": knn.fit_time_s,
        "linear_fit_time_s": linear.fit_time_s, "time_s": time.perf_counter() - started,
        "weights_source": extractor.weights_source, "weights_digest": extractor.weights_digest,
        "device": str(device), "batch_size": batch_size, "input_size": extractor.input_size,
        "environment": runs.capture_environment(str(device), None),
    }
    runs.write_json_atomic(folder / runs.METRICS_FILE, metrics)
    write_features_report(folder, metrics, dataset.classes, dataset.test_labels, {"kNN": knn, "Linear probe": linear})
    _log(show_progress, f"kNN (k={knn.details['k']}) {knn.accuracy:.2%}, linear probe {linear.accuracy:.2%}")
    return folder


def _cache_path(extractor: FeatureExtractor, dataset) -> Path:
    """The shared feature-cache file for a backbone's features of ``dataset`` (as `cnnlab train` names it)."""
    from cnnlab.experiment import dataset_identity
    from cnnlab.training.feature_cache import feature_cache_file, normalization_for_backbone

    backbone = extractor.backbone
    normalization = normalization_for_backbone(backbone.mean, backbone.std, dataset.input_shape[0])
    return feature_cache_file(backbone.name, backbone.weights_path, backbone.weights_source, extractor.input_size,
                              len(getattr(backbone.module, "blocks", ())), normalization, dataset_identity(dataset),
                              dataset.test_images)


def _read_cached(path: Path, dataset) -> tuple[np.ndarray, np.ndarray] | None:
    """Cached train and test features when they exist and have one row per image."""
    from cnnlab.training.feature_cache import read_feature_cache

    cached = read_feature_cache(path)
    if cached is None or len(cached["train"]) != len(dataset.train_labels) or len(cached["test"]) != len(dataset.test_labels):
        return None
    return cached["train"].float().numpy(), cached["test"].float().numpy()


def write_features_report(folder: Path, metrics: dict[str, Any], class_names: list[str], test_labels: np.ndarray,
                          probes: dict[str, ProbeResult]) -> tuple[Path, Path]:
    """report.md and a self-contained report.html with the accuracies and confusion matrices."""
    figures = FigureWriter(folder)
    knn_rows = [[str(k), format_percent(value)] for k, value in metrics["knn_validation_accuracy_by_k"].items()]
    blocks: list[Block] = [
        Heading(f"Features: {metrics['source']} on {metrics['dataset']}", 1),
        Paragraph("Penultimate-layer features of the network, frozen, for every train and test image; then two "
                  "classifiers fitted on the training features only. kNN: majority vote of the k most similar "
                  "training images (cosine similarity), k chosen on a 10% validation share of the training "
                  "features. Linear probe: multinomial logistic regression (lbfgs) on standardised features, "
                  "its L2 strength (1/C) chosen on the same validation share."),
        Table(["Metric", "Value"], [
            ["kNN test accuracy", f"{format_percent(metrics['knn_accuracy'])} (k = {metrics['k']})"],
            ["Linear probe test accuracy", f"{format_percent(metrics['linear_accuracy'])} (C = {metrics['linear_C']:g})"],
            ["Feature dimension", str(metrics["feature_dim"])],
            ["Train / test images", f"{metrics['train_size']:,} / {metrics['test_size']:,}"],
            ["Feature extraction", format_seconds(metrics["extraction_time_s"])
             + (" (read from the feature cache)" if metrics.get("features_from_cache") else "")],
            ["kNN (choose k, classify)", format_seconds(metrics["knn_fit_time_s"])],
            ["Linear probe fit", format_seconds(metrics["linear_fit_time_s"])],
            ["Total time", format_seconds(metrics["time_s"])],
            ["Weights", f"{metrics['weights_source']} (sha256 {metrics['weights_digest']})"],
            ["Device", str(metrics["device"])],
        ]),
    ]
    if not metrics["linear_converged"]:
        blocks.append(Callout(f"The linear probe stopped at its {metrics['linear_max_iter']}-iteration limit before "
                              "converging; its accuracy is a slight underestimate."))
    if knn_rows:
        blocks += [Heading("Choosing k", 3), Table(["k", "Validation accuracy"], knn_rows)]
    c_rows = [[c, format_percent(value)] for c, value in metrics["linear_validation_accuracy_by_C"].items()]
    if c_rows:
        blocks += [Heading("Choosing C", 3), Table(["C", "Validation accuracy"], c_rows)]
    n_classes = len(class_names)
    blocks += [Heading("Confusion matrices"), ImageRow([
        figures.add(f"confusion_{_slug(label).lower()}", plots.plot_confusion(
            confusion_matrix(test_labels, result.predictions, n_classes), class_names, title=label),
            f"{label}: rows true class, columns predicted")
        for label, result in probes.items()])]
    markdown_path, html_path = folder / "report.md", folder / "report.html"
    runs.write_text_atomic(markdown_path, render_markdown(blocks))
    runs.write_text_atomic(html_path, render_html(blocks, f"cnnlab features: {metrics['source']}", figures.pngs))
    return markdown_path, html_path


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "features"


def _log(enabled: bool, text: str) -> None:
    if enabled:
        print(text, file=sys.stderr, flush=True)
