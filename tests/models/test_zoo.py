"""cnnlab.models.zoo: one module per report, a legend of name prefixes, renamed entries still resolve."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from cnnlab.cli import main
from cnnlab.config import load_config, validate_config
from cnnlab.models import build_model, create_model, zoo


def test_every_entry_name_has_a_prefix_in_the_legend():
    prefixes = {zoo.name_prefix(entry.name) for entry in zoo.list_entries()}
    assert prefixes == set(zoo.PREFIXES)
    assert zoo.name_prefix("keras/mnist/model1") == "keras/" and zoo.name_prefix("mlp") == "mlp"


def test_the_legend_names_the_reports():
    assert "DLCV Lab 4" in zoo.PREFIXES["keras/"] and "Keras" in zoo.PREFIXES["keras/"]
    assert "DLCV Lab 4" in zoo.PREFIXES["torch/"] and "PyTorch" in zoo.PREFIXES["torch/"]
    assert "report 001" in zoo.PREFIXES["cifar10/"] and "report 003" in zoo.PREFIXES["cifar10/"]
    assert "TP RF: CNN" in zoo.PREFIXES["report004/"]


@pytest.mark.parametrize("old_name, new_name", sorted(zoo.RENAMED.items()))
def test_renamed_entries_resolve_to_their_new_name(old_name, new_name):
    assert zoo.get_entry(old_name) is zoo.get_entry(new_name)
    assert old_name not in {entry.name for entry in zoo.list_entries()}


def test_a_zoo_name_prefix_tprf_is_gone_from_the_list():
    assert not any(entry.name.startswith("tprf/") for entry in zoo.list_entries())
    assert zoo.get_entry("report004/baseline").source == "report 004"


def test_an_old_name_gives_the_new_entrys_recipe():
    config = load_config("tprf/three-blocks-schedule", ["train.epochs=1"])
    assert config.model.name == "report004/three-blocks-schedule"
    assert config.schedule.name == "step" and config.train.batch_size == 32


def test_an_old_runs_config_still_rebuilds_the_same_model():
    # config.yaml of a run made before the rename names the model tprf/baseline
    saved = validate_config({"dataset": "cifar10-jpeg", "model": {"name": "tprf/baseline"}}, "config.yaml")
    torch.manual_seed(0)
    old = create_model(saved.to_dict()["model"], (3, 32, 32), 10).module.state_dict()
    torch.manual_seed(0)
    new = create_model("report004/baseline", (3, 32, 32), 10).module.state_dict()
    assert list(old) == list(new)
    assert all(torch.equal(old[key], new[key]) for key in old)


def test_models_command_prints_the_legend_and_only_current_names(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "tprf/" not in out
    legend = out[out.index("Name prefixes:"):]
    for prefix in zoo.PREFIXES:
        assert f"  {prefix} " in legend
    assert "report004/three-blocks-schedule" in out


# --------------------------------------------------------------------------- recipes as the reports state them

def test_report000s_mlp_baseline_has_entries_with_its_figures():
    mnist, cifar = zoo.get_entry("keras/mnist/mlp"), zoo.get_entry("keras/cifar10/mlp")
    assert (mnist.dataset, mnist.reported_accuracy, mnist.reported_time_s) == ("mnist", 0.9759, 42.64)
    assert (cifar.dataset, cifar.reported_accuracy, cifar.reported_time_s) == ("cifar10", 0.4450, 46.06)
    assert "assumed" in mnist.description and "assumed" in cifar.description  # the report gives no layers


def test_report001s_dense_network_trains_on_all_images_and_its_cnns_keep_a_quarter_for_validation():
    # the dense network's fit has no validation_split; train_cnn passes validation_split=0.25
    assert zoo.get_entry("cifar10/dense").recipe["train"]["validation_split"] == 0.0
    assert zoo.get_entry("cifar10/cnn").recipe["train"]["validation_split"] == 0.25


def test_report003_trains_on_all_images_and_its_first_run_is_on_raw_pixels():
    assert all(zoo.get_entry(name).recipe["train"]["validation_split"] == 0.0
               for name in ("cifar10/bn-cnn", "cifar10/bn-cnn-zscore", "cifar10/bn-cnn-l2"))
    assert zoo.get_entry("cifar10/bn-cnn").recipe["dataset"]["normalize"] == "none"
    # the report's z-score is np.mean(x_train) / np.std(x_train): one mean and std over every channel
    assert zoo.get_entry("cifar10/bn-cnn-zscore").recipe["dataset"]["normalize"] == "zscore-global"


def test_report004_feeds_the_tutorials_inputs_in_minus_one_to_one():
    # the tutorial the report starts from: Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    for name in ("report004/baseline", "report004/three-blocks-augment", "report004/three-blocks-schedule"):
        assert zoo.get_entry(name).recipe["dataset"]["normalize"] == "symmetric"
    assert "dataset" not in zoo.get_entry("report004/squeezenet").recipe  # the backbone's own mean/std


def test_report004s_schedule_starts_at_the_reports_lr_for_its_50_epochs():
    for name in ("report004/three-blocks-schedule", "report004/three-blocks-dropout"):
        recipe = zoo.get_entry(name).recipe
        assert recipe["optimizer"]["lr"] == 0.1 and recipe["train"]["epochs"] == 50
        assert recipe["augment"]["horizontal_flip"] and recipe["augment"]["vertical_flip"]


def test_model10_and_the_mlp_are_in_the_keras_cifar10_suite():
    suite = yaml.safe_load((Path(__file__).parents[2] / "suites" / "report000-keras-cifar10.yaml").read_text())
    assert "keras/cifar10/model10" in suite["experiments"] and "keras/cifar10/mlp" in suite["experiments"]


@pytest.mark.parametrize("name", ["cifar10/bn-cnn", "cifar10/cnn-batchnorm", "keras/mnist/model4"])
def test_keras_entries_keep_keras_batch_norm_constants(name):
    """The reports' Keras BatchNormalization: moving-average momentum 0.99 (0.01 in PyTorch's terms), epsilon 1e-3."""
    entry = zoo.get_entry(name)
    built = build_model(entry.layers, zoo.DATASET_INPUT_SHAPES[entry.dataset], 10)
    norms = [module for module in built.module.modules() if isinstance(module, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and all((norm.momentum, norm.eps) == (0.01, 0.001) for norm in norms)
