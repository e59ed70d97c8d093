"""One experiment end to end: config → data → model → train → artefacts → analysis → report."""

from __future__ import annotations

import hashlib
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import yaml

from cnnlab import runs
from cnnlab.data.device_images import DeviceImages, cached_normalization
from cnnlab.config import ExperimentConfig
from cnnlab.errors import ConfigError, TrainingDiverged
from cnnlab.training.precision import choose_fast_path
from cnnlab.models.whitening import initialize_from_data, needs_data_initialization
from cnnlab.models.transfer_model import transfer_settings
from cnnlab.training.feature_cache import backbone_normalization, cached_feature_data, uses_feature_cache


def resolve_device(name: str) -> torch.device:
    """"auto" picks the GPU when present and the CPU otherwise; the config never changes."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f'train.device is "{name}" but no CUDA GPU is visible. Use train.device=auto or cpu.')
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f'train.device "{name}" is not a device name: use auto, cpu, cuda or cuda:N.') from None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class PreparedExperiment:
    """What training and the learning-rate finder both start from; built before any file is written."""

    device: torch.device
    dataset: Any
    built: Any  # cnnlab.models.BuiltModel
    train_positions: np.ndarray
    val_positions: np.ndarray
    dataset_key: str  # identity of the pixels, for caches
    normalization: Any  # cnnlab.data.device_images.Normalization
    augment_config: Any
    augmenter: Any


def dataset_identity(dataset) -> str:
    """Identity of a loaded dataset's pixels for caches: name, source, shape and a digest of every 97th
    training image (a changed file changes it)."""
    sample = hashlib.sha256(np.ascontiguousarray(dataset.train_images[::97]).tobytes()).hexdigest()
    return f"{dataset.name}|{dataset.source}|{dataset.train_images.shape}|{sample}"


def prepare_experiment(config: ExperimentConfig, data_dir: Optional[Path] = None) -> PreparedExperiment:
    """Threads, device and seed; the dataset, model, validation split, normalisation and augmenter.
    Every check a user's input can fail runs here."""
    from cnnlab.augment.augmenter import build_augmenter, parse_augment
    from cnnlab.data import load_dataset, split_validation
    from cnnlab.models import create_model

    settings = config.train
    if settings.threads:
        torch.set_num_threads(settings.threads)
    device = resolve_device(settings.device)
    seed_everything(settings.seed)
    dataset = load_dataset(config.dataset, data_dir)
    built = create_model(config.to_dict()["model"], dataset.input_shape, dataset.n_classes)
    train_positions, val_positions = split_validation(len(dataset.train_labels), settings.validation_split, settings.seed)
    dataset_key = dataset_identity(dataset)
    normalization = (backbone_normalization(built.module, config.dataset, dataset.input_shape[0])
                     or cached_normalization(config.dataset.normalize, dataset_key, dataset.train_images, train_positions))
    augment_config = parse_augment(config.augment)
    augmenter = build_augmenter(augment_config, dataset.input_shape, device, settings.seed, normalization)
    return PreparedExperiment(device, dataset, built, train_positions, val_positions, dataset_key, normalization,
                              augment_config, augmenter)


def run_experiment(config: ExperimentConfig, out: Optional[Path] = None, data_dir: Optional[Path] = None,
                   show_progress: bool = True, runs_root: Path = Path("runs")) -> Path:
    """Train and evaluate ``config``; return the run directory holding every artefact and the report.

    Every check a user's input can fail runs before the run directory is created. Raises
    TrainingDiverged (after saving history and a partial report) when the loss becomes NaN/Inf."""
    from cnnlab.analysis.interpretation import Interpretation
    from cnnlab.augment.augmenter import describe
    from cnnlab.training.evaluation import predict_probabilities, save_predictions, test_metrics
    from cnnlab.models import count_parameters, format_summary
    from cnnlab.report.run_report import write_report
    from cnnlab.training.loop import fit

    settings = config.train
    prepared = prepare_experiment(config, data_dir)
    device, dataset, built = prepared.device, prepared.dataset, prepared.built
    train_positions, val_positions = prepared.train_positions, prepared.val_positions
    dataset_key, normalization = prepared.dataset_key, prepared.normalization
    augment_config, augmenter = prepared.augment_config, prepared.augmenter
    fast = choose_fast_path(settings, device, dataset.input_shape, built.module)

    run_dir = runs.make_run_dir(config.name, out, runs_root)
    runs.clear_artefacts(run_dir)
    _log(show_progress, f"run directory: {run_dir}")
    runs.write_text_atomic(run_dir / runs.CONFIG_FILE, yaml.safe_dump(config.to_dict(), sort_keys=False))
    runs.write_json_atomic(run_dir / runs.ENVIRONMENT_FILE, runs.capture_environment(str(device), settings.seed))
    runs.write_text_atomic(run_dir / runs.SUMMARY_FILE, format_summary(built) + "\n")
    trainable, frozen = count_parameters(built.module)
    metrics = {
        "name": config.name, "dataset": dataset.name, "model": _model_label(config), "params": trainable + frozen,
        "trainable_params": trainable, "epochs": 0, "epochs_planned": settings.epochs, "status": "running",
        "seed": settings.seed, "device": str(device), "train_size": len(train_positions),
        "validation_size": len(val_positions), "test_size": len(dataset.test_labels), "data_source": dataset.source,
        "normalization": normalization.to_dict(), "augmentation": describe(augment_config),
        "test_time_augmentation": augment_config.test_time, "fast_path": fast.to_dict(), **_reported_figures(config),
    }
    if transfer_settings(built.module):
        metrics["transfer"] = transfer_settings(built.module)
    runs.write_json_atomic(run_dir / runs.METRICS_FILE, metrics)

    model = fast.prepare(built.module)
    train_data = DeviceImages(dataset.train_images, dataset.train_labels, normalization, device, fast.channels_last)
    test_data = DeviceImages(dataset.test_images, dataset.test_labels, normalization, device, fast.channels_last)
    if needs_data_initialization(model):  # a patch-whitening first layer: set from 5,000 training images
        initialize_from_data(model, train_data.batch(_on(train_positions[:5000], device))[0])
    if augmenter is not None:
        save_augmentation_examples(run_dir, train_data, augmenter, train_positions[:8])
    _log(show_progress, f"{dataset.name}: {len(train_positions)} train, {len(val_positions)} validation, "
                        f"{len(dataset.test_labels)} test images {dataset.input_shape}; model {metrics['model']} "
                        f"({metrics['params']:,} params) on {device}")

    def save_history(history: list[dict]) -> None:
        runs.write_csv_atomic(run_dir / runs.HISTORY_FILE, history, runs.HISTORY_COLUMNS)

    # a frozen backbone without augmentation runs once: the head trains and predicts on cached features
    trained, train_source, test_source = model, train_data, test_data
    if uses_feature_cache(built.module, config.model, augmenter):
        features_started = time.perf_counter()
        train_source, test_source = cached_feature_data(model, train_data, test_data, dataset_key, normalization,
                                                        show_progress)
        trained = model.head
        # computing the features (or reading them from the cache) is not part of train_time_s
        metrics["transfer"].update(features_cached=True, features_time_s=time.perf_counter() - features_started)
    result = fit(trained, train_source, _on(train_positions, device), _on(val_positions, device), config,
                 on_epoch_end=save_history, augment=augmenter, show_progress=show_progress, fast=fast)
    save_history(result.history)
    metrics.update(epochs=result.epochs_completed, train_time_s=result.train_time_s, best_epoch=result.best_epoch,
                   stop_reason=result.stop_reason, compile_time_s=result.compile_time_s)
    probabilities = None
    if result.status == "complete":
        inference_started = time.perf_counter()
        with fast.autocast():
            probabilities = predict_probabilities(trained, test_source, settings.eval_batch_size,
                                                  augment_config.test_time)
        metrics["test_time_s"] = time.perf_counter() - inference_started
        if not np.isfinite(probabilities).all():
            result.status = "diverged"
            metrics["stop_reason"] = ("Training ended, but the model's test outputs are NaN or infinite: its weights "
                                      "diverged after the last check. Lower the learning rate (optimizer.lr) or add "
                                      "a validation split so divergence is caught during training.")
    if result.status == "diverged":
        metrics.update(status="diverged", test_accuracy=None, test_loss=None)
        runs.write_json_atomic(run_dir / runs.METRICS_FILE, metrics)
        write_report(run_dir, worst_n=config.analysis.worst_n)
        raise TrainingDiverged(f"{metrics['stop_reason']} Run directory: {run_dir}")

    interpretation = Interpretation.from_arrays(probabilities, dataset.test_labels, dataset.classes)
    save_predictions(run_dir, probabilities, dataset.test_labels, dataset.classes, dataset.test_images,
                     interpretation.example_indices(50))
    save_weights(model, run_dir / runs.WEIGHTS_FILE)
    metrics.update(test_metrics(probabilities, dataset.test_labels), status="complete")
    runs.write_json_atomic(run_dir / runs.METRICS_FILE, metrics)
    write_report(run_dir, worst_n=config.analysis.worst_n)
    _log(show_progress, f"test accuracy {metrics['test_accuracy']:.2%}, test loss {metrics['test_loss']:.4f}, "
                        f"training {metrics['train_time_s']:.1f}s")
    return run_dir


def save_augmentation_examples(run_dir: Path, data: DeviceImages, augmenter, positions: np.ndarray,
                               views: int = 4) -> None:
    """Originals and ``views`` augmented versions of a few training images, as uint8, for the report."""
    from cnnlab.studies.augment_preview import augmented_versions

    originals, augmented = augmented_versions(data, augmenter, positions, views)
    runs.write_npz_atomic(run_dir / runs.AUGMENTATION_FILE, originals=originals, augmented=augmented)


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """Weights as safetensors (no pickle), written atomically."""
    from safetensors.torch import save

    tensors = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    runs.write_bytes_atomic(path, save(tensors))


def load_weights(model: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(path)))


def _on(positions: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(positions, dtype=np.int64), device=device)


def _model_label(config: ExperimentConfig) -> str:
    if config.model.backbone:
        return f"{config.model.backbone} + head ({len(config.model.head or ['Dense: classes'])} layers)"
    return config.model.name if config.model.name else f"custom ({len(config.model.layers or [])} layers)"


def _reported_figures(config: ExperimentConfig) -> dict:
    """The lab report's own figures for a zoo model, so comparisons can show them beside ours."""
    if not config.model.name:
        return {}
    from cnnlab.models import zoo

    entry = zoo.get_entry(config.model.name)
    if entry.reported_accuracy is None:
        return {}
    return {"reported_accuracy": entry.reported_accuracy, "reported_accuracy_kind": entry.reported_accuracy_kind,
            "reported_time_s": entry.reported_time_s, "reported_dataset": entry.dataset, "source": entry.source}


def _log(enabled: bool, text: str) -> None:
    if enabled:
        print(text, file=sys.stderr, flush=True)
