"""`cnnlab tune` with real Optuna and real SQLite: the search-space grammar and its one-paragraph errors, the
refusal of a config without a validation split, tune files, two worker processes sharing one study (N trials,
none twice), a study continued and extended by the same command, the median pruner stopping a designed
hopeless learning rate (its run folder left consistent), an interrupted trial not counting, and a study
refusing a command that searches something else. The PostgreSQL test is in test_tune_postgres.py."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

optuna = pytest.importorskip("optuna", reason="cnnlab tune needs the tune extra: pip install 'cnnlab[tune]'")

from cnnlab import runs
from cnnlab.cli import main
from cnnlab.config import load_config
from cnnlab.errors import CnnlabError, ConfigError, TrainingInterrupted
from cnnlab.studies.tune import open_study, prepare_tune, run_tune
from cnnlab.studies.tune_settings import base_config, check_search, parse_param, search_space, tune_settings
from cnnlab.studies.tune_storage import check_storage_url, load_optuna, mask_url
from cnnlab.training.interrupt import StopRequest

FAST = ["train.epochs=2", "train.early_stopping=null"]
LR = "optimizer.lr=loguniform:1e-4:1e-1"


def study_trials(folder, name="digits-cnn"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{folder / 'study.db'}").get_trials()


def checked(source, overrides=(), params=(LR,), **options):
    """The settings `cnnlab tune` would run, after every check made before a trial."""
    settings = tune_settings(source, list(overrides), list(params), **options)
    check_search(base_config(settings), search_space(settings))
    return settings


@pytest.mark.parametrize("key, spec, kind, bounds, choices", [
    ("optimizer.lr", "loguniform:1e-4:1e-1", "loguniform", (1e-4, 1e-1, None), ()),
    ("optimizer.momentum", "uniform:0:0.99", "uniform", (0.0, 0.99, None), ()),
    ("train.batch_size", "int:16:256:16", "int", (16, 256, 16), ()),
    ("train.batch_size", "logint:8:512", "logint", (8, 512, None), ()),
    ("train.batch_size", "choice:32,64,128", "choice", (None, None, None), (32, 64, 128)),
    ("optimizer.name", "choice: adam, sgd", "choice", (None, None, None), ("adam", "sgd")),
    ("optimizer.lr", "choice:1e-3,0.01", "choice", (None, None, None), (0.001, 0.01)),
    ("train.batch_size", [32, 64], "choice", (None, None, None), (32, 64)),
])
def test_param_specs_parse_to_their_distributions(key, spec, kind, bounds, choices):
    parsed = parse_param(key, spec)
    assert (parsed.kind, (parsed.low, parsed.high, parsed.step), parsed.choices) == (kind, bounds, choices)
    assert [type(value) for value in parsed.choices] == [type(value) for value in choices]
    assert parse_param(key, parsed.text) == parsed, "the recorded text parses back to the same spec"


BAD_PARAMS = [
    ("optimizer.lr=loguniform:1e-4", "loguniform needs LOW:HIGH, e.g. optimizer.lr=loguniform:1e-4:1e-1"),
    ("optimizer.lr=lognormal:1e-4:1e-1", 'unknown kind "lognormal". Did you mean "loguniform"?'),
    ("optimizer.lr=loguniform:0:0.1", "a log scale needs LOW above 0"),
    ("optimizer.lr=uniform:0.5:0.1", "LOW must be below HIGH"),
    ("optimizer.lr=uniform:a:0.1", "must be numbers"),
    ("train.batch_size=int:16.5:64", "must be whole numbers"),
    ("train.batch_size=int:16:64:5", "STEP must be at least 1 and divide HIGH - LOW"),
    ("train.batch_size=choice:", "none empty"),
    ("train.batch_size=choice:32,32", "lists a value twice"),
    ("train.batch_size=choice:[1,2],3", 'the choice "[1" cannot be read as a value'),
    ("optimizer.lr", "must look like KEY=SPEC"),
    ("optimizer.lr=0.01", "give KIND:..., not a single value"),
    ("optimizer.lrr=loguniform:1e-4:1e-1", 'unknown key "optimizer.lrr". Did you mean "lr"?'),
    ("train.batch_size=int:0:64", "with train.batch_size=0 the config is not valid: train.batch_size: Input should be "
                                  "greater than or equal to 1"),
    ("train.epochs=uniform:1:10", "Use int:LOW:HIGH for a whole-number setting"),
    ("train.validation_split=uniform:0.1:0.3", "cannot be tuned: each trial would be scored on another validation set"),
    ("train.seed=int:0:9", "cannot be tuned"),
]


@pytest.mark.parametrize("param, expected", BAD_PARAMS)
def test_bad_param_specs_are_one_paragraph_naming_the_fix(tmp_path, capsys, param, expected):
    with pytest.raises(ConfigError) as raised:
        checked("digits", params=[param])
    assert expected in str(raised.value) and "\n" not in str(raised.value)
    code = main(["tune", "digits", "--param", param, "--out", str(tmp_path / "study")])
    error = capsys.readouterr().err
    assert code == 2 and error.startswith("error: ") and "Traceback" not in error
    assert expected in " ".join(error.split()) and "\n\n" not in error
    assert not (tmp_path / "study").exists(), "nothing is written before the search is checked"


def test_a_config_without_a_validation_split_is_refused_before_anything_is_written(tmp_path, capsys):
    code = main(["tune", "digits", "train.validation_split=0", "train.early_stopping=null", "--param", LR,
                 "--out", str(tmp_path / "study")])
    error = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "never on the test set" in error and "has no validation split" in error
    assert "train.validation_split=0.1" in error and "Traceback" not in error
    assert not (tmp_path / "study").exists()


def test_a_tune_file_and_the_command_line_combine(tmp_path):
    experiment = tmp_path / "configs" / "exp.yaml"
    experiment.parent.mkdir()
    experiment.write_text("name: small\ndataset: digits\nmodel: mlp\ntrain: {epochs: 3}\n")
    tune_file = experiment.parent / "tune.yaml"
    tune_file.write_text("run: exp.yaml\noverrides: {train.batch_size: 16}\ntrials: 7\nmetric: val_loss\n"
                         "params:\n  optimizer.lr: loguniform:1e-4:1e-1\n  train.batch_size: [32, 64]\n"
                         "pruner: {startup_trials: 2}\nsampler: {name: random}\n")
    settings = checked(str(tune_file), ["train.epochs=2"], ["optimizer.lr=uniform:0.001:0.01"], trials=3, seed=5)
    assert settings.run == str(experiment), "run: is found beside the tune file"
    assert settings.overrides == ["train.batch_size=16", "train.epochs=2"]
    assert [spec.text for spec in search_space(settings)] == ["uniform:0.001:0.01", "choice:32,64"]
    assert (settings.trials, settings.metric, settings.direction) == (3, "val_loss", "minimize")
    assert (settings.pruner.startup_trials, settings.sampler.name, settings.sampler.seed) == (2, "random", 5)
    assert base_config(settings).train.epochs == 2
    tune_file.write_text("run: exp.yaml\ntrails: 5\nparams: {optimizer.lr: loguniform:1e-4:1e-1}\n")
    with pytest.raises(ConfigError, match='unknown key "trails". Did you mean "trials"?'):
        tune_settings(str(tune_file))


def test_storage_urls_are_checked_and_passwords_never_shown():
    for url, expected in (("runs/study.db", "is not a database URL"), ("sqlite://", "in-memory"),
                          ("sqlite:///:memory:", "in-memory")):
        with pytest.raises(ConfigError, match=expected):
            check_storage_url(url)
    assert mask_url("postgresql+psycopg://tuner:s3cr:et@db.example:5432/cnnlab") == \
        "postgresql+psycopg://tuner:***@db.example:5432/cnnlab"
    assert mask_url("sqlite:////tmp/x/study.db") == "sqlite:////tmp/x/study.db"


@pytest.mark.slow
def test_a_study_refuses_a_command_that_searches_something_else(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = checked("digits", FAST, out=tmp_path / "study")
    open_study(prepare_tune(first), load_optuna(), create=True)  # the study exists, no trial yet
    other = checked("digits", ["train.epochs=3", "train.early_stopping=null"],
                    [LR, "train.batch_size=choice:32,64"], out=tmp_path / "study")
    with pytest.raises(ConfigError) as raised:
        run_tune(other, show_progress=False)
    message = str(raised.value)
    assert "config.train.epochs 2 (this command: 3)" in message and "params.train.batch_size" in message
    renamed = checked("digits", FAST, study="another", trials=1, out=tmp_path / "study")
    with pytest.raises(CnnlabError, match="one study per folder"):
        run_tune(renamed, show_progress=False)
    assert study_trials(tmp_path / "study") == [] and not list((tmp_path / "study").glob("trial-*"))


@pytest.mark.slow
def test_two_worker_processes_share_one_sqlite_study_without_duplicates(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "study"
    settings = checked("digits", FAST, [LR, "train.batch_size=choice:32,64,128"], trials=6, workers=2, out=folder,
                       prune=False)
    outcome = run_tune(settings, show_progress=False)
    trials = study_trials(folder)
    assert sorted(trial.number for trial in trials) == list(range(6)), "N trials, numbered once each"
    assert all(trial.state == optuna.trial.TrialState.COMPLETE for trial in trials)
    run_dirs = [trial.user_attrs["run_dir"] for trial in trials]
    assert sorted(run_dirs) == sorted(path.name for path in folder.glob("trial-*"))
    assert sorted(run_dirs) == [f"trial-{number:04d}" for number in range(6)]
    assert len({trial.user_attrs["worker"] for trial in trials}) == 2, "both worker processes ran trials"
    for trial in trials:
        run_dir = folder / trial.user_attrs["run_dir"]
        assert runs.is_complete(run_dir), "every trial is an ordinary complete run folder"
        config = load_config(str(run_dir / runs.CONFIG_FILE))
        assert (config.optimizer.lr, config.train.batch_size) == (trial.params["optimizer.lr"],
                                                                   trial.params["train.batch_size"])
        history = runs.read_history(run_dir)
        assert trial.value == history[-1]["val_accuracy"], "the value is the validation metric, never the test one"
    with open(folder / "trials.csv", newline="") as handle:
        assert sorted(int(row["number"]) for row in csv.DictReader(handle)) == list(range(6))
    best = max(trials, key=lambda trial: (trial.value, -trial.number))
    assert outcome.best["number"] == best.number
    assert json.loads((folder / "tune.json").read_text())["best_trial"] == best.number
    tuned = load_config(str(folder / "best.yaml"))  # what `cnnlab train best.yaml` loads
    trained = load_config(str(folder / best.user_attrs["run_dir"] / runs.CONFIG_FILE))
    assert tuned.name == "digits-cnn-tuned" and tuned.model_copy(update={"name": trained.name}) == trained
    report = (folder / "report.md").read_text()
    for heading in ("Best trials", "Optimisation history", "Each parameter's effect", "Validation curves",
                    "Best config", "All trials"):
        assert f"## {heading}" in report
    for figure in ("tune_history", "tune_param_1", "tune_param_2", "tune_curves"):
        assert (folder / "figures" / f"{figure}.png").stat().st_size > 2000 and f"figures/{figure}.png" in report
    assert "data:image/png;base64," in (folder / "report.html").read_text()

    run_tune(settings.model_copy(update={"workers": 1}), show_progress=False)
    assert len(study_trials(folder)) == 6, "the same command again finds the study done"
    run_tune(settings.model_copy(update={"workers": 1, "trials": 7}), show_progress=False)
    assert sorted(trial.number for trial in study_trials(folder)) == list(range(7)), "--trials 7: one more"


@pytest.mark.slow
def test_the_median_pruner_stops_a_hopeless_learning_rate(tmp_path, monkeypatch, capsys):
    """lr 1e-7 barely moves the weights: its validation accuracy stays near chance (0.1) while lr 0.003 reaches
    about 0.9 in one epoch, so once one trial finished, 1e-7 trials fall below the median at epoch 1."""
    monkeypatch.chdir(tmp_path)
    tune_file = tmp_path / "tune.yaml"
    tune_file.write_text("run: digits\noverrides: {train.epochs: 3, train.early_stopping: null}\n"
                         "params: {optimizer.lr: [0.003, 1.0e-7]}\ntrials: 4\n"
                         "pruner: {name: median, startup_trials: 1, warmup_epochs: 0}\n"
                         "sampler: {name: random, seed: 0}\n")
    assert main(["tune", str(tune_file), "--out", "study", "--quiet"]) == 0
    assert "pruned" in capsys.readouterr().out
    trials = study_trials(tmp_path / "study")
    pruned = [trial for trial in trials if trial.state == optuna.trial.TrialState.PRUNED]
    assert pruned, "the designed hopeless trials are pruned"
    assert all(trial.params["optimizer.lr"] == 1e-7 for trial in pruned)
    assert any(trial.params["optimizer.lr"] == 0.003 and trial.state.name == "COMPLETE" for trial in trials)
    for trial in pruned:
        run_dir = tmp_path / "study" / trial.user_attrs["run_dir"]
        metrics = runs.read_json(run_dir / runs.METRICS_FILE)
        assert metrics["status"] == "pruned" and "pruned by cnnlab tune after epoch" in metrics["stop_reason"]
        assert metrics["epochs"] == len(runs.read_history(run_dir)) < 3 and metrics["test_accuracy"] is None
        assert not (run_dir / runs.CHECKPOINT_FILE).exists() and not runs.is_complete(run_dir)
        assert "| Status | pruned |" in (run_dir / runs.REPORT_MARKDOWN_FILE).read_text()
    rows = list(csv.DictReader(open(tmp_path / "study" / "trials.csv", newline="")))
    assert sum(row["state"] == "pruned" for row in rows) == len(pruned)
    assert f"{len(pruned)} pruned" in (tmp_path / "study" / "report.md").read_text()


@pytest.mark.slow
def test_an_interrupted_trial_does_not_count_and_the_same_command_continues(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = checked("digits", FAST, trials=2, out=tmp_path / "study", prune=False)
    with pytest.raises(TrainingInterrupted, match="Run the same command again"):
        run_tune(settings, show_progress=False, stop=StopRequest(after_steps=3))
    first = study_trials(tmp_path / "study")
    assert [(trial.state.name, trial.user_attrs.get("interrupted")) for trial in first] == [("FAIL", True)]
    assert runs.read_json(tmp_path / "study" / "trial-0000" / runs.METRICS_FILE)["status"] == "interrupted"
    assert "0 complete, 0 pruned, 1 failed" in (tmp_path / "study" / "report.md").read_text(), "reported at the stop"
    outcome = run_tune(settings, show_progress=False)
    states = [(trial.number, trial.state.name) for trial in study_trials(tmp_path / "study")]
    assert states == [(0, "FAIL"), (1, "COMPLETE"), (2, "COMPLETE")]
    assert outcome.counts == {"complete": 2, "pruned": 0, "fail": 1, "running": 0}
    assert "interrupted" in (tmp_path / "study" / "report.md").read_text()
    assert yaml.safe_load((tmp_path / "study" / "best.yaml").read_text())["name"] == "digits-cnn-tuned"
