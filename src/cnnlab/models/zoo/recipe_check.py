"""Whether a run of a zoo model followed the lab report's recipe: `recipe_differences` lists, in words, each
setting that can change the accuracy and differs from the report's (``"train.epochs: 1 (the report: 20)"``),
and `reported_figures` is what a run's metrics.json records of the report beside them.

Both take configs as plain mappings (``ExperimentConfig.to_dict()``): the report's is the config the zoo
name alone gives (its recipe over the defaults), so a setting the recipe leaves to the defaults is still
compared. The reports read only what training recorded; they never look the zoo up again."""

from __future__ import annotations

import re
from typing import Any, Mapping

from cnnlab.models.zoo.registry import ZooEntry

# Settings that change how a run is computed or recorded but not what is trained: never a recipe difference.
NOT_RECIPE = frozenset({
    "name", "analysis", "model.name",  # model.name: the same entry, perhaps under a former name (RENAMED)
    "train.seed", "train.seeds", "train.device", "train.threads", "train.precision", "train.channels_last",
    "train.compile", "train.eval_batch_size", "train.validate_every", "train.checkpoint_every_s",
    "train.tensorboard", "dataset.test_fraction", "dataset.split_seed",
})
# Datasets that are another dataset's images stored differently: the reader must see the change of pixels.
COPIES = {"cifar10-jpeg": "a JPEG copy of cifar10"}
NOT_SET = "not set"
# Sections in the order their differences are listed: what most changes the accuracy first.
SECTION_ORDER = ("train", "dataset", "optimizer", "schedule", "augment", "model")
# The one form of a difference: "KEY: THIS RUN'S VALUE (the report: THE REPORT'S VALUE)"
DIFFERENCE = re.compile(r"^(?P<key>[^:]+): (?P<run>.*) \(the report: (?P<report>.*)\)$")


def reported_figures(entry: ZooEntry, report_config: Mapping[str, Any], run_config: Mapping[str, Any]) -> dict:
    """The lab report's own figures for a run of ``entry`` and how the run's recipe differs from the
    report's (`recipe_differences`; an empty list: the report's recipe); {} for an entry with no reported
    accuracy."""
    if entry.reported_accuracy is None:
        return {}
    return {"reported_accuracy": entry.reported_accuracy, "reported_accuracy_kind": entry.reported_accuracy_kind,
            "reported_time_s": entry.reported_time_s, "reported_dataset": entry.dataset, "source": entry.source,
            "recipe_differences": recipe_differences(report_config, run_config)}


def recipe_differences(report_config: Mapping[str, Any], run_config: Mapping[str, Any]) -> list[str]:
    """Each setting whose value in ``run_config`` differs from ``report_config``'s, as ``"train.epochs: 1 (the
    report: 20)"``, section by section (`SECTION_ORDER`: training first), each in the config's order. Settings
    that do not change what is trained (seed, device, precision, ...: `NOT_RECIPE`) are left out. None and an
    absent key are the same, "not set"; a section set on one side only (``train.early_stopping``) is one
    difference."""
    order = sorted([*run_config, *(key for key in report_config if key not in run_config)],
                   key=lambda key: SECTION_ORDER.index(key) if key in SECTION_ORDER else len(SECTION_ORDER))
    return [f"{key}: {_describe(key, run)} (the report: {_describe(key, report)})"
            for key, run, report in _compare(report_config, run_config, "", order)]


def short_difference(difference: str) -> str:
    """A difference in a table cell's words: "train.epochs: 1 (the report: 20)" as "epochs 1 (report 20)",
    "optimizer.name: sgd (the report: adam)" as "optimizer sgd (report adam)"; text of another form as it is."""
    match = DIFFERENCE.match(difference)
    if match is None:
        return difference
    section, _, setting = match["key"].partition(".")
    label = section if setting in ("", "name") else setting
    return f"{label} {match['run']} (report {match['report']})"


def is_dataset_copy(difference: str) -> bool:
    """Whether ``difference`` is only the dataset's storage: the run used a copy of the report's dataset
    (`COPIES`: cifar10-jpeg for cifar10), the same images with some detail lost, not another recipe."""
    match = DIFFERENCE.match(difference)
    return (match is not None and match["key"] == "dataset.name"
            and any(match["run"] == f"{copy}, {what}" and what.endswith(f" {match['report']}")
                    for copy, what in COPIES.items()))


def _compare(report: Mapping[str, Any], run: Mapping[str, Any], prefix: str,
             keys: list[str] | None = None) -> list[tuple[str, Any, Any]]:
    """(dotted key, run's value, report's value) of each differing setting, sections compared key by key;
    ``keys`` in the order given (default: the run's order, then keys only the report has)."""
    found = []
    for key in keys if keys is not None else [*run, *(key for key in report if key not in run)]:
        dotted, run_value, report_value = f"{prefix}{key}", run.get(key), report.get(key)
        if dotted in NOT_RECIPE:
            continue
        if dotted == "dataset.name":
            run_value, report_value = _dataset_name(run_value), _dataset_name(report_value)
        if isinstance(run_value, Mapping) and isinstance(report_value, Mapping):
            found += _compare(report_value, run_value, dotted + ".")
        elif run_value != report_value:
            found.append((dotted, run_value, report_value))
    return found


def _dataset_name(name: Any) -> Any:
    # spelled as dataset names are looked up (data/registry.py: find_entry), so "MNIST" is "mnist"
    return name.strip().lower().replace("_", "-") if isinstance(name, str) else name


def _describe(key: str, value: Any) -> str:
    if key == "dataset.subset":
        return "all" if value is None else f"{value} training images"
    if key == "dataset.test_subset":
        return "all" if value is None else f"{value} test images"
    if key == "dataset.name" and value in COPIES:
        return f"{value}, {COPIES[value]}"
    if value is None:
        return "the zoo entry's" if key.startswith("model.") else NOT_SET
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{name}: {_describe(name, item)}" for name, item in value.items()) + "}"
    return str(value)
