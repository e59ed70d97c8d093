"""The training loop's guarantees that once failed: early stopping restores the weights of its best
epoch (the evaluated ones: the weight average when there is one), validation evaluates what will be
saved, a loss that explodes but stays finite is divergence, and on a CPU a NaN is caught at its step."""

import math

import pytest
import torch
from torch import nn

from cnnlab.config import load_config
from cnnlab.data import DatasetConfig, load_dataset
from cnnlab.data.device_images import DeviceImages
from cnnlab.data.normalization import fit_normalization
from cnnlab.errors import TrainingDiverged
from cnnlab.experiment import run_experiment
from cnnlab.models import create_model
from cnnlab.training.divergence import DivergenceGuard
from cnnlab.training.evaluation import evaluate_indices
from cnnlab.training.loop import fit
from cnnlab.training.precision import ComputePlan

CPU = torch.device("cpu")
LAYERS = ["Flatten", "Dense: 64, relu", "Dropout: 0.2", "Dense: classes"]
TRAIN, VALIDATION = torch.arange(0, 1000), torch.arange(1000, 1300)


@pytest.fixture(scope="module")
def digits():
    dataset = load_dataset(DatasetConfig(name="digits"))
    return DeviceImages(dataset.train_images, dataset.train_labels, fit_normalization("scale", dataset.train_images), CPU)


def train(digits, overrides, model_seed=0):
    """A fresh model (same initial weights for the same seed) trained by `fit`; returns (model, result)."""
    config = load_config("examples/digits.yaml", ["schedule.name=constant", "optimizer.lr=0.01", "train.seed=1",
                                                  "train.precision=fp32", *overrides])
    torch.manual_seed(model_seed)
    model = create_model({"layers": LAYERS}, (1, 8, 8), 10).module
    result = fit(model, digits, TRAIN, VALIDATION, config, show_progress=False, plan=ComputePlan(CPU))
    return model, result


def assert_same_weights(left: nn.Module, right: nn.Module) -> None:
    for (name, a), (_, b) in zip(left.state_dict().items(), right.state_dict().items()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("average", [None, 0.9], ids=["raw-weights", "weight-average"])
def test_early_stopping_restores_the_weights_of_its_best_epoch(digits, average):
    extra = [f"train.ema_decay={average}"] if average else []
    stopped, result = train(digits, ["train.epochs=30", "train.early_stopping={patience: 1}", *extra])
    best = result.best_epoch
    assert len(result.history) < 30 and best < len(result.history), "stopped early, after its best epoch"
    assert best == min(result.history, key=lambda row: row["val_loss"])["epoch"]
    # the same run stopped at the best epoch by its length alone: its final (evaluated, saved) weights
    reference, _ = train(digits, [f"train.epochs={best}", "train.early_stopping=null", *extra])
    assert_same_weights(stopped, reference)


def test_validation_evaluates_the_weight_average_that_is_saved(digits):
    model, result = train(digits, ["train.epochs=3", "train.ema_decay=0.9", "train.early_stopping=null"])
    val_loss, val_accuracy = evaluate_indices(model, digits, VALIDATION, 1024)  # the model now holds the average
    assert result.history[-1]["val_loss"] == val_loss
    assert result.history[-1]["val_accuracy"] == val_accuracy


def test_a_finite_explosion_is_divergence(tmp_path):
    config = load_config("mlp", ["train.epochs=2", "optimizer.name=adam", "optimizer.lr=1e6",
                                 "train.early_stopping=null"])
    with pytest.raises(TrainingDiverged) as error:
        run_experiment(config, out=tmp_path / "run", show_progress=False)
    assert "exploded to" in str(error.value) and "epoch 1" in str(error.value)


def test_divergence_rule():
    guard = DivergenceGuard()
    guard.observe(torch.tensor(2.4), n_classes=10)
    assert guard.problem(3.6e27).startswith("exploded to 3.6e+27")
    assert guard.problem(math.nan) == guard.problem(math.inf) == "became NaN or infinite"
    assert guard.problem(50.0) is None  # an overfit model's validation loss is far below 2,400
    assert guard.limit() == pytest.approx(2400)


class NanAfter(nn.Module):
    """Passes its input through, until its ``calls``-th training call makes it NaN (a stand-in for
    an overflow at one step)."""

    def __init__(self, calls: int):
        super().__init__()
        self.calls, self.seen = calls, 0

    def forward(self, inputs):
        if self.training:
            self.seen += 1
            if self.seen >= self.calls:
                return inputs * math.nan
        return inputs


@pytest.mark.parametrize("bad_step", [1, 7, 30])
def test_on_a_cpu_a_nan_is_caught_at_the_step_it_appears(digits, bad_step):
    # batches of 8: 125 steps an epoch (checks every 6 steps caught the NaN of step 7 only at step 12)
    config = load_config("examples/digits.yaml", ["train.epochs=2", "train.early_stopping=null", "train.batch_size=8"])
    torch.manual_seed(0)
    model = nn.Sequential(create_model({"layers": LAYERS}, (1, 8, 8), 10).module, NanAfter(bad_step))
    result = fit(model, digits, TRAIN, VALIDATION, config, show_progress=False, plan=ComputePlan(CPU))
    assert result.status == "diverged"
    assert f"epoch 1, by step {bad_step} of 125" in result.stop_reason
    assert model[1].seen == bad_step, "no step after the NaN"
