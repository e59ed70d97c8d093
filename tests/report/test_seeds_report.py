"""The multi-seed statistics, mean curves and bands, and the aggregate report, on hand-made seed runs."""

import json
import math

import numpy as np
import pytest

from cnnlab import output_folders, runs
from cnnlab.analysis.seed_runs import aggregate_metrics, history_bands, mean_history, statistics
from cnnlab.report.seeds_report import format_mean_std, write_seeds_report


def history(values):
    return [{"epoch": epoch, "train_loss": value, "train_accuracy": 1 - value, "val_loss": value + 0.1,
             "val_accuracy": math.nan if epoch == 2 else 0.9 - value, "lr": 0.1, "epoch_time_s": 1.0}
            for epoch, value in enumerate(values, 1)]


def test_statistics_are_numpys_with_sample_std():
    values = [0.91, 0.95, 0.92]
    stat = statistics(values)
    assert stat["mean"] == pytest.approx(np.mean(values)) and stat["std"] == pytest.approx(np.std(values, ddof=1))
    assert (stat["min"], stat["max"], stat["values"]) == (0.91, 0.95, values)
    assert statistics([0.5])["std"] is None, "no spread from one seed"
    assert statistics([0.5, None, 0.7])["mean"] == pytest.approx(0.6)


def test_bands_follow_runs_of_different_lengths_and_skip_unmeasured_epochs():
    bands = history_bands([history([0.5, 0.3, 0.2]), history([0.7, 0.5])])
    loss = bands["train_loss"]
    assert loss["epochs"].tolist() == [1, 2, 3] and loss["count"].tolist() == [2, 2, 1]
    assert loss["mean"] == pytest.approx([0.6, 0.4, 0.2]) and loss["min"] == pytest.approx([0.5, 0.3, 0.2])
    assert loss["std"][:2] == pytest.approx([np.std([0.5, 0.7], ddof=1)] * 2) and math.isnan(loss["std"][2])
    assert bands["val_accuracy"]["epochs"].tolist() == [1, 3], "epoch 2 has no validation"
    assert [row["train_loss"] for row in mean_history([history([0.5]), history([0.7])])] == pytest.approx([0.6])


def test_report_has_band_figures_and_a_row_per_seed(tmp_path):
    names = ["seed-3", "seed-5"]
    seed_metrics = []
    for name, accuracy, losses in zip(names, (0.9, 0.8), ([0.5, 0.3], [0.6, 0.4])):
        metrics = {"name": "toy", "dataset": "digits", "model": "mlp", "status": "complete", "epochs": 2,
                   "test_accuracy": accuracy, "test_loss": 1 - accuracy, "train_time_s": 1.5}
        runs.write_json_atomic(tmp_path / name / runs.METRICS_FILE, metrics)
        runs.write_csv_atomic(tmp_path / name / runs.HISTORY_FILE, history(losses), runs.HISTORY_COLUMNS)
        seed_metrics.append(metrics)
    aggregate = aggregate_metrics(seed_metrics, [3, 5], names)
    assert aggregate["cnnlab"]["kind"] == "seeds" and aggregate["test_accuracy"] == pytest.approx(0.85)
    runs.write_json_atomic(tmp_path / runs.METRICS_FILE, aggregate)
    assert output_folders.output_kind(tmp_path) == "seeds"
    markdown, html = write_seeds_report(tmp_path)
    text = markdown.read_text()
    assert "figures/seeds_loss.png" in text and "figures/seeds_accuracy.png" in text
    assert (tmp_path / "figures" / "seeds_accuracy.png").stat().st_size > 1000
    assert "seed-5/report.html" in text and "80.00%" in text and "ddof=1" in text
    assert "data:image/png;base64," in html.read_text()
    assert format_mean_std(json.loads(json.dumps(aggregate))["statistics"]["test_accuracy"]) == "85.00% ± 7.07 (2 seeds)"
    assert format_mean_std({"mean": 0.5, "std": None, "values": [0.5]}) == "50.00% ± n/a (1 seed)"
