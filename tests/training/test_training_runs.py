"""Real training runs on scikit-learn's digits (1,797 real 8x8 images): seconds on 2 cores."""

import csv
import json

import numpy as np
import pytest
import torch

from cnnlab import runs
from cnnlab.data.device_images import DeviceImages
from cnnlab.data.normalization import fit_normalization
from cnnlab.config import load_config
from cnnlab.errors import TrainingDiverged
from cnnlab.experiment import load_weights, run_experiment
from cnnlab.models import create_model


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "digits"
    config = load_config("examples/digits.yaml", ["train.epochs=12"])
    return run_experiment(config, out=out, show_progress=False)


@pytest.mark.slow
def test_digits_beats_90_percent(digits_run):
    metrics = json.loads((digits_run / "metrics.json").read_text())
    assert metrics["status"] == "complete"
    assert metrics["dataset"] == "digits"
    assert metrics["test_accuracy"] > 0.90
    assert 0 < metrics["test_loss"] < 1
    assert metrics["train_time_s"] > 0
    assert metrics["params"] > 0 and metrics["epochs"] >= 1


@pytest.mark.slow
def test_run_directory_contract(digits_run):
    for name in ("config.yaml", "metrics.json", "history.csv", "predictions.npz", "examples.npz",
                 "model.safetensors", "environment.json", "summary.txt", "report.md", "report.html"):
        assert (digits_run / name).exists(), name
    assert any((digits_run / "figures").glob("*.png"))
    with (digits_run / "history.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "epoch_time_s"]
    predictions = runs.load_npz(digits_run / "predictions.npz")
    assert predictions["probabilities"].shape == (len(predictions["labels"]), 10)
    np.testing.assert_allclose(predictions["probabilities"].sum(1), 1, atol=1e-4)
    environment = json.loads((digits_run / "environment.json").read_text())
    assert environment["torch"] == torch.__version__ and environment["seed"] == 0


@pytest.mark.slow
def test_saved_weights_reproduce_predictions(digits_run):
    config = load_config(str(digits_run / "config.yaml"))
    built = create_model(config.to_dict()["model"], (1, 8, 8), 10)
    load_weights(built.module, digits_run / "model.safetensors")
    from cnnlab.data import load_dataset
    dataset = load_dataset("digits")
    metrics = json.loads((digits_run / "metrics.json").read_text())
    norm = fit_normalization("scale", dataset.train_images)
    data = DeviceImages(dataset.test_images, dataset.test_labels, norm, torch.device("cpu"))
    from cnnlab.training.evaluation import predict_probabilities
    from cnnlab.training.precision import ComputePlan
    with ComputePlan(torch.device("cpu"), metrics["fast_path"]["precision"]).autocast():  # as the run evaluated
        probabilities = predict_probabilities(built.module, data)
    saved = runs.load_npz(digits_run / "predictions.npz")["probabilities"]
    np.testing.assert_allclose(probabilities, saved, atol=1e-5)
    assert metrics["normalization"]["mode"] == "scale"


@pytest.mark.slow
def test_same_seed_same_history(tmp_path):
    overrides = ["train.epochs=2", "model=mlp", "train.early_stopping=null"]
    first = run_experiment(load_config("examples/digits.yaml", overrides), out=tmp_path / "a", show_progress=False)
    second = run_experiment(load_config("examples/digits.yaml", overrides), out=tmp_path / "b", show_progress=False)
    a, b = runs.read_history(first), runs.read_history(second)
    assert [r["train_loss"] for r in a] == pytest.approx([r["train_loss"] for r in b], rel=1e-6)


@pytest.mark.slow
def test_early_stopping_restores_best(tmp_path):
    config = load_config("examples/digits.yaml", [
        "train.epochs=40", "model=mlp", "optimizer.lr=0.01",
        "train.early_stopping={monitor: val_loss, patience: 2, restore_best: true}"])
    run_dir = run_experiment(config, out=tmp_path / "es", show_progress=False)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    history = runs.read_history(run_dir)
    assert metrics["epochs"] < 40, "patience 2 at lr 0.01 should stop before 40 epochs"
    best = min(history, key=lambda row: row["val_loss"])
    assert metrics["best_epoch"] == int(best["epoch"])
    assert "restored from epoch" in metrics["stop_reason"]


def test_nan_loss_stops_with_message_and_keeps_history(tmp_path):
    config = load_config("examples/digits.yaml", ["train.epochs=3", "model=mlp", "optimizer.name=sgd",
                                                  "optimizer.lr=1e6", "train.early_stopping=null"])
    with pytest.raises(TrainingDiverged) as error:
        run_experiment(config, out=tmp_path / "nan", show_progress=False)
    message = str(error.value)
    assert "epoch 1" in message and "learning rate" in message and "optimizer.lr=" in message
    metrics = json.loads((tmp_path / "nan" / "metrics.json").read_text())
    assert metrics["status"] == "diverged"
    history = runs.read_history(tmp_path / "nan")
    assert history and np.isnan(history[-1]["train_loss"]), "the diverged epoch is recorded as a NaN row"
    assert "diverged at epoch 1" in (tmp_path / "nan" / "report.md").read_text()
    assert (tmp_path / "nan" / "config.yaml").exists()
    assert (tmp_path / "nan" / "report.md").exists()
    assert not runs.is_complete(tmp_path / "nan")


@pytest.mark.slow
def test_reused_run_directory_keeps_nothing_stale(tmp_path):
    # an overwrite builds the new run beside the old one: it holds nothing of the old, which is kept
    out = tmp_path / "reused"
    run_experiment(load_config("mlp", ["train.epochs=1"]), out=out, show_progress=False)
    assert (out / "predictions.npz").exists()
    with pytest.raises(TrainingDiverged):
        run_experiment(load_config("mlp", ["train.epochs=1", "optimizer.name=sgd", "optimizer.lr=1e6"]),
                       out=out, show_progress=False, overwrite=True)
    (new,) = tmp_path.glob("reused.partial-*")
    assert not (new / "predictions.npz").exists() and not (new / "model.safetensors").exists()
    assert "Per-class scores" not in (new / "report.md").read_text()
    assert (out / "predictions.npz").exists() and "Per-class scores" in (out / "report.md").read_text()


@pytest.mark.slow
def test_last_batch_of_one_is_dropped_so_dense_batch_norm_trains(tmp_path):
    # 1437 digits training images, no validation: 1437 = 4 * 359 + 1
    config = load_config("examples/digits.yaml", [
        "model={layers: ['Flatten', 'Dense: 16', 'BatchNorm', 'Dense: 10']}", "train.batch_size=4",
        "train.epochs=1", "train.validation_split=0", "train.early_stopping=null"])
    run_dir = run_experiment(config, out=tmp_path / "bn", show_progress=False)
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "complete"
