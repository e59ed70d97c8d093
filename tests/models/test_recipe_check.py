"""How a run's recipe differs from its zoo entry's lab report: `recipe_differences` on hand-built configs."""

from __future__ import annotations

import copy

import pytest

from cnnlab.config import load_config, validate_config, zoo_recipe
from cnnlab.models import zoo
from cnnlab.models.zoo.recipe_check import is_dataset_copy, recipe_differences, reported_figures, short_difference

MODEL = "keras/cifar10/model7"  # the report: 20 epochs on all of cifar10, batch 32, Adam 1e-3


def report_config(name: str = MODEL) -> dict:
    return validate_config(zoo_recipe(name)).to_dict()


def run_config(*overrides: str, name: str = MODEL) -> dict:
    return load_config(name, list(overrides)).to_dict()


@pytest.mark.parametrize("entry", zoo.list_entries(), ids=lambda entry: entry.name)
def test_every_zoo_name_alone_is_its_reports_recipe(entry):
    assert recipe_differences(report_config(entry.name), run_config(name=entry.name)) == []


def test_each_overridden_setting_is_named_with_both_values():
    differences = recipe_differences(report_config(), run_config(
        "train.epochs=1", "dataset.subset=5000", "dataset.name=cifar10-jpeg", "optimizer.lr=0.01"))
    assert differences == [
        "train.epochs: 1 (the report: 20)",
        "dataset.name: cifar10-jpeg, a JPEG copy of cifar10 (the report: cifar10)",
        "dataset.subset: 5000 training images (the report: all)",
        "optimizer.lr: 0.01 (the report: 0.001)",
    ]


def test_settings_that_do_not_change_what_is_trained_are_no_difference():
    same = run_config("train.seed=5", "train.device=cpu", "train.threads=1", "train.precision=fp32",
                      "train.eval_batch_size=64", "name=renamed", "dataset.name=CIFAR10")
    assert recipe_differences(report_config(), same) == []


def test_a_setting_the_recipe_leaves_to_the_defaults_is_still_compared():
    """The recipe of keras/cifar10/model7 names no augmentation, no weight decay and no early stopping."""
    differences = recipe_differences(report_config(), run_config(
        "augment.horizontal_flip=true", "optimizer.weight_decay=0.0005", "train.early_stopping.patience=3"))
    assert differences[0].startswith("train.early_stopping: {") and "patience: 3" in differences[0]
    assert differences[0].endswith("(the report: not set)")
    assert differences[1:] == ["optimizer.weight_decay: 0.0005 (the report: 0)",
                               "augment.horizontal_flip: true (the report: not set)"]


def test_hand_built_mappings():
    report = {"name": "a", "dataset": {"name": "mnist", "subset": None}, "train": {"epochs": 20, "seed": 0}}
    run = copy.deepcopy(report)
    assert recipe_differences(report, run) == []
    run["train"].update(epochs=3, seed=9)
    run["dataset"].update(subset=100)
    run["name"] = "b"
    assert recipe_differences(report, run) == ["train.epochs: 3 (the report: 20)",
                                               "dataset.subset: 100 training images (the report: all)"]


def test_short_forms_for_table_cells():
    assert short_difference("train.epochs: 1 (the report: 20)") == "epochs 1 (report 20)"
    assert short_difference("optimizer.name: sgd (the report: adam)") == "optimizer sgd (report adam)"
    assert short_difference("dataset.subset: 5000 training images (the report: all)") == \
        "subset 5000 training images (report all)"
    assert short_difference("something else") == "something else"


def test_reported_figures_carry_the_differences_and_only_for_a_reported_entry():
    figures = reported_figures(zoo.get_entry(MODEL), report_config(), run_config("train.epochs=2"))
    assert figures["reported_accuracy"] == pytest.approx(0.6857) and figures["reported_dataset"] == "cifar10"
    assert figures["recipe_differences"] == ["train.epochs: 2 (the report: 20)"]
    assert reported_figures(zoo.get_entry(MODEL), report_config(), run_config())["recipe_differences"] == []
    unreported = zoo.get_entry("fast/mnist")
    assert reported_figures(unreported, report_config("fast/mnist"), run_config(name="fast/mnist")) == {}


def test_only_a_copy_of_the_reports_own_dataset_is_a_dataset_copy():
    assert is_dataset_copy("dataset.name: cifar10-jpeg, a JPEG copy of cifar10 (the report: cifar10)")
    assert not is_dataset_copy("dataset.name: cifar10-jpeg, a JPEG copy of cifar10 (the report: mnist)")
    assert not is_dataset_copy("dataset.name: digits (the report: mnist)")
    assert not is_dataset_copy("train.epochs: 1 (the report: 20)")
