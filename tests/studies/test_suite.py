"""Suites on digits: comparison files, resume without retraining, the sweep table."""

import csv
import json

import pytest

from cnnlab.errors import ConfigError
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

    from cnnlab.config import load_config

    for path in sorted(Path("suites").glob("*.yaml")):
        loaded = load_suite(path)
        assert loaded.experiments, path
        for experiment in loaded.experiments:
            load_config(experiment.source, experiment.overrides)


def test_a_bad_experiment_fails_before_any_training(tmp_path, monkeypatch):
    path = write_suite(tmp_path, "experiments:\n  - mlp\n  - {run: mlp, overrides: {train.epocs: 2}}\n")
    with pytest.raises(ConfigError, match="epochs"):
        load_suite(path)
