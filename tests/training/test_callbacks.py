"""Training callbacks: `fit` calls each callback's on_epoch_end with every epoch's history row, in the order
given, and on_run_end once however training ends; history.csv is written by the same hook (`HistoryWriter`),
before the user's callbacks; a callback that raises stops training with its own exception and a note; an
object without a hook is refused before anything trains; callbacks change nothing in training."""

import math

import numpy as np
import pytest
import torch

from cnnlab import runs
from cnnlab.config import load_config
from cnnlab.data import DatasetConfig, load_dataset
from cnnlab.data.device_images import DeviceImages
from cnnlab.data.normalization import fit_normalization
from cnnlab.experiment import run_experiment
from cnnlab.models import create_model
from cnnlab.training.callbacks import Callback, HistoryWriter, TrainResult, check_callbacks
from cnnlab.training.loop import fit
from cnnlab.training.precision import ComputePlan

CPU = torch.device("cpu")
TRAIN, VALIDATION = torch.arange(0, 600), torch.arange(600, 800)


class Recorder(Callback):
    """Records every call, in order, with the history.csv it finds at that moment (when given a run folder)."""

    def __init__(self, calls, run_dir=None, name="recorder"):
        self.calls, self.run_dir, self.name = calls, run_dir, name

    def on_epoch_end(self, row):
        on_disk = runs.read_history(self.run_dir) if self.run_dir is not None else None
        self.calls.append((self.name, "epoch", row, on_disk))
        row["train_loss"] = -1.0  # a callback that edits its row changes nobody else's

    def on_run_end(self, result):
        self.calls.append((self.name, "end", result, None))


@pytest.fixture(scope="module")
def digits():
    dataset = load_dataset(DatasetConfig(name="digits"))
    return DeviceImages(dataset.train_images, dataset.train_labels, fit_normalization("scale", dataset.train_images), CPU)


def fit_digits(digits, callbacks=(), overrides=()):
    config = load_config("mlp", ["train.epochs=3", "train.seed=2", "train.precision=fp32", *overrides])
    torch.manual_seed(0)
    model = create_model("mlp", (1, 8, 8), 10).module
    return model, fit(model, digits, TRAIN, VALIDATION, config, callbacks=callbacks, show_progress=False,
                      plan=ComputePlan(CPU))


def test_hooks_get_every_row_in_order_then_the_result_once(digits):
    calls = []
    model, result = fit_digits(digits, [Recorder(calls, name="first"), Recorder(calls, name="second")])
    assert [(name, kind) for name, kind, *_ in calls] == [
        ("first", "epoch"), ("second", "epoch")] * 3 + [("first", "end"), ("second", "end")]
    first_rows = [row for name, kind, row, _ in calls if kind == "epoch" and name == "first"]
    assert [row["epoch"] for row in first_rows] == [1, 2, 3]
    assert all(row["train_loss"] == -1.0 for row in first_rows)  # each callback got its own copy ...
    assert all(row["train_loss"] > 0 for row in result.history)  # ... and the history is untouched
    second_rows = [row for name, kind, row, _ in calls if kind == "epoch" and name == "second"]
    assert [{**row, "train_loss": 0} for row in second_rows] == [{**row, "train_loss": 0} for row in result.history]
    assert set(first_rows[0]) == set(runs.HISTORY_COLUMNS)
    ends = [value for name, kind, value, _ in calls if kind == "end"]
    assert ends[0] is result and ends[0].status == "complete"


def test_callbacks_change_nothing_in_training(digits):
    plain_model, plain = fit_digits(digits)
    watched_model, watched = fit_digits(digits, [Recorder([])])
    for (name, left), (_, right) in zip(plain_model.state_dict().items(), watched_model.state_dict().items()):
        assert torch.equal(left, right), name
    strip = [{key: value for key, value in row.items() if key != "epoch_time_s"} for row in plain.history]
    assert strip == [{key: value for key, value in row.items() if key != "epoch_time_s"} for row in watched.history]


def test_a_run_that_diverges_ends_with_its_nan_row(digits):
    calls = []
    _, result = fit_digits(digits, [Recorder(calls)], ["optimizer.name=sgd", "optimizer.lr=1e6"])
    assert result.status == "diverged"
    (end,) = [value for _, kind, value, _ in calls if kind == "end"]
    assert end.status == "diverged" and math.isnan(end.history[-1]["train_loss"])
    # the diverged epoch never ended, so no on_epoch_end for it
    assert len([call for call in calls if call[1] == "epoch"]) == len(result.history) - 1


def test_a_raising_callback_stops_training_with_its_own_error_and_a_note(digits):
    class Boom(Callback):
        def on_epoch_end(self, row):
            if row["epoch"] == 2:
                raise ValueError("stop here")

    calls = []
    with pytest.raises(ValueError, match="stop here") as caught:
        fit_digits(digits, [Recorder(calls), Boom()])
    assert [row["epoch"] for _, kind, row, _ in calls if kind == "epoch"] == [1, 2]  # epoch 3 never ran
    assert not [call for call in calls if call[1] == "end"]
    notes = " ".join(getattr(caught.value, "__notes__", []))
    assert "Boom.on_epoch_end (epoch 2)" in notes or not hasattr(caught.value, "add_note")


def test_objects_without_a_hook_are_refused_before_training(digits, tmp_path):
    class Misspelt:
        def on_epoch_ended(self, row):
            pass

    with pytest.raises(TypeError, match="not a callback"):
        fit_digits(digits, [Misspelt()])
    with pytest.raises(TypeError, match="not a callback"):
        run_experiment(load_config("mlp", ["train.epochs=1"]), out=tmp_path / "run", show_progress=False,
                       callbacks=[print])
    assert not (tmp_path / "run").exists(), "refused before the run folder was made"
    only_end = type("OnlyEnd", (), {"on_run_end": lambda self, result: None})()
    assert check_callbacks([only_end]) == [only_end] and check_callbacks(None) == []
    single = Callback()
    assert check_callbacks(single) == [single]  # one callback on its own, not in a list


def test_history_writer_writes_the_rows_it_gets_after_earlier_ones(tmp_path):
    path = tmp_path / "history.csv"
    earlier = [{"epoch": 1, "train_loss": 2.0, "train_accuracy": 0.5, "val_loss": math.nan, "val_accuracy": math.nan,
                "lr": 0.1, "epoch_time_s": 1.0}]
    writer = HistoryWriter(path, earlier)
    writer.on_epoch_end({**earlier[0], "epoch": 2, "train_loss": 1.5})
    assert [row["epoch"] for row in runs.read_history(tmp_path)] == [1, 2]
    final = TrainResult(history=[*earlier, {**earlier[0], "epoch": 2, "train_loss": math.nan}], status="diverged")
    writer.on_run_end(final)
    rows = runs.read_history(tmp_path)
    assert [row["epoch"] for row in rows] == [1, 2] and math.isnan(rows[1]["train_loss"])


@pytest.mark.slow
def test_history_csv_is_written_by_the_same_hook_before_user_callbacks(tmp_path):
    out = tmp_path / "run"
    calls = []
    run_dir = run_experiment(load_config("mlp", ["train.epochs=3"]), out=out, show_progress=False,
                             callbacks=[Recorder(calls, run_dir=out)])
    epochs = [(row, on_disk) for _, kind, row, on_disk in calls if kind == "epoch"]
    saved = runs.read_history(run_dir)
    assert len(epochs) == len(saved) == 3
    for number, (row, on_disk) in enumerate(epochs, 1):
        assert len(on_disk) == number, "history.csv already holds the row when the user's callback runs"
        assert on_disk[-1]["epoch"] == row["epoch"] == number
    for (row, _), written in zip(epochs, saved):
        for column in runs.HISTORY_COLUMNS:
            if column != "train_loss":  # the recorder set it to -1 in its own copy
                np.testing.assert_allclose(written[column], row[column], rtol=1e-5)  # the CSV keeps 6 digits
    (end,) = [value for _, kind, value, _ in calls if kind == "end"]
    assert end.status == "complete" and len(end.history) == 3


@pytest.mark.slow
def test_a_run_stopped_by_a_callback_keeps_its_history_and_can_be_resumed(tmp_path):
    class StopAtTwo(Callback):
        def on_epoch_end(self, row):
            if row["epoch"] == 2:
                raise KeyError("enough")

    out = tmp_path / "run"
    config = load_config("mlp", ["train.epochs=3"])
    with pytest.raises(KeyError):
        run_experiment(config, out=out, show_progress=False, callbacks=[StopAtTwo()])
    assert [row["epoch"] for row in runs.read_history(out)] == [1, 2]
    assert runs.read_json(out / runs.METRICS_FILE)["status"] == "running"
    resumed = run_experiment(config, out=out, show_progress=False, resume=True)
    assert [row["epoch"] for row in runs.read_history(resumed)] == [1, 2, 3]
    assert runs.is_complete(resumed)
