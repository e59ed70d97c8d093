"""`cnnlab features`: penultimate-layer features of a trained run or a pretrained backbone for a
dataset's train and test images, then a kNN classifier and a linear probe on them, written as
metrics.json and a small report (report 003's kNN section).

A run directory gives its network rebuilt from config.yaml + model.safetensors, read at the input
of its last Dense/Linear layer; images go to the device as uint8 in batches and are converted there
(grey to three channels or back, resized with ``F.interpolate``, normalised as the run recorded).
A backbone name gives the frozen backbone `cnnlab train` uses (``frozen_backbone``), whose features
come from ``cnnlab.training.feature_cache.backbone_features``: the one computation of frozen-backbone
features and its cache, shared with `cnnlab train`, so either command reuses what the other computed;
a run's features are computed every time."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab import output_folders, runs
from cnnlab.analysis.interpretation import confusion_matrix
from cnnlab.analysis.probes import ProbeResult, knn_probe, linear_probe
from cnnlab.analysis.trained_run import load_trained_model
from cnnlab.data import Dataset, DatasetConfig, load_dataset
from cnnlab.data.device_images import DeviceImages
from cnnlab.errors import CnnlabError, ConfigError
from cnnlab.experiment import dataset_identity, resolve_device
from cnnlab.models import pretrained
from cnnlab.models.transfer_model import frozen_backbone
from cnnlab.report import plots
from cnnlab.report.document import (
    Block, Callout, FigureWriter, Heading, ImageRow, Paragraph, Table, format_percent, format_seconds,
    render_html, render_markdown,
)
from cnnlab.training.feature_cache import backbone_features, feature_cache_path, normalization_for_backbone
from cnnlab.training.precision import automatic_compute_plan


@dataclass
class ExtractedFeatures:
    """Train and test features (N, feature_dim), float32, and where they came from."""

    train: np.ndarray
    test: np.ndarray
    time_s: float
    from_cache: bool = False
    cache_path: Path | None = None


@dataclass
class RunSource:
    """A trained run's network: uint8 images (N, C, H, W) on the device to its penultimate features."""

    kind: ClassVar[str] = "run"
    input_size: ClassVar[int | None] = None
    name: str
    module: nn.Module
    prepare: Callable[[torch.Tensor], torch.Tensor]  # uint8 batch -> the network's float input
    input_shape: tuple[int, int, int]
    weights_digest: str
    weights_source: str
    dataset_config: dict[str, Any]  # the dataset section the run was trained with

    def dataset_settings(self, dataset_name: str) -> dict[str, Any]:
        """The run's own image size when it is the run's dataset (its images then match the network as trained)."""
        if self.dataset_config.get("name") != dataset_name or self.dataset_config.get("image_size") is None:
            return {}
        return {"image_size": self.dataset_config["image_size"]}

    def extract(self, dataset: Dataset, device: torch.device, batch_size: int, use_cache: bool,
                show_progress: bool) -> ExtractedFeatures:
        """Features of every train and test image, computed (a run's features are never cached)."""
        started = time.perf_counter()
        train = self._features(dataset.train_images, batch_size, device, "train features", show_progress)
        test = self._features(dataset.test_images, batch_size, device, "test features", show_progress)
        return ExtractedFeatures(train, test, time.perf_counter() - started)

    @torch.no_grad()
    def _features(self, images: np.ndarray, batch_size: int, device: torch.device, description: str,
                  show_progress: bool) -> np.ndarray:
        chunks = []
        # bfloat16 where the hardware runs convolutions faster in it (GPUs, CPUs with AMX)
        plan = automatic_compute_plan(device, self.input_shape, self.module)
        with runs.progress_bar(len(images), description, enabled=show_progress) as bar:
            for start in range(0, len(images), batch_size):
                batch = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])).to(device)
                with plan.autocast():
                    chunks.append(self.module(self.prepare(batch)).flatten(1).float().cpu())
                bar.update(len(batch))
        return torch.cat(chunks).numpy() if chunks else np.zeros((0, 0), np.float32)


@dataclass
class BackboneSource:
    """A pretrained backbone, frozen, resizing images to ``input_size``."""

    kind: ClassVar[str] = "backbone"
    backbone: pretrained.Backbone
    input_size: int

    @property
    def name(self) -> str:
        return self.backbone.name

    @property
    def weights_source(self) -> str:
        return self.backbone.weights_source

    @property
    def weights_digest(self) -> str:
        return self.backbone.weights_digest

    def dataset_settings(self, dataset_name: str) -> dict[str, Any]:
        return {}

    def extract(self, dataset: Dataset, device: torch.device, batch_size: int, use_cache: bool,
                show_progress: bool) -> ExtractedFeatures:
        """Features of every train and test image from the shared feature cache, or computed and cached."""
        channels = dataset.input_shape[0]
        model = frozen_backbone(self.backbone, self.input_size, channels).to(device)
        normalization = normalization_for_backbone(model.mean, model.std, channels)
        train_data = DeviceImages(dataset.train_images, dataset.train_labels, normalization, device)
        test_data = DeviceImages(dataset.test_images, dataset.test_labels, normalization, device)
        path = feature_cache_path(model, dataset_identity(dataset), test_data, normalization)
        started = time.perf_counter()
        train, test, from_cache = backbone_features(model, train_data, test_data, path, use_cache, show_progress,
                                                    batch_size)
        return ExtractedFeatures(train.numpy(), test.numpy(), time.perf_counter() - started, from_cache, path)


def open_source(source: str, weights: Path | None, device: torch.device,
                input_size: int | None = None) -> RunSource | BackboneSource:
    """A run directory (an existing folder) or a backbone name (resizing images to ``input_size``,
    default the backbone's own); ConfigError when it is neither."""
    if Path(source).is_dir():
        opened = open_run(Path(source), weights, device)
        if input_size:
            raise ConfigError("--input-size applies to pretrained backbones only: a trained run sees images at the "
                              "size it was trained on. Leave --input-size out.")
        return opened
    try:
        pretrained.check_backbone_name(source)
    except ConfigError as error:
        raise ConfigError(f"No run directory {source} exists, and it is not a backbone name either: {error} "
                          "For a trained run, give the folder `cnnlab train` printed.") from None
    backbone = pretrained.load_backbone(source, weights=weights)
    return BackboneSource(backbone, input_size or backbone.input_size)


def open_run(run_dir: Path, weights: Path | None, device: torch.device) -> RunSource:
    """The run's network on ``device`` in eval mode, read at the input of its last Dense/Linear layer."""
    trained = load_trained_model(run_dir, weights=weights)
    channels, height, width = trained.input_shape
    network = trained.module.to(device).eval()

    def prepare(images: torch.Tensor) -> torch.Tensor:
        return trained.normalize(_resize(_to_channels(images.float(), channels), (height, width)))

    dataset = trained.config.get("dataset") if isinstance(trained.config.get("dataset"), dict) else {}
    return RunSource(str(run_dir), PenultimateFeatures(network), prepare, trained.input_shape,
                     runs.file_digest(trained.weights_path)[:16], f"file: {trained.weights_path}", dict(dataset or {}))


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


def run_features(source: str, dataset_name: str, out: Path | None = None, data_dir: Path | None = None,
                 subset: int | None = None, test_subset: int | None = None, batch_size: int = 128,
                 weights: Path | None = None, device_name: str = "auto", show_progress: bool = True,
                 input_size: int | None = None, use_cache: bool = True, overwrite: bool = False) -> Path:
    """Extract features (a backbone's from the shared feature cache when it has them, unless
    ``use_cache`` is false), fit both probes, write metrics.json, report.md and report.html; return
    the folder (an earlier features folder at ``out`` is replaced only with ``overwrite``, once complete)."""
    started = time.perf_counter()
    out = out or output_folders.default_run_dir(f"features-{runs.slug(Path(source).name or source, 'features')}-"
                                                f"{runs.slug(dataset_name, 'features')}")
    output_folders.check_output_folder(out, overwrite, "features")
    device = resolve_device(device_name)
    opened = open_source(source, weights, device, input_size)
    dataset = load_dataset(DatasetConfig(name=dataset_name, subset=subset, test_subset=test_subset,
                                         **opened.dataset_settings(dataset_name)), data_dir)
    folder = output_folders.prepare_output_folder(out, overwrite, "features")
    runs.log_line(f"{dataset.name}: {len(dataset.train_labels)} train, {len(dataset.test_labels)} test images; "
                  f"features of {opened.name} on {device}", show_progress)
    features = opened.extract(dataset, device, batch_size, use_cache, show_progress)
    runs.log_line(f"features {features.train.shape[1]}-d in {features.time_s:.1f}s; fitting kNN and linear probe",
                  show_progress)
    knn = knn_probe(features.train, dataset.train_labels, features.test, dataset.test_labels, dataset.n_classes)
    linear = linear_probe(features.train, dataset.train_labels, features.test, dataset.test_labels)
    metrics = {
        "source": source, "kind": opened.kind, "dataset": dataset_name, "data_source": dataset.source,
        **_probe_metrics(knn, linear), "feature_dim": int(features.train.shape[1]),
        "train_size": len(dataset.train_labels), "test_size": len(dataset.test_labels),
        "n_classes": dataset.n_classes, "image_shape": list(dataset.input_shape),
        "extraction_time_s": features.time_s, "features_from_cache": features.from_cache,
        "feature_cache": str(features.cache_path) if features.cache_path is not None else None,
        "knn_fit_time_s": knn.fit_time_s, "linear_fit_time_s": linear.fit_time_s,
        "time_s": time.perf_counter() - started, "weights_source": opened.weights_source,
        "weights_digest": opened.weights_digest, "device": str(device), "batch_size": batch_size,
        "input_size": opened.input_size, "environment": runs.capture_environment(str(device), None),
        "cnnlab": output_folders.output_marker("features"),
    }
    runs.write_json_atomic(folder / runs.METRICS_FILE, metrics)
    write_features_report(folder, metrics, dataset.classes, dataset.test_labels, {"kNN": knn, "Linear probe": linear})
    runs.log_line(f"kNN (k={knn.details['k']}) {knn.accuracy:.2%}, linear probe {linear.accuracy:.2%}", show_progress)
    return output_folders.publish_output_folder(folder)


def _probe_metrics(knn: ProbeResult, linear: ProbeResult) -> dict[str, Any]:
    return {
        "knn_accuracy": knn.accuracy, "linear_accuracy": linear.accuracy, "k": knn.details["k"],
        "knn_validation_accuracy_by_k": knn.details["validation_accuracy_by_k"], "linear_C": linear.details["C"],
        "linear_validation_accuracy_by_C": linear.details["validation_accuracy_by_C"],
        "linear_converged": linear.details["converged"], "linear_iterations": linear.details["iterations"],
        "linear_max_iter": linear.details["max_iter"],
    }


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
        figures.add(f"confusion_{runs.slug(label, 'features').lower()}", lambda: plots.plot_confusion(
            confusion_matrix(test_labels, result.predictions, n_classes), class_names, title=label),
            f"{label}: rows true class, columns predicted")
        for label, result in probes.items()])]
    markdown_path, html_path = folder / runs.REPORT_MARKDOWN_FILE, folder / runs.REPORT_HTML_FILE
    runs.write_text_atomic(markdown_path, render_markdown(blocks))
    runs.write_text_atomic(html_path, render_html(blocks, f"cnnlab features: {metrics['source']}", figures.pngs))
    return markdown_path, html_path
