"""One experiment end to end: config → data → model → train → artefacts → analysis → report."""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import yaml
from safetensors.torch import load_file
from torch import nn

from cnnlab import output_folders, runs
from cnnlab.analysis.interpretation import Interpretation
from cnnlab.analysis.leakage import check_and_save
from cnnlab.analysis.run_index import record_run
from cnnlab.augment.augmenter import Augmenter, build_augmenter
from cnnlab.augment.plan import describe
from cnnlab.augment.preview import augmented_versions
from cnnlab.config import ExperimentConfig, load_config, validate_config, zoo_recipe
from cnnlab.data import Dataset, load_dataset, split_validation
from cnnlab.data.device_images import DeviceImages
from cnnlab.data.normalization import Normalization, cached_normalization
from cnnlab.errors import CnnlabError, ConfigError, TrainingDiverged, TrainingInterrupted
from cnnlab.models import BuiltModel, count_parameters, create_model, format_summary, zoo
from cnnlab.models.transfer_model import transfer_settings
from cnnlab.models.zoo.recipe_check import reported_figures
from cnnlab.models.whitening import fitting_sample, initialize_from_data, needs_data_initialization
from cnnlab.report.confusion_gallery import gallery_indices
from cnnlab.report.run_report import write_report
from cnnlab.report.tensorboard import TensorBoardLogger, summary_writer_class
from cnnlab.training.callbacks import Callback, HistoryWriter, check_callbacks
from cnnlab.training.checkpoint import Checkpointer, read_resume_point
from cnnlab.training.distributed import Distributed, announce, torchrun_process
from cnnlab.training.evaluation import predict_probabilities, save_predictions, test_metrics
from cnnlab.training.feature_cache import (
    DeviceFeatures, backbone_normalization, cached_feature_data, uses_feature_cache,
)
from cnnlab.training.interrupt import StopRequest, stop_on_signals
from cnnlab.training.loop import TrainResult, fit
from cnnlab.training.precision import ComputePlan, choose_compute_plan
from cnnlab.training.weights_file import config_digest, describe_run, weights_bytes

DIVERGED_OUTPUTS = ("Training ended, but the model's test outputs are NaN or infinite: its weights diverged after "
                    "the last check. Lower the learning rate (optimizer.lr) or add a validation split so divergence "
                    "is caught during training.")


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
    """Seed Python's, NumPy's and torch's random generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class PreparedExperiment:
    """What training and the learning-rate finder both start from; built before any file is written."""

    device: torch.device
    dataset: Dataset
    built: BuiltModel
    train_indices: np.ndarray
    val_indices: np.ndarray
    dataset_key: str  # identity of the pixels, for caches
    normalization: Normalization
    augmenter: Augmenter | None  # None: training batches are left as they are
    plan: ComputePlan  # precision, memory layout and compilation on ``device``
    distributed: Optional[Distributed] = None  # this process's place in a torchrun job (None: one process)


@dataclass
class DeviceSetup:
    """The model in its device and memory layout, and the images on the training device, as training starts."""

    model: nn.Module
    train_data: DeviceImages
    test_data: DeviceImages


@dataclass
class TrainingInputs:
    """What training runs on: the whole model (its weights are saved) and what trains and predicts, which is
    the model on the images, or only its head on cached frozen-backbone features."""

    model: nn.Module
    trained: nn.Module
    train_source: DeviceImages | DeviceFeatures
    test_source: DeviceImages | DeviceFeatures


def dataset_identity(dataset: Dataset) -> str:
    """Identity of a loaded dataset's pixels for caches: name, source, shape and a digest of every 97th
    training image (a changed file changes it)."""
    sample = hashlib.sha256(np.ascontiguousarray(dataset.train_images[::97]).tobytes()).hexdigest()
    return f"{dataset.name}|{dataset.source}|{dataset.train_images.shape}|{sample}"


def prepare_experiment(config: ExperimentConfig, data_dir: Optional[Path] = None,
                       distributed: Optional[Distributed] = None) -> PreparedExperiment:
    """Threads, device and seed; the dataset, model, validation split, normalisation and augmenter.
    Every check a user's input can fail runs here. ``distributed``: the process joins its torchrun job."""
    settings = config.train
    if settings.threads:
        torch.set_num_threads(settings.threads)
    device = resolve_device(settings.device)
    if distributed is not None:
        device = distributed.join(device)  # the GPU of its LOCAL_RANK, and the process group
    seed_everything(settings.seed)
    dataset = load_dataset(config.dataset, data_dir)
    built = create_model(config.to_dict()["model"], dataset.input_shape, dataset.n_classes)
    train_indices, val_indices = split_validation(len(dataset.train_labels), settings.validation_split, settings.seed)
    dataset_key = dataset_identity(dataset)
    normalization = (backbone_normalization(built.module, config.dataset, dataset.input_shape[0])
                     or cached_normalization(config.dataset.normalize, dataset_key, dataset.train_images, train_indices))
    augmenter = build_augmenter(config.augment, dataset.input_shape, device, settings.seed, normalization)
    plan = choose_compute_plan(settings, device, dataset.input_shape, built.module)
    return PreparedExperiment(device, dataset, built, train_indices, val_indices, dataset_key, normalization,
                              augmenter, plan, distributed)


def place_on_device(prepared: PreparedExperiment) -> DeviceSetup:
    """The prepared model in its compute plan's device and layout, the train and test images on the device,
    and a patch-whitening first layer set from 5,000 training images drawn at random: the start of training and of lr-find."""
    device, dataset, normalization, plan = prepared.device, prepared.dataset, prepared.normalization, prepared.plan
    model = plan.prepare(prepared.built.module)
    train_data = DeviceImages(dataset.train_images, dataset.train_labels, normalization, device, plan.channels_last)
    test_data = DeviceImages(dataset.test_images, dataset.test_labels, normalization, device, plan.channels_last)
    if needs_data_initialization(model):
        initialize_from_data(model, train_data.batch(_on(fitting_sample(prepared.train_indices), device))[0])
    return DeviceSetup(model, train_data, test_data)


def run_experiment(config: ExperimentConfig, out: Optional[Path] = None, data_dir: Optional[Path] = None,
                   show_progress: bool = True, runs_root: Path = Path("runs"), overwrite: bool = False,
                   resume: bool = False, stop: Optional[StopRequest] = None,
                   callbacks: Sequence[Callback] = ()) -> Path:
    """Train and evaluate ``config``; return the run directory holding every artefact and the report.
    An existing run in ``out`` is replaced only with ``overwrite``, and only once the new run is complete.
    With ``resume`` and a checkpoint in ``out``, training continues from it exactly (the config must be
    the one it was trained with, except `train.epochs` raised to train longer). ``callbacks`` get each
    epoch's history row and the end of training, after the run's own history.csv writer.

    Every check a user's input can fail runs before the run directory is created. Raises
    TrainingDiverged (after saving history and a partial report) when the loss becomes NaN/Inf, and
    TrainingInterrupted (after writing a checkpoint) when SIGINT or SIGTERM (or ``stop``) stops training.
    Under torchrun, the processes train it together and only the main one writes (training/distributed.py)."""
    callbacks, distributed = check_callbacks(callbacks), torchrun_process(config.train)
    if config.train.tensorboard:
        summary_writer_class()  # TensorBoard is installed (checked before any file is written)
    checkpoint = read_resume_point(config.to_dict(), Path(out), show_progress) if resume and out is not None else None
    prepared = prepare_experiment(config, data_dir, distributed)
    if distributed is not None and not distributed.is_main:
        return follow_main_process(config, prepared, checkpoint, stop)
    dataset, plan = prepared.dataset, prepared.plan
    run_dir = output_folders.prepare_output_folder(out or output_folders.default_run_dir(config.name, runs_root),
                                                   overwrite, resume=resume)
    metrics = write_starting_files(run_dir, config, prepared, plan, show_progress)
    inputs = prepare_training_inputs(run_dir, config, prepared, plan, metrics, show_progress)
    tensorboard = TensorBoardLogger(run_dir) if config.train.tensorboard else None
    callbacks = [tensorboard, *callbacks] if tensorboard is not None else callbacks
    result = train(run_dir, config, prepared, inputs, plan, metrics, show_progress, checkpoint, stop, callbacks)
    probabilities = evaluate(config, inputs, plan, result, metrics) if result.status == "complete" else None
    if result.status == "diverged":
        metrics.update(status="diverged", test_accuracy=None, test_loss=None)
        runs.write_json_atomic(run_dir / runs.METRICS_FILE, metrics)
        write_report(run_dir, worst_n=config.analysis.worst_n)
        record_run(run_dir)  # in the run indexes above it (`cnnlab runs`); never fails the run
        announce(distributed, run_dir)
        raise TrainingDiverged(f"{metrics['stop_reason']} Run directory: {run_dir}{output_folders.kept_note(run_dir)}")
    save_results(run_dir, config, dataset, inputs.model, probabilities, metrics)
    if tensorboard is not None:
        tensorboard.write_evaluation()  # the confusion matrix, hyperparameters and final metrics
    runs.log_line(f"test accuracy {metrics['test_accuracy']:.2%}, test loss {metrics['test_loss']:.4f}, "
                  f"training {metrics['train_time_s']:.1f}s", show_progress)
    run_dir = output_folders.publish_output_folder(run_dir)
    record_run(run_dir)
    return announce(distributed, run_dir)


def write_starting_files(run_dir: Path, config: ExperimentConfig, prepared: PreparedExperiment, plan: ComputePlan,
                         show_progress: bool) -> dict:
    """Write config.yaml, environment.json, summary.txt and metrics.json (with cnnlab's marker) with
    status "running" into the new run's folder; return those metrics, which the later steps complete."""
    settings, dataset, built = config.train, prepared.dataset, prepared.built
    runs.log_line(f"run directory: {run_dir}", show_progress)
    runs.write_text_atomic(run_dir / runs.CONFIG_FILE, yaml.safe_dump(config.to_dict(), sort_keys=False))
    runs.write_json_atomic(run_dir / runs.ENVIRONMENT_FILE, runs.capture_environment(str(prepared.device), settings.seed))
    runs.write_text_atomic(run_dir / runs.SUMMARY_FILE, format_summary(built) + "\n")
    metrics = starting_metrics(config, prepared)
    runs.write_json_atomic(run_dir / runs.METRICS_FILE, metrics)
    return metrics


def starting_metrics(config: ExperimentConfig, prepared: PreparedExperiment) -> dict:
    """metrics.json as a run starts (status "running"), with cnnlab's marker."""
    settings, dataset, built, plan = config.train, prepared.dataset, prepared.built, prepared.plan
    trainable, frozen = count_parameters(built.module)
    metrics = {
        "name": config.name, "dataset": dataset.name, "model": _model_label(config), "params": trainable + frozen,
        "trainable_params": trainable, "epochs": 0, "epochs_planned": settings.epochs, "status": "running",
        "seed": settings.seed, "device": str(prepared.device), "train_size": len(prepared.train_indices),
        "validation_size": len(prepared.val_indices), "test_size": len(dataset.test_labels),
        "data_source": dataset.source, "normalization": prepared.normalization.to_dict(),
        "augmentation": describe(config.augment.plan()), "test_time_augmentation": config.augment.test_time,
        "fast_path": plan.to_dict(), "cnnlab": output_folders.output_marker("run"), **_reported_figures(config),
        "layers": [spec.text for spec in built.layer_specs],  # as trained, should the zoo's entry change later
    }
    if transfer_settings(built.module):
        metrics["transfer"] = transfer_settings(built.module)
    if prepared.distributed is not None:
        metrics["distributed"] = prepared.distributed.describe(settings.batch_size)
    return metrics


def prepare_training_inputs(run_dir: Optional[Path], config: ExperimentConfig, prepared: PreparedExperiment,
                            plan: ComputePlan, metrics: dict, show_progress: bool) -> TrainingInputs:
    """The model and the images on the device (a patch-whitening first layer set from the data, the
    augmentation examples saved); for a frozen backbone without augmentation, its features instead,
    computed once or read from the feature cache, so only the head trains."""
    device, dataset, normalization = prepared.device, prepared.dataset, prepared.normalization
    train_indices, augmenter = prepared.train_indices, prepared.augmenter
    setup = place_on_device(prepared)
    model, train_data, test_data = setup.model, setup.train_data, setup.test_data
    if augmenter is not None and run_dir is not None:  # (None: a torchrun job's other processes write nothing)
        save_augmentation_examples(run_dir, train_data, augmenter, train_indices[:8])
    runs.log_line(f"{dataset.name}: {len(train_indices)} train, {len(prepared.val_indices)} validation, "
                  f"{len(dataset.test_labels)} test images {dataset.input_shape}; model {metrics['model']} "
                  f"({metrics['params']:,} params) on {device}", show_progress)
    if not uses_feature_cache(prepared.built.module, config.model, augmenter):
        return TrainingInputs(model, model, train_data, test_data)
    features_started = time.perf_counter()
    train_features, test_features = cached_feature_data(model, train_data, test_data, prepared.dataset_key,
                                                        normalization, show_progress)
    # computing the features (or reading them from the cache) is not part of train_time_s
    metrics["transfer"].update(features_cached=True, features_time_s=time.perf_counter() - features_started)
    return TrainingInputs(model, model.head, train_features, test_features)


def train(run_dir: Path, config: ExperimentConfig, prepared: PreparedExperiment, inputs: TrainingInputs,
          plan: ComputePlan, metrics: dict, show_progress: bool, checkpoint: Optional[dict] = None,
          stop: Optional[StopRequest] = None, callbacks: Sequence[Callback] = ()) -> TrainResult:
    """Fit (from ``checkpoint`` when given), writing history.csv (a `HistoryWriter`, called before
    ``callbacks``) and a checkpoint after every epoch, with SIGINT and SIGTERM stopping at the next step
    boundary; record how training ended in ``metrics``.
    Raises TrainingInterrupted, with status "interrupted" in metrics.json, after such a stop."""
    device, augmenter = prepared.device, prepared.augmenter
    train_indices, val_indices = prepared.train_indices, prepared.val_indices
    trained, train_source = inputs.trained, inputs.train_source
    history = HistoryWriter(run_dir / runs.HISTORY_FILE, checkpoint["history"] if checkpoint is not None else ())
    checkpoints = Checkpointer(run_dir, config.train.checkpoint_every_s, extra={"config": config.to_dict()})
    with stop_on_signals(stop) as stop_request:
        result = fit(trained, train_source, _on(train_indices, device), _on(val_indices, device), config,
                     callbacks=[history, *callbacks], augment=augmenter, show_progress=show_progress, plan=plan,
                     checkpoints=checkpoints, resume_from=checkpoint, stop=stop_request,
                     distributed=prepared.distributed)
    metrics.update(epochs=result.epochs_completed, train_time_s=result.train_time_s, best_epoch=result.best_epoch,
                   stop_reason=result.stop_reason, compile_time_s=result.compile_time_s,
                   checkpoints_written=result.checkpoints_written, checkpoint_time_s=result.checkpoint_time_s)
    if result.status == "interrupted":
        metrics.update(status="interrupted", test_accuracy=None, test_loss=None)
        runs.write_json_atomic(run_dir / runs.METRICS_FILE, metrics)
        announce(prepared.distributed, run_dir)
        raise TrainingInterrupted(f"Training was {result.stop_reason}; its checkpoint is in {run_dir}.",
                                  run_dir=run_dir, signal_number=stop_request.signal_number or 2)
    return result


def follow_main_process(config: ExperimentConfig, prepared: PreparedExperiment, checkpoint: Optional[dict],
                        stop: Optional[StopRequest]) -> Path:
    """A torchrun job's other processes (rank 1 and up): train their part of every batch beside the main
    process, write nothing, and end as it does, once it has written the run folder (a process that failed
    first would make torchrun stop the main one); return that folder."""
    distributed, device = prepared.distributed, prepared.device
    inputs = prepare_training_inputs(None, config, prepared, prepared.plan, starting_metrics(config, prepared), False)
    with stop_on_signals(stop) as stop_request:
        result = fit(inputs.trained, inputs.train_source, _on(prepared.train_indices, device),
                     _on(prepared.val_indices, device), config, augment=prepared.augmenter, show_progress=False,
                     plan=prepared.plan, resume_from=checkpoint, stop=stop_request, distributed=distributed)
    run_dir = distributed.published()
    if result.status == "diverged":
        raise TrainingDiverged(f"{result.stop_reason} Run directory: {run_dir}")
    if result.status == "interrupted":
        raise TrainingInterrupted(f"Training was {result.stop_reason}; its checkpoint is in {run_dir}.",
                                  run_dir=run_dir, signal_number=stop_request.signal_number or 2)
    return run_dir


def resume_experiment(run_dir: Path, data_dir: Optional[Path] = None, show_progress: bool = True,
                      overrides: Optional[list[str]] = None, stop: Optional[StopRequest] = None,
                      config_source: Optional[str] = None) -> Path:
    """Continue the run in ``run_dir`` with its own config.yaml (``overrides``: only `train.epochs`
    raised is accepted) from its latest readable checkpoint, or from the start when it has none; return
    the run directory as `run_experiment` does. A ``config_source`` (YAML file or zoo name) given
    instead of the run's own config must be the same config."""
    run_dir = Path(run_dir)
    if not (run_dir / runs.CONFIG_FILE).is_file():
        raise CnnlabError(f"{run_dir} is not a cnnlab run directory (no {runs.CONFIG_FILE}), so there is nothing "
                          "to resume. Give the folder an interrupted `cnnlab train` printed.")
    config = load_config(config_source or str(run_dir / runs.CONFIG_FILE), list(overrides or []))
    return run_experiment(config, out=run_dir, data_dir=data_dir, show_progress=show_progress, resume=True,
                          stop=stop)


def evaluate(config: ExperimentConfig, inputs: TrainingInputs, plan: ComputePlan, result: TrainResult,
             metrics: dict) -> np.ndarray:
    """Test-set class probabilities (N, n_classes) and the time they took; NaN or infinite outputs turn
    ``result`` into a diverged run."""
    inference_started = time.perf_counter()
    with plan.autocast():
        probabilities = predict_probabilities(inputs.trained, inputs.test_source, config.train.eval_batch_size,
                                              config.augment.test_time, config.augment.test_time_below)
    metrics["test_time_s"] = time.perf_counter() - inference_started
    if not np.isfinite(probabilities).all():
        result.status = "diverged"
        metrics["stop_reason"] = DIVERGED_OUTPUTS
    return probabilities


def save_results(run_dir: Path, config: ExperimentConfig, dataset: Dataset, model: nn.Module,
                 probabilities: np.ndarray, metrics: dict) -> None:
    """predictions.npz (with example images), model.safetensors, the final metrics.json and the report."""
    interpretation = Interpretation.from_arrays(probabilities, dataset.test_labels, dataset.classes)
    # the images the report's sections show, and up to 8 of each confused pair for its gallery
    shown = np.union1d(interpretation.example_indices(50),
                       gallery_indices(interpretation, dataset.test_images[:1].nbytes))
    save_predictions(run_dir, probabilities, dataset.test_labels, dataset.classes, dataset.test_images, shown)
    # leakage.json: test images also in the training set, exactly or nearly, for the report's duplicate check
    check_and_save(run_dir, dataset.train_images, dataset.test_images, dataset.train_labels, dataset.test_labels)
    save_weights(model, run_dir / runs.WEIGHTS_FILE, describe_run(
        dataset.classes, dataset.input_shape, metrics["normalization"], metrics["dataset"], metrics["model"],
        config_digest(run_dir)))
    metrics.update(test_metrics(probabilities, dataset.test_labels), status="complete")
    runs.write_json_atomic(run_dir / runs.METRICS_FILE, metrics)
    write_report(run_dir, worst_n=config.analysis.worst_n)


def save_augmentation_examples(run_dir: Path, data: DeviceImages, augmenter: Augmenter, indices: np.ndarray,
                               views: int = 4) -> None:
    """Originals and ``views`` augmented versions of a few training images, as uint8, for the report."""
    originals, augmented = augmented_versions(data, augmenter, indices, views)
    runs.write_npz_atomic(run_dir / runs.AUGMENTATION_FILE, originals=originals, augmented=augmented)


def save_weights(model: nn.Module, path: Path, description: dict[str, str] | None = None) -> None:
    """Weights as safetensors (no pickle) with the run's ``description`` as metadata, written atomically."""
    tensors = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    runs.write_bytes_atomic(path, weights_bytes(tensors, description or {}))


def load_weights(model: nn.Module, path: Path) -> None:
    """Load safetensors weights written by `save_weights` into ``model``."""
    model.load_state_dict(load_file(str(path)))


def _on(indices: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(indices, dtype=np.int64), device=device)


def _model_label(config: ExperimentConfig) -> str:
    if config.model.backbone:
        return f"{config.model.backbone} + head ({len(config.model.head or ['Dense: classes'])} layers)"
    return config.model.name if config.model.name else f"custom ({len(config.model.layers or [])} layers)"


def _reported_figures(config: ExperimentConfig) -> dict:
    """The lab report's own figures for a zoo model and how this run's recipe differs from the report's."""
    if not config.model.name:
        return {}
    report_config = validate_config(zoo_recipe(config.model.name), config.model.name)
    return reported_figures(zoo.get_entry(config.model.name), report_config.to_dict(), config.to_dict())
