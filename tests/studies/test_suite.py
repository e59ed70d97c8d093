"""Suites on digits: comparison files, resume without retraining, the sweep table."""

import csv
import json

import pytest

from cnnlab.config import load_config
from cnnlab.errors import ConfigError
from cnnlab.output_folders import prepare_output_folder
from cnnlab.studies.suite import load_suite, run_suite


def write_suite(tmp_path, text):
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    return path


@pytest.mark.slow
def test_two_experiments_compare_and_resume(tmp_path, monkeypatch):
    path = write_suite(tmp_path, """
name: two
defaults: {train.epochs: 2, train.early_stopping: null}
experiments:
  - {run: mlp, label: mlp}
  - {run: mlp, label: mlp-sgd, overrides: {optimizer.name: sgd, optimizer.lr: 0.05, optimizer.momentum: 0.9}}
""")
    out = tmp_path / "out"
    written = run_suite(load_suite(path), out, show_progress=False)
    for key in ("csv", "md", "html"):
        assert written[key].exists()
    with written["csv"].open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["model"] for row in rows] == ["mlp", "mlp-sgd"]
    for row, folder in zip(rows, ("01-mlp", "02-mlp-sgd")):
        metrics = json.loads((out / folder / "metrics.json").read_text())
        assert float(row["test_accuracy"]) == pytest.approx(metrics["test_accuracy"])
    assert "mlp-sgd" in written["md"].read_text()

    calls = []
    monkeypatch.setattr("cnnlab.studies.suite.run_experiment", lambda *a, **k: calls.append(a))
    run_suite(load_suite(path), out, show_progress=False)
    assert calls == [], "complete runs must be skipped on a re-run"


@pytest.mark.slow
def test_changed_config_retrains(tmp_path, monkeypatch):
    path = write_suite(tmp_path, "experiments:\n  - {run: mlp, overrides: {train.epochs: 1}}\n")
    out = tmp_path / "out"
    run_suite(load_suite(path), out, show_progress=False)
    trained = []
    real = __import__("cnnlab.experiment", fromlist=["run_experiment"]).run_experiment

    def spy(*args, **kwargs):
        trained.append(args[0].train.epochs)
        return real(*args, **kwargs)

    monkeypatch.setattr("cnnlab.studies.suite.run_experiment", spy)
    run_suite(load_suite(path, ["train.epochs=2"]), out, show_progress=False)
    assert trained == [2]


@pytest.mark.slow
def test_sweep_writes_table_and_plot(tmp_path):
    path = write_suite(tmp_path, """
name: batch
defaults: {train.epochs: 1}
sweep: {run: mlp, train.batch_size: [16, 128], reported: [0.5, 0.4]}
""")
    written = run_suite(load_suite(path), tmp_path / "out", show_progress=False)
    with written["sweep_csv"].open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["value"] for row in rows] == ["16", "128"]
    assert [row["reported_accuracy"] for row in rows] == ["0.5", "0.4"]
    assert all(0 <= float(row["test_accuracy"]) <= 1 and float(row["epoch_time_s"]) > 0 for row in rows)
    assert (tmp_path / "out" / "figures" / "sweep.png").exists()
    config = (tmp_path / "out" / "02-mlp-train.batch_size=128" / "config.yaml").read_text()
    assert "batch_size: 128" in config


def test_bad_suite_files(tmp_path):
    with pytest.raises(ConfigError, match='Did you mean "experiments"'):
        load_suite(write_suite(tmp_path, "experiment: [mlp]\n"))
    with pytest.raises(ConfigError, match="non-empty experiments"):
        load_suite(write_suite(tmp_path, "name: x\n"))
    with pytest.raises(ConfigError, match="values"):
        load_suite(write_suite(tmp_path, "sweep: {run: mlp, parameter: train.epochs}\n"))


def test_shipped_suites_load():
    from pathlib import Path

    for path in sorted(Path("suites").glob("*.yaml")):
        loaded = load_suite(path)
        assert loaded.experiments, path
        for experiment in loaded.experiments:
            load_config(experiment.source, experiment.overrides)


def test_a_bad_experiment_fails_before_any_training(tmp_path, monkeypatch):
    path = write_suite(tmp_path, "experiments:\n  - mlp\n  - {run: mlp, overrides: {train.epocs: 2}}\n")
    with pytest.raises(ConfigError, match="epochs"):
        load_suite(path)


THREE = """
name: three
defaults: {train.epochs: 1}
experiments:
  - {run: mlp, label: first}
  - {run: mlp, label: exploding, overrides: {optimizer.name: sgd, optimizer.lr: 1.0e+12}}
  - {run: mlp, label: third, overrides: {train.seed: 3}}
"""


@pytest.mark.slow
def test_a_failing_experiment_is_reported_and_the_others_run(tmp_path):
    from cnnlab.studies.suite import SuiteFailed

    out = tmp_path / "out"
    with pytest.raises(SuiteFailed, match="1 of 3 experiments .* failed: exploding") as raised:
        run_suite(load_suite(write_suite(tmp_path, THREE)), out, show_progress=False)
    with raised.value.written["csv"].open() as handle:
        rows = {row["model"]: row for row in csv.DictReader(handle)}
    assert list(rows) == ["first", "third", "exploding"]
    assert rows["first"]["status"] == "complete" and rows["third"]["status"] == "complete"
    assert rows["exploding"]["status"].startswith("failed: ") and "learning rate" in rows["exploding"]["status"]
    assert "failed: " in raised.value.written["md"].read_text()
    for folder in ("01-first", "03-third"):
        assert json.loads((out / folder / "metrics.json").read_text())["status"] == "complete"


@pytest.mark.slow
def test_the_suite_command_exits_non_zero_and_names_the_failed(tmp_path, capsys):
    from cnnlab.cli import main

    code = main(["suite", str(write_suite(tmp_path, THREE)), "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err.replace("\n", " ")
    assert code == 2 and "exploding" in err and "Traceback" not in err
    assert (tmp_path / "out" / "comparison.html").exists()


@pytest.mark.slow
def test_an_unfinished_experiment_is_resumed_not_restarted(tmp_path, monkeypatch):
    from cnnlab.errors import TrainingInterrupted
    from cnnlab.experiment import run_experiment
    from cnnlab.training.interrupt import StopRequest

    path = write_suite(tmp_path, "defaults: {train.epochs: 2}\nexperiments:\n  - {run: mlp, label: only}\n")
    suite = load_suite(path)
    config = load_config(suite.experiments[0].source, suite.experiments[0].overrides)
    out = prepare_output_folder(tmp_path / "out", kind="suite")
    run_dir = out / "01-only"  # the folder the suite gives its first experiment
    with pytest.raises(TrainingInterrupted):
        run_experiment(config, out=run_dir, show_progress=False, stop=StopRequest(5))
    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return run_experiment(*args, **kwargs)

    monkeypatch.setattr("cnnlab.studies.suite.run_experiment", spy)
    run_suite(suite, out, show_progress=False)
    assert [call["resume"] for call in calls] == [True]
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "complete"


def test_a_suite_into_the_users_folder_is_refused_before_training(tmp_path, monkeypatch):
    from cnnlab.errors import CnnlabError

    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "comparison.md").write_text("mine")
    monkeypatch.setattr("cnnlab.studies.suite.run_experiment", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(CnnlabError, match="not a cnnlab suite folder"):
        run_suite(load_suite(write_suite(tmp_path, "experiments: [mlp]\n")), folder, show_progress=False)
    assert [p.name for p in folder.iterdir()] == ["comparison.md"]
