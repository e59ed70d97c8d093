"""Multi-seed experiments on digits: the folder layout, the aggregate's statistics against numpy's, the
report's band figures, mean ± std in suite and compare tables, skipping complete seeds and resuming an
interrupted one, and clean messages for bad seeds."""

import csv
import json

import numpy as np
import pytest

from cnnlab import runs
from cnnlab.cli import main
from cnnlab.config import load_config
from cnnlab.errors import ConfigError, TrainingInterrupted
from cnnlab.report.comparison import compare_runs
from cnnlab.studies import seeds as seeds_module
from cnnlab.studies.seeds import run_seeds, with_seed_count
from cnnlab.studies.suite import load_suite, run_suite
from cnnlab.training.interrupt import StopRequest
from cnnlab.training.settings import MAX_SEED

FAST = ["train.epochs=2", "train.early_stopping=null"]


def file_times(folder):
    return {path.relative_to(folder): path.stat().st_mtime_ns for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.mark.slow
def test_suite_with_seeds_writes_runs_aggregate_report_and_mean_std(tmp_path):
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text("name: s\ndefaults: {train.epochs: 2, train.early_stopping: null}\nexperiments: [mlp]\n")
    written = run_suite(load_suite(suite_file), tmp_path / "suite", show_progress=False, seed_count=3)
    folder = tmp_path / "suite" / "01-mlp"
    aggregate = json.loads((folder / "metrics.json").read_text())
    assert aggregate["cnnlab"]["kind"] == "seeds" and aggregate["status"] == "complete"
    assert aggregate["seeds"] == [0, 1, 2] and aggregate["runs"] == ["seed-0", "seed-1", "seed-2"]
    per_seed = []
    for seed in (0, 1, 2):
        run_dir = folder / f"seed-{seed}"
        assert runs.is_complete(run_dir), "each seed's folder is an ordinary complete run"
        config = load_config(str(run_dir / "config.yaml"))
        assert config.train.seed == seed and config.train.seeds is None
        per_seed.append(json.loads((run_dir / "metrics.json").read_text()))
    for key in ("test_accuracy", "test_loss"):
        values = np.array([metrics[key] for metrics in per_seed])
        statistic = aggregate["statistics"][key]
        assert statistic["values"] == values.tolist()
        assert statistic["mean"] == pytest.approx(values.mean()) and aggregate[key] == pytest.approx(values.mean())
        assert statistic["std"] == pytest.approx(values.std(ddof=1))
        assert (statistic["min"], statistic["max"]) == (values.min(), values.max())
    histories = [runs.read_history(folder / f"seed-{seed}") for seed in (0, 1, 2)]
    mean_history = runs.read_history(folder)
    assert [row["val_loss"] for row in mean_history] == pytest.approx(
        np.mean([[row["val_loss"] for row in history] for history in histories], axis=0), rel=1e-5)
    for name in ("seeds_loss.png", "seeds_accuracy.png"):
        assert (folder / "figures" / name).stat().st_size > 1000
        assert f"figures/{name}" in (folder / "report.md").read_text()
    assert "seed-2/report.html" in (folder / "report.md").read_text()

    suite_table = written["md"].read_text()
    assert "±" in suite_table and "(3 seeds)" in suite_table
    with written["csv"].open() as handle:
        row = next(csv.DictReader(handle))
    assert float(row["test_accuracy_std"]) == pytest.approx(aggregate["statistics"]["test_accuracy"]["std"], rel=1e-5)
    compared = compare_runs([folder, folder / "seed-0"], tmp_path / "compare")
    table = compared["md"].read_text()
    assert f"{100 * aggregate['test_accuracy']:.2f}% ± " in table and "(seed 0)" in table


@pytest.mark.slow
def test_complete_seed_skipped_and_interrupted_seed_resumed(tmp_path, monkeypatch, capsys):
    out = tmp_path / "seeds"
    config = load_config("mlp", [*FAST, "train.seeds=[0, 1]"])
    real = seeds_module.run_experiment
    calls = []

    def stop_seed_one(config, **kwargs):
        calls.append((config.train.seed, kwargs["resume"]))
        stop = StopRequest(3) if config.train.seed == 1 and len(calls) == 2 else None
        return real(config, stop=stop, **kwargs)

    monkeypatch.setattr(seeds_module, "run_experiment", stop_seed_one)
    with pytest.raises(TrainingInterrupted) as stopped:
        run_seeds(config, out, show_progress=False)
    assert stopped.value.run_dir == out, "the folder is what the user continues"
    assert runs.is_complete(out / "seed-0") and not runs.is_complete(out / "seed-1")
    assert not (out / "metrics.json").exists()
    before = file_times(out / "seed-0")

    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    assert calls == [(0, False), (1, False), (1, True)], "seed 0 skipped, seed 1 resumed from its checkpoint"
    assert file_times(out / "seed-0") == before
    assert capsys.readouterr().out.strip() == str(out)
    aggregate = json.loads((out / "metrics.json").read_text())
    assert aggregate["status"] == "complete" and aggregate["n_seeds"] == 2
    assert json.loads((out / "seed-1" / "metrics.json").read_text())["status"] == "complete"


def test_seed_lists_are_checked_with_clean_messages(capsys):
    for bad, words in (("[3, 1, 3]", "3 is repeated"), ("[-1]", "greater than or equal to 0"),
                       ("[]", "at least 1"), (str(list(range(101))), "at most 100"), (f"[{MAX_SEED + 1}]", "less than")):
        with pytest.raises(ConfigError, match="train.seeds") as error:
            load_config("mlp", [f"train.seeds={bad}"])
        assert words in str(error.value)
    assert main(["train", "mlp", "train.seeds=[0, 0]"]) == 2
    assert "train.seeds" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="largest seed"):
        with_seed_count(load_config("mlp", [f"train.seed={MAX_SEED}"]), 2)
    with pytest.raises(SystemExit):
        main(["train", "mlp", "--seeds", "0"])


def test_seed_count_starts_at_the_config_seed_and_single_seed_configs_are_unchanged():
    assert with_seed_count(load_config("mlp"), 3).train.seeds == [0, 1, 2]
    assert with_seed_count(load_config("mlp", ["train.seed=7"]), 2).train.seeds == [7, 8]
    assert "seeds" not in load_config("mlp").to_dict()["train"], "a single-seed run's config.yaml is as before"
    assert load_config("mlp", ["train.seeds=[4, 2]"]).to_dict()["train"]["seeds"] == [4, 2]
