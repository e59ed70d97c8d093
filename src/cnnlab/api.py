"""cnnlab from Python (and notebooks): `train`, `load_run`, `models`, `summary`, and the `Run` they give
back. Everything here composes what the command line does: `train` is `cnnlab train`, a `Run` reads the
run folder every other command reads. docs/api.md shows it in use.

Settings are changed as on the command line, by dotted keys: ``train("mlp", train__epochs=3)`` (a double
underscore for each dot) or ``train("mlp", overrides={"train.epochs": 3})``; values are Python values."""

from __future__ import annotations

import base64
import copy
import functools
import html
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from torch import nn

from cnnlab import output_folders, runs
from cnnlab.analysis.interpretation import Interpretation
from cnnlab.analysis.predict import Predictions, Predictor
from cnnlab.analysis.run_files import read_config, read_metrics, read_text
from cnnlab.analysis.seed_runs import SEEDS_KIND
from cnnlab.analysis.trained_run import load_trained_model
from cnnlab.config import ExperimentConfig, load_config, set_dotted, validate_config
from cnnlab.data import load_dataset
from cnnlab.errors import CnnlabError
from cnnlab.experiment import run_experiment
from cnnlab.models import count_parameters, create_model, format_summary, zoo
from cnnlab.report.document import format_integer, format_number, format_percent, format_seconds, format_value
from cnnlab.report.run_report import write_report
from cnnlab.report.seeds_report import format_mean_std, write_seeds_report
from cnnlab.studies.seeds import run_seeds, with_seed_count
from cnnlab.training.callbacks import Callback, check_callbacks

__all__ = ["Callback", "Predictions", "Run", "load_run", "make_config", "models", "summary", "train"]

ConfigSource = Union[str, os.PathLike, ExperimentConfig, Mapping[str, Any]]
# the figures a Run shows in a notebook, when its report has drawn them: (file in figures/, caption)
RUN_FIGURES = (("history.png", "Loss and accuracy per epoch"),
               ("confusion.png", "Confusion matrix (rows: true class, columns: predicted)"))
SEEDS_FIGURES = (("seeds_accuracy.png", "Accuracy: mean over the seeds, min-max band"),
                 ("seeds_loss.png", "Loss: mean over the seeds, min-max band"))
FIGURE_WIDTH_PX = 460


def train(config: ConfigSource, *, out: Optional[Union[str, os.PathLike]] = None,
          data_dir: Optional[Union[str, os.PathLike]] = None, progress: bool = True, overwrite: bool = False,
          resume: bool = False, seeds: Optional[Union[int, Sequence[int]]] = None,
          callbacks: Sequence[Callback] = (), overrides: Optional[Mapping[str, Any]] = None,
          **settings: Any) -> "Run":
    """Train an experiment as `cnnlab train` does and return its `Run`.

    ``config`` is a YAML file, an example by name (``"digits"``), a zoo name (its recipe: `cnnlab.models()`
    lists them), an `ExperimentConfig` or a mapping of settings (what a YAML file would hold). ``overrides`` (``{"train.epochs": 3}``) and
    keyword settings (``train__epochs=3``: a double underscore for each dot) change it; keywords are applied
    after ``overrides``. ``out`` is the run folder (default ``runs/<time>-<name>``); an earlier run there is
    replaced only with ``overwrite``, and an interrupted one continued with ``resume``. ``seeds`` trains one
    run per seed (a count from `train.seed`, or the seeds themselves) into ``out``/seed-<s>/ with their
    aggregate in ``out``. ``callbacks`` get each epoch's history row and the end of training (see
    `cnnlab.Callback`; a single run only). ``progress=False`` prints nothing while training.

    Raises `cnnlab.errors.ConfigError` for a setting that is wrong, `TrainingDiverged` when training
    diverges and `TrainingInterrupted` after Ctrl-C (or "interrupt kernel"), whose checkpoint ``resume=True``
    continues."""
    changes = dict(overrides or {})
    seed_count = isinstance(seeds, int) and not isinstance(seeds, bool)
    if seeds is not None and not seed_count:
        if not isinstance(seeds, Sequence) or isinstance(seeds, str):
            raise TypeError(f"seeds must be a number of seeds or a list of seeds, not {seeds!r}.")
        changes["train.seeds"] = list(seeds)  # checked with the rest of the config
    experiment = make_config(config, changes, **settings)
    if seed_count:
        experiment = with_seed_count(experiment, seeds)
    hooks = check_callbacks(callbacks)
    if resume and out is None:
        raise ValueError("resume=True continues the run in out=FOLDER: give out.")
    out_path = Path(out) if out is not None else None
    data_path = Path(data_dir) if data_dir is not None else None
    if experiment.train.seeds:
        # a multi-seed folder always continues where it stopped: complete seeds are skipped; each seed's
        # run calls the callbacks in turn
        folder = run_seeds(experiment, out=out_path, data_dir=data_path, show_progress=progress, overwrite=overwrite,
                           callbacks=hooks)
    else:
        folder = run_experiment(experiment, out=out_path, data_dir=data_path, show_progress=progress,
                                overwrite=overwrite, resume=resume, callbacks=hooks)
    return load_run(folder)


def make_config(config: ConfigSource, overrides: Optional[Mapping[str, Any]] = None,
                **settings: Any) -> ExperimentConfig:
    """The checked `ExperimentConfig` that `train` would run: ``config`` (a YAML file, zoo name,
    `ExperimentConfig` or mapping) with ``overrides`` (dotted keys) and then ``settings`` (``train__epochs=3``)
    applied. A file or name is read by `cnnlab.config.load_config`, exactly as `cnnlab train` reads it."""
    changes = {**dict(overrides or {}), **{key.replace("__", "."): value for key, value in settings.items()}}
    for key in changes:
        if not isinstance(key, str) or not key or key.startswith(".") or key.endswith(".") or ".." in key:
            raise TypeError(f"{key!r} is not a setting: give dotted keys such as 'train.epochs' (or train__epochs=).")
    if isinstance(config, ExperimentConfig):
        config = config.to_dict()
    if isinstance(config, Mapping):
        raw = copy.deepcopy(dict(config))
        for key, value in changes.items():
            set_dotted(raw, key, value, f"{key}={value!r}")
        return validate_config(raw, "the config given to cnnlab")
    if not isinstance(config, (str, os.PathLike)):
        raise TypeError(f"config must be a YAML file, a zoo name, an ExperimentConfig or a mapping, not "
                        f"{type(config).__name__}.")
    return load_config(os.fspath(config), [f"{key}={_yaml_value(value)}" for key, value in changes.items()])


def load_run(path: Union[str, os.PathLike]) -> "Run":
    """The run in ``path`` (a folder `cnnlab train` wrote: a single run or a multi-seed folder).
    Raises CnnlabError when it is not one, or when one of its files is damaged."""
    return Run(runs.require_run_dir(Path(path)))


def models() -> list[dict[str, Any]]:
    """The model zoo, one dict per entry (what `cnnlab models` prints): ``name``, ``dataset``, ``params``
    (counted for 10 classes; None for a pretrained backbone, whose weights are not loaded to count them),
    ``backbone``, ``description``, ``source`` (the lab report), ``reported_accuracy`` (0..1 or None)."""
    listed = []
    for entry in zoo.list_entries():
        backbone = entry.backbone["backbone"] if entry.backbone is not None else None
        params = None if backbone else sum(count_parameters(create_model(entry.name, entry.input_shape, 10).module))
        listed.append({"name": entry.name, "dataset": entry.dataset, "params": params, "backbone": backbone,
                       "description": entry.description, "source": entry.source,
                       "reported_accuracy": entry.reported_accuracy})
    return listed


def summary(model: Union[ConfigSource, "Run"], dataset: Optional[str] = None,
            data_dir: Optional[Union[str, os.PathLike]] = None) -> str:
    """The Keras-style layer table (output shapes, parameters) of a zoo model, a config's model (YAML file,
    `ExperimentConfig` or mapping) or a trained `Run`, as `cnnlab summary` prints it. ``dataset`` builds it
    for another dataset's images; an image folder is read (from ``data_dir``) for its shape and classes."""
    if isinstance(model, Run):
        return read_text(model.path / runs.SUMMARY_FILE).rstrip("\n")
    config = make_config(model, {"dataset": dataset} if dataset else None)
    shape = zoo.DATASET_INPUT_SHAPES.get(config.dataset.name)
    n_classes = 10  # every dataset with a known shape has ten classes
    if shape is None or config.dataset.image_size is not None:
        found = load_dataset(config.dataset, Path(data_dir) if data_dir is not None else None)
        shape, n_classes = found.input_shape, found.n_classes
    return format_summary(create_model(config.to_dict()["model"], shape, n_classes)).rstrip("\n")


class Run:
    """A run folder read back: ``path``, ``config`` (config.yaml as a dict), ``metrics`` (metrics.json),
    ``history`` (history.csv: one dict per epoch); the `Interpretation` of its test predictions, its trained
    ``model``, ``predict(images)`` and ``report()``. In a notebook it shows its headline metrics, curves and
    confusion matrix.

    A multi-seed folder answers for its aggregate (the mean metrics and history); what belongs to one trained
    network (``model``, ``predict``, ``interpretation``) is each seed's: ``run.seeds[0].model``."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.metrics: dict[str, Any] = read_metrics(self.path)
        self.history: list[dict[str, float]] = [_whole_epoch(row) for row in runs.read_history(self.path)]
        self.config: dict[str, Any] = read_config(self.path) or {}
        self.is_multi_seed = output_folders.output_kind(self.path) == SEEDS_KIND  # a folder of seed runs

    @functools.cached_property
    def seeds(self) -> list["Run"]:
        """The run of each seed of a multi-seed folder, in its order; empty for a single run."""
        if not self.is_multi_seed:
            return []
        names = self.metrics.get("runs")
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise CnnlabError(f"{self.path / runs.METRICS_FILE} lists no seed runs (\"runs\"); run the multi-seed "
                              "experiment again to rewrite it.")
        return [load_run(self.path / Path(name).name) for name in names]  # seed runs are subfolders only

    @functools.cached_property
    def interpretation(self) -> Interpretation:
        """Confusion matrix, per-class scores, most-confused pairs and worst errors, from predictions.npz."""
        return Interpretation.from_run(self._single_run("interpretation"))

    @functools.cached_property
    def model(self) -> nn.Module:
        """The trained network on the CPU, in eval mode. It takes normalised float images (N, C, H, W)
        and returns logits; `predict` takes images as they come."""
        return load_trained_model(self._single_run("model")).module

    @functools.cached_property
    def predictor(self) -> Predictor:
        """What `predict` runs: the network with the run's own input preparation."""
        return Predictor.from_run(self._single_run("predict"))

    def predict(self, images: Any, batch_size: int = 256) -> Predictions:
        """Class probabilities for ``images``: image file paths, PIL images, uint8 arrays (H, W[, C]) or
        tensors (C, H, W), one or a sequence or a batch; each is converted and resized as the training data
        was. ``.labels()`` gives the top class of each, ``.top_k(k)`` the k likeliest with probabilities."""
        return self.predictor.predict(images, batch_size=batch_size)

    def report(self) -> Path:
        """Rewrite the run's report (figures, report.md, report.html) from its folder; return report.html."""
        if self.is_multi_seed:
            return write_seeds_report(self.path)[1]
        return write_report(self.path)[1]

    def _single_run(self, what: str) -> Path:
        if self.is_multi_seed:
            names = ", ".join(str(seed) for seed in self.metrics.get("seeds") or [])
            raise CnnlabError(f"{self.path} holds one run per seed ({names}), each with its own {what}: use "
                              f"run.seeds[0].{what} (or another seed's).")
        return self.path

    def __repr__(self) -> str:
        accuracy = self.metrics.get("test_accuracy")
        shown = f", test accuracy {format_percent(accuracy)}" if accuracy is not None else ""
        seeds = f", {len(self.metrics.get('seeds') or [])} seeds" if self.is_multi_seed else ""
        return f"Run({str(self.path)!r}{seeds}, status {self.metrics.get('status', 'unknown')}{shown})"

    def _repr_html_(self) -> str:
        """The notebook view: headline metrics, then the curves and the confusion matrix from figures/."""
        escape = html.escape
        title = f"{self.metrics.get('name', self.path.name)}"
        rows = "".join(f"<tr><th style=\"text-align:left\">{escape(label)}</th><td style=\"text-align:left\">"
                       f"{escape(value)}</td></tr>" for label, value in self._headline())
        figures = SEEDS_FIGURES if self.is_multi_seed else RUN_FIGURES
        images = "".join(self._figure_html(name, caption) for name, caption in figures)
        return (f'<div class="cnnlab-run"><h3>cnnlab run: {escape(title)}</h3>'
                f"<p><code>{escape(str(self.path))}</code></p><table>{rows}</table>"
                f'<div style="display:flex;flex-wrap:wrap;gap:12px">{images}</div></div>')

    def _headline(self) -> list[tuple[str, str]]:
        metrics = self.metrics
        seeds: list[tuple[str, str]] = []
        if self.is_multi_seed:
            statistics = metrics.get("statistics") or {}
            accuracy = format_mean_std(statistics.get("test_accuracy"))
            loss = format_mean_std(statistics.get("test_loss"), percent=False)
            seeds = [("Seeds", ", ".join(str(seed) for seed in metrics.get("seeds") or []))]
        else:
            accuracy, loss = format_percent(metrics.get("test_accuracy")), format_number(metrics.get("test_loss"))
        return seeds + [("Status", format_value(metrics.get("status"))), ("Dataset", format_value(metrics.get("dataset"))),
                ("Model", format_value(metrics.get("model"))), ("Parameters", format_integer(metrics.get("params"))),
                ("Test accuracy", accuracy), ("Test loss", loss),
                ("Epochs run / planned", f"{format_value(metrics.get('epochs'))} / "
                                         f"{format_value(metrics.get('epochs_planned'))}"),
                ("Training time", format_seconds(metrics.get("train_time_s"))),
                ("Stop reason", format_value(metrics.get("stop_reason"))),
                ("Device", format_value(metrics.get("device")))]

    def _figure_html(self, name: str, caption: str) -> str:
        path = self.path / runs.FIGURES_DIR / name
        if not path.is_file() or runs.is_link(path):
            return (f"<figure><figcaption>{html.escape(caption)}: not drawn (run.report() draws the figures "
                    "the run's files allow)</figcaption></figure>")
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return (f'<figure style="margin:0"><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}" '
                f'style="max-width:{FIGURE_WIDTH_PX}px"><figcaption>{html.escape(caption)}</figcaption></figure>')


def _whole_epoch(row: dict[str, float]) -> dict[str, float]:
    """A history row with its epoch number as an int (history.csv is read as floats)."""
    epoch = row.get("epoch")
    return {**row, "epoch": int(epoch)} if isinstance(epoch, float) and epoch.is_integer() else row


def _yaml_value(value: Any) -> str:
    """A Python value as the text of a command-line override (JSON, which YAML reads back as that value)."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")
    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        raise TypeError(f"{value!r} cannot be a setting: give numbers, text, true/false, None, lists or "
                        "mappings of them.") from None
