"""Augmentation through the whole lab: `cnnlab augment-preview`, a training run on digits with
augmentation (its metrics, examples, saved config and report section) and one without."""

from __future__ import annotations

import csv
import html
import json
import re

import numpy as np
import pytest
import yaml

from cnnlab import runs
from cnnlab.augment.settings import parse_augment
from cnnlab.augment.plan import describe
from cnnlab.cli import main
from cnnlab.config import load_config
from cnnlab.experiment import run_experiment
from cnnlab.studies.seeds import same_config

AUGMENT = ["augment.horizontal_flip=true", "augment.width_shift_range=0.25"]
ONE_EPOCH = ["train.epochs=1", "train.early_stopping=null"]


@pytest.fixture(scope="module")
def runs_on_digits(tmp_path_factory):
    """(with augmentation, without): the same one-epoch digits CNN and seed, differing only in `augment:`."""
    root = tmp_path_factory.mktemp("augment-runs")
    augmented = run_experiment(load_config("examples/digits.yaml", ONE_EPOCH + AUGMENT), out=root / "augmented",
                               show_progress=False)
    plain = run_experiment(load_config("examples/digits.yaml", ONE_EPOCH), out=root / "plain", show_progress=False)
    return augmented, plain


def write_config(tmp_path, augment: str) -> str:
    path = tmp_path / "preview.yaml"
    path.write_text(f"dataset: digits\nmodel: mlp\n{augment}")
    return str(path)


def test_augment_preview_writes_the_figure(tmp_path, capsys):
    config = write_config(tmp_path, "augment: {horizontal_flip: true, rotation_range: 15}\n")
    code = main(["augment-preview", config, "--out", str(tmp_path / "preview"), "--count", "3", "--views", "2"])
    out = capsys.readouterr().out
    figure = tmp_path / "preview" / "augmentation.png"
    assert code == 0 and out.strip() == str(figure)
    assert figure.read_bytes().startswith(b"\x89PNG")


def test_augment_preview_without_augmentation_is_a_clean_error(tmp_path, capsys):
    code = main(["augment-preview", write_config(tmp_path, ""), "--out", str(tmp_path / "preview")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err
    assert "no training augmentation" in err and "\n\n" not in err.strip()
    assert not (tmp_path / "preview").exists()


def test_bad_augment_key_in_the_cli_names_it(tmp_path, capsys):
    code = main(["augment-preview", write_config(tmp_path, "augment: {random_erasing: 0.5, horizontal_flp: true}\n")])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "Traceback" not in err
    assert 'augment.random_erasing: not supported; "cutout" erases squares' in err
    assert 'unknown key "augment.horizontal_flp". Did you mean "horizontal_flip"?' in err


@pytest.mark.slow
def test_run_with_augmentation_records_and_changes_the_images(runs_on_digits):
    augmented_run, plain_run = runs_on_digits
    metrics = json.loads((augmented_run / runs.METRICS_FILE).read_text())
    expected = describe(parse_augment({"horizontal_flip": True, "width_shift_range": 0.25}).plan())
    assert metrics["status"] == "complete" and metrics["augmentation"] == expected
    assert "horizontal flip (p=0.5)" in expected and any(line.startswith("shift up to 25%") for line in expected)
    saved = np.load(augmented_run / runs.AUGMENTATION_FILE)
    originals, versions = saved["originals"], saved["augmented"]
    assert originals.shape == (8, 1, 8, 8) and versions.shape == (8, 4, 1, 8, 8)
    changed = (versions != originals[:, None]).any(axis=(2, 3, 4))
    assert changed.mean() >= 0.5, changed  # flips and shifts of up to 2 pixels leave few views as they were
    assert not (plain_run / runs.AUGMENTATION_FILE).exists()
    assert json.loads((plain_run / runs.METRICS_FILE).read_text())["augmentation"] == []
    # the training loop used the augmenter: same seed and data, a different training loss
    losses = [next(csv.DictReader((run / runs.HISTORY_FILE).open()))["train_loss"] for run in runs_on_digits]
    assert losses[0] != losses[1]


@pytest.mark.slow
def test_saved_config_shows_what_was_set_and_loads_back(runs_on_digits):
    augmented_run, plain_run = runs_on_digits
    saved = yaml.safe_load((augmented_run / runs.CONFIG_FILE).read_text())
    assert saved["augment"] == {"horizontal_flip": True, "width_shift_range": 0.25}
    assert yaml.safe_load((plain_run / runs.CONFIG_FILE).read_text())["augment"] == {}
    reloaded = load_config(str(augmented_run / runs.CONFIG_FILE))
    assert reloaded.augment.plan() == load_config("examples/digits.yaml", ONE_EPOCH + AUGMENT).augment.plan()
    assert same_config(augmented_run, reloaded)
    assert not same_config(augmented_run, load_config("examples/digits.yaml", ONE_EPOCH))


@pytest.mark.slow
def test_report_has_an_augmentation_section_only_when_augmented(runs_on_digits):
    augmented_run, plain_run = runs_on_digits
    lines = json.loads((augmented_run / runs.METRICS_FILE).read_text())["augmentation"]
    markdown = (augmented_run / runs.REPORT_MARKDOWN_FILE).read_text()
    page = (augmented_run / runs.REPORT_HTML_FILE).read_text()
    assert re.search(r"^#+ Augmentation$", markdown, re.MULTILINE)
    assert f"{runs.FIGURES_DIR}/augmentation.png" in markdown
    assert (augmented_run / runs.FIGURES_DIR / "augmentation.png").read_bytes().startswith(b"\x89PNG")
    assert re.search(r"<h\d[^>]*>Augmentation<", page)
    assert all(f"<li>{html.escape(line)}</li>" in page for line in lines)
    plain_markdown = (plain_run / runs.REPORT_MARKDOWN_FILE).read_text()
    assert not re.search(r"^#+ Augmentation$", plain_markdown, re.MULTILINE)
    assert not re.search(r"<h\d[^>]*>Augmentation<", (plain_run / runs.REPORT_HTML_FILE).read_text())
    assert not (plain_run / runs.FIGURES_DIR / "augmentation.png").exists()
