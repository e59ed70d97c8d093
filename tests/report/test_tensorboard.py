"""TensorBoard events of a run (report/tensorboard.py), read back with TensorBoard's own reader: written
while a digits run trains (`train.tensorboard: true`) and by `cnnlab tensorboard RUN` from the files."""

import json
import math
import shutil

import numpy as np
import pytest

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.plugins.hparams import plugin_data_pb2  # noqa: E402

from cnnlab import output_folders, runs  # noqa: E402
from cnnlab.cli import main  # noqa: E402
from cnnlab.config import load_config  # noqa: E402
from cnnlab.experiment import run_experiment  # noqa: E402
from cnnlab.report.tensorboard import SCALAR_TAGS  # noqa: E402
from cnnlab.training.callbacks import Callback  # noqa: E402
from cnnlab.training.checkpoint import resume_conflicts  # noqa: E402

OVERRIDES = ["model=mlp", "train.epochs=3", "train.validate_every=2", "train.early_stopping=null",
             "train.threads=1", "train.precision=fp32", "train.tensorboard=true"]


def read_events(folder):
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


def scalars(events):
    return {tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def hparams(events):
    """The hyperparameters and metric tags of the HParams plugin's summaries."""
    values, metric_tags = {}, []
    for raw in events.PluginTagToContent("hparams").values():
        data = plugin_data_pb2.HParamsPluginData.FromString(raw)
        if data.HasField("session_start_info"):
            for key, value in data.session_start_info.hparams.items():
                values[key] = value.number_value if value.HasField("number_value") else value.string_value
        if data.HasField("experiment"):
            metric_tags = [info.name.tag for info in data.experiment.metric_infos]
    return values, metric_tags


class EventProbe(Callback):
    """Reads the run's event files at the end of epoch 1 (the run's callbacks come after TensorBoard's)."""

    def __init__(self, run_dir):
        self.run_dir, self.seen = run_dir, None

    def on_epoch_end(self, row):
        if row["epoch"] == 1:
            self.seen = scalars(read_events(self.run_dir / runs.TENSORBOARD_DIR))


@pytest.fixture(scope="module")
def tensorboard_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tensorboard") / "run"
    probe = EventProbe(out)
    run_dir = run_experiment(load_config("examples/digits.yaml", OVERRIDES), out=out, show_progress=False,
                             callbacks=[probe])
    return run_dir, probe


def assert_events_hold_the_run(run_dir):
    """Every scalar is history.csv's value (as float32) at step = epoch; the image and hyperparameters."""
    events = read_events(run_dir / runs.TENSORBOARD_DIR)
    found, history = scalars(events), runs.read_history(run_dir)
    for column, tag in SCALAR_TAGS.items():
        expected = [(int(row["epoch"]), float(np.float32(row[column]))) for row in history if math.isfinite(row[column])]
        assert found[tag] == expected, tag
    assert [step for step, _ in found["loss/validation"]] == [2, 3]  # validate_every=2 and the last epoch
    metrics = json.loads((run_dir / runs.METRICS_FILE).read_text())
    assert found["final/test_accuracy"] == [(3, float(np.float32(metrics["test_accuracy"])))]
    assert found["final/best_val_loss"] == [(3, float(np.float32(min(row["val_loss"] for row in history[1:]))))]
    image = events.Images("confusion_matrix")
    assert len(image) == 1 and image[0].step == 3 and image[0].width > 200 and image[0].height > 200
    values, metric_tags = hparams(events)
    assert values["optimizer.lr"] == pytest.approx(1e-3) and values["train.batch_size"] == 32
    assert values["dataset.name"] == "digits" and values["model.name"] == "mlp"
    assert values["train.tensorboard"] == "true"
    assert {"final/test_accuracy", "final/test_loss", "final/best_val_accuracy"} <= set(metric_tags)
    return found


@pytest.mark.slow
def test_training_writes_curves_matrix_and_hyperparameters_while_it_trains(tensorboard_run):
    run_dir, probe = tensorboard_run
    assert_events_hold_the_run(run_dir)
    history = runs.read_history(run_dir)
    assert probe.seen["loss/train"] == [(1, float(np.float32(history[0]["train_loss"])))]  # readable after epoch 1


@pytest.mark.slow
def test_cnnlab_tensorboard_writes_the_same_events_from_the_files_and_replaces_its_own(tensorboard_run, tmp_path,
                                                                                        capsys):
    run_dir = tmp_path / "copy"
    shutil.copytree(tensorboard_run[0], run_dir)
    live = scalars(read_events(run_dir / runs.TENSORBOARD_DIR))
    for _ in range(2):  # a second conversion replaces the first one's events: no repeated points
        assert main(["tensorboard", str(run_dir)]) == 0
        assert capsys.readouterr().out.strip() == str(run_dir / runs.TENSORBOARD_DIR)
        assert len(list((run_dir / runs.TENSORBOARD_DIR).iterdir())) == 1
        converted = assert_events_hold_the_run(run_dir)
        assert converted == live


@pytest.mark.slow
def test_a_multi_seed_folder_converts_each_seed(tensorboard_run, tmp_path, capsys):
    folder = tmp_path / "seeds"
    shutil.copytree(tensorboard_run[0], folder / "seed-0")
    runs.write_json_atomic(folder / runs.METRICS_FILE, {"cnnlab": output_folders.output_marker("seeds")})
    assert main(["tensorboard", str(folder)]) == 0
    assert capsys.readouterr().out.strip() == str(folder / "seed-0" / runs.TENSORBOARD_DIR)


def test_not_a_run_is_one_clear_error(tmp_path, capsys):
    assert main(["tensorboard", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a cnnlab run directory" in err and "Traceback" not in err


def test_a_run_without_epochs_has_nothing_to_convert(tmp_path, capsys):
    runs.write_json_atomic(tmp_path / runs.METRICS_FILE, {"cnnlab": output_folders.output_marker("run"),
                                                          "status": "running"})
    assert main(["tensorboard", str(tmp_path)]) == 2
    assert "no curves to convert" in capsys.readouterr().err.replace("\n", " ")


def test_the_setting_leaves_earlier_configs_and_resumes_alone():
    assert "tensorboard" not in load_config("examples/digits.yaml").to_dict()["train"]  # config.yaml as before
    on = load_config("examples/digits.yaml", ["train.tensorboard=true"]).to_dict()
    assert on["train"]["tensorboard"] is True
    assert resume_conflicts(load_config("examples/digits.yaml").to_dict(), on) == []  # it changes no result


def test_a_replaced_run_loses_its_event_files_but_not_the_users(tmp_path):
    folder = tmp_path / runs.TENSORBOARD_DIR
    folder.mkdir()
    (folder / f"{runs.TENSORBOARD_EVENTS_PREFIX}123.host.1.0").write_bytes(b"")
    (folder / "notes.txt").write_text("mine")
    assert output_folders.remove_owned(tmp_path, output_folders._written_by_cnnlab) == ["tensorboard/notes.txt"]
