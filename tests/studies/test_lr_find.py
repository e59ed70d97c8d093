"""`cnnlab lr-find`: the sweep, its stopping rule, the suggestion and the divergence diagnosis."""

import csv
import json
import math

import numpy as np
import pytest

from cnnlab.cli import main
from cnnlab.config import load_config
from cnnlab.errors import ConfigError
from cnnlab.studies.lr_find import LrFinderResult, diagnose, find_lr, suggest, sweep_lrs


def test_sweep_is_exponential_and_checked():
    lrs = sweep_lrs(1e-6, 1.0, 7)
    assert lrs[0] == pytest.approx(1e-6) and lrs[-1] == pytest.approx(1.0)
    assert np.allclose(np.diff(np.log10(lrs)), 1.0)
    with pytest.raises(ConfigError):
        sweep_lrs(1.0, 1e-3, 10)


def test_suggestion_is_the_steepest_fall():
    lrs = list(np.geomspace(1e-5, 1, 51))
    # flat, a fall centred at 1e-3, a minimum near 1e-2, then a rise
    smoothed = [2 - 1.5 / (1 + math.exp(-4 * (math.log10(lr) + 3))) + (max(0, math.log10(lr) + 2)) ** 2 for lr in lrs]
    result = LrFinderResult(lrs=lrs, losses=smoothed, smoothed=smoothed, config_lr=0.5, divergence_lr=0.3)
    suggest(result)
    assert result.steepest_lr == pytest.approx(1e-3, rel=0.3)
    assert result.suggested_lr == result.steepest_lr
    assert 1e-5 <= result.suggested_lr <= 1
    assert "past the point" in diagnose(result, 1.0)


def test_find_lr_on_digits_curve_and_suggestion():
    config = load_config("mlp", ["optimizer.lr=0.001"])
    result = find_lr(config, start=1e-5, end=10, steps=40, show_progress=False)
    assert 2 < len(result.lrs) <= 40 and len(result.losses) == len(result.smoothed) == len(result.lrs)
    assert np.all(np.diff(result.lrs) > 0)
    assert 1e-5 <= result.suggested_lr <= 10
    assert result.diagnosis


def test_huge_config_lr_is_diagnosed_and_written(tmp_path, capsys):
    out = tmp_path / "lrf"
    code = main(["lr-find", "mlp", "optimizer.name=sgd", "optimizer.lr=1000", "--steps", "40", "--start", "1e-4",
                 "--end", "100", "--out", str(out), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "your lr 1000 is past the point" in printed.lower() and "diverges; try" in printed
    summary = json.loads((out / "lr_find.json").read_text())
    assert summary["divergence_lr"] is not None and summary["divergence_lr"] < 1000
    assert 1e-4 <= summary["suggested_lr"] <= summary["divergence_lr"]
    with (out / "lr_find.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["step", "lr", "loss", "smoothed_loss"] and len(rows) == summary["steps_run"]
    assert (out / "lr_find.png").stat().st_size > 1000
