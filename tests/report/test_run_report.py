"""Reports built from fake run directories holding the documented files."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from cnnlab import runs
from cnnlab.analysis.interpretation import Interpretation
from cnnlab.errors import CnnlabError
from cnnlab.report import plots
from cnnlab.report.comparison import write_comparison
from cnnlab.report.run_report import write_report

HOSTILE_NAME = "<script>alert(1)</script>"
CLASS_NAMES = ["zero", HOSTILE_NAME, "two"]


def make_run(run_dir: Path, name: str = "tiny-run", n: int = 60, n_classes: int = 3, seed: int = 0,
             status: str = "complete", with_predictions: bool = True, with_examples: bool = True,
             extra_metrics: dict | None = None, class_names: list[str] | None = None) -> Path:
    """A run directory as the trainer writes it, with random but fixed predictions."""
    rng = np.random.default_rng(seed)
    if class_names is None:
        class_names = CLASS_NAMES if n_classes == 3 else [f"c{k}" for k in range(n_classes)]
    n_classes = len(class_names)
    labels = rng.integers(0, n_classes, size=n)
    logits = rng.normal(size=(n, n_classes))
    logits[np.arange(n), labels] += 1.5
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    interpretation = Interpretation.from_arrays(probabilities, labels, class_names)
    run_dir.mkdir(parents=True)
    if with_predictions:
        runs.write_npz_atomic(run_dir / runs.PREDICTIONS_FILE, probabilities=probabilities.astype(np.float32),
                              labels=labels.astype(np.int64), class_names=np.array(class_names))
    if with_examples:
        indices = interpretation.example_indices(50)
        images = rng.integers(0, 256, size=(len(indices), 1, 8, 8), dtype=np.uint8)
        runs.write_npz_atomic(run_dir / runs.EXAMPLES_FILE, indices=indices, images=images)
    metrics = {
        "name": name, "dataset": "digits", "model": "mlp", "params": 1234, "trainable_params": 1234,
        "epochs": 4, "epochs_planned": 10, "test_accuracy": interpretation.accuracy,
        "test_loss": interpretation.loss, "train_time_s": 3.21, "best_epoch": 3,
        "stop_reason": "early stopping on val_loss", "status": status, "seed": 7, "device": "cpu",
        **(extra_metrics or {}),
    }
    runs.write_json_atomic(run_dir / runs.METRICS_FILE, metrics)
    val_losses = [0.9, 0.7, 0.6, 0.65] if status != "diverged" else [0.9, math.nan, math.nan, math.nan]
    train_losses = [1.0, 0.6, 0.4, 0.3] if status != "diverged" else [1.0, math.nan, math.nan, math.nan]
    history = [
        {"epoch": epoch, "train_loss": train, "train_accuracy": 0.5 + 0.1 * epoch, "val_loss": val,
         "val_accuracy": 0.5 + 0.08 * epoch, "lr": 0.001, "epoch_time_s": 0.8}
        for epoch, (train, val) in enumerate(zip(train_losses, val_losses), start=1)
    ]
    runs.write_csv_atomic(run_dir / runs.HISTORY_FILE, history, runs.HISTORY_COLUMNS)
    runs.write_text_atomic(run_dir / runs.CONFIG_FILE, yaml.safe_dump({"name": name, "dataset": "digits",
                                                                       "train": {"epochs": 10, "seed": 7}}))
    runs.write_text_atomic(run_dir / runs.SUMMARY_FILE, "Layer (type)   Output   Param #\nDense   (None, 3)   1234\n")
    runs.write_json_atomic(run_dir / runs.ENVIRONMENT_FILE, {"cpu": "Test CPU", "gpu": None, "torch": "2.4.0",
                                                             "seed": 7})
    return run_dir


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path, Path]:
    """One report, built once for the tests that only read it."""
    run_dir = make_run(tmp_path_factory.mktemp("built") / "run")
    return (run_dir, *write_report(run_dir))


def test_report_writes_markdown_html_and_figures(built):
    run_dir, markdown_path, html_path = built
    assert (markdown_path, html_path) == (run_dir / "report.md", run_dir / "report.html")
    figures = {path.name for path in (run_dir / runs.FIGURES_DIR).iterdir()}
    assert {"history.png", "confusion.png", "confusion_normalized.png", "per_class.png", "worst.png",
            "confident_errors.png", "least_confident_correct.png", "predictions.png"} <= figures
    markdown = markdown_path.read_text()
    accuracy = runs.read_json(run_dir / runs.METRICS_FILE)["test_accuracy"]
    for text in (f"{100 * accuracy:.2f}%", "tiny-run", "digits", "1,234", "4 / 10", "3.21 s",
                 "early stopping on val_loss", "Diagnosis: overfitting from epoch 3", "](figures/worst.png)",
                 "Dense   (None, 3)", "Test CPU", "Seed: 7"):
        assert text in markdown
    first_worst = Interpretation.from_run(run_dir).worst(1)[0]
    assert f"| 1 | {first_worst['index']} |" in markdown


def test_html_is_self_contained_and_escaped(built):
    _, markdown_path, html_path = built
    page = html_path.read_text()
    assert page.count("data:image/png;base64,") >= 8
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script" not in markdown_path.read_text().lower()
    assert 'src="figures/' not in page


def test_rebuilding_gives_identical_report(built):
    run_dir, markdown_path, html_path = built
    first_markdown, first_html = markdown_path.read_text(), html_path.read_text()
    write_report(run_dir)
    assert markdown_path.read_text() == first_markdown
    assert html_path.read_text() == first_html


def test_report_without_examples_keeps_tables(tmp_path):
    run_dir = make_run(tmp_path / "run", with_examples=False)
    markdown = write_report(run_dir, worst_n=5)[0].read_text()
    assert "No examples.npz" in markdown and "## 5 worst classified images" in markdown
    assert not (run_dir / runs.FIGURES_DIR / "worst.png").exists()


def test_diverged_run_explains_and_renders_history(tmp_path):
    run_dir = make_run(tmp_path / "run", status="diverged", with_predictions=False, with_examples=False,
                       extra_metrics={"stop_reason": "train loss became NaN at epoch 2"})
    markdown_path, html_path = write_report(run_dir)
    markdown = markdown_path.read_text()
    assert "Training diverged: train loss became NaN at epoch 2" in markdown
    assert "Diagnosis: diverged at epoch 2" in markdown
    assert "Per-class" not in markdown and "No predictions.npz" in markdown
    assert 'class="callout warning"' in html_path.read_text()
    assert (run_dir / runs.FIGURES_DIR / "history.png").exists()


def test_report_without_metrics_is_a_user_error(tmp_path):
    with pytest.raises(CnnlabError, match="metrics.json"):
        write_report(tmp_path)


def test_comparison_tables_and_figures(tmp_path):
    first = make_run(tmp_path / "a", name="model1", seed=1)
    second = make_run(tmp_path / "b", name="model2", seed=2, extra_metrics={"reported_accuracy": 0.9196})
    paths = write_comparison([first, second], tmp_path / "out")
    assert set(paths) == {"csv", "md", "html"} and all(path.exists() for path in paths.values())
    with paths["csv"].open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["model"] for row in rows] == ["model1", "model2"]
    expected = runs.read_json(second / runs.METRICS_FILE)["test_accuracy"]
    assert float(rows[1]["test_accuracy"]) == pytest.approx(expected, abs=1e-6)
    assert rows[0]["reported_accuracy"] == "" and float(rows[1]["reported_accuracy"]) == pytest.approx(0.9196)
    assert rows[1]["params"] == "1234" and rows[1]["train_time_s"] == "3.21"
    markdown = paths["md"].read_text()
    assert "91.96%" in markdown and "| model1 Index |" in markdown
    page = paths["html"].read_text()
    assert 'colspan="4">model2<' in page and page.count("data:image/png;base64,") == 4
    assert "<script" not in page.lower()


def test_comparison_labels_and_missing_runs(tmp_path):
    run_dir = make_run(tmp_path / "a")
    paths = write_comparison([run_dir], tmp_path / "out", labels=["mine"])
    assert "| mine |" in paths["md"].read_text()
    with pytest.raises(CnnlabError, match="labels"):
        write_comparison([run_dir], tmp_path / "out", labels=["x", "y"])
    with pytest.raises(CnnlabError, match=str(tmp_path / "missing")):
        write_comparison([run_dir, tmp_path / "missing"], tmp_path / "out")
    unfinished = make_run(tmp_path / "b", status="running", with_predictions=False)
    with pytest.raises(CnnlabError, match=str(unfinished)):
        write_comparison([run_dir, unfinished], tmp_path / "out")


@pytest.mark.slow
def test_report_of_ten_thousand_test_images(tmp_path):
    """A full-size test set builds a whole report (its build time is measured by bench/report_speed.py)."""
    run_dir = make_run(tmp_path / "run", n=10_000, n_classes=10)
    markdown, html = write_report(run_dir)
    assert "10,000" in markdown.read_text() or "10000" in markdown.read_text()
    assert html.read_text().count("data:image/png;base64") >= 3


def test_report_warns_when_a_class_is_never_predicted(tmp_path):
    from cnnlab import runs
    from cnnlab.report.run_report import write_report

    probabilities = np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.3, 0.7, 0.0]], dtype=np.float32)
    runs.write_json_atomic(tmp_path / "metrics.json", {"name": "x", "dataset": "d", "status": "complete"})
    runs.write_npz_atomic(tmp_path / "predictions.npz", probabilities=probabilities,
                          labels=np.array([0, 2, 1]), class_names=np.array(["a", "b", "c"]))
    markdown, _ = write_report(tmp_path)
    text = markdown.read_text()
    assert "never predicts c" in text
    assert "never predicts a" not in text


# Class names as a user's folders may spell them: math text, markup, TeX, a long name, bytes that are not UTF-8.
HOSTILE_CLASS_NAMES = ["$x$", "a$b", HOSTILE_NAME, "\\frac{1}{0}", "$\\undefined$", "$}$", "n" * 60, "caf\udce9",
                       "\udcff\udcfe", "_hidden", "two\nlines"]
EVERY_RUN_FIGURE = {"history.png", "per_class.png", "confusion.png", "confusion_normalized.png", "worst.png",
                    "confident_errors.png", "least_confident_correct.png", "predictions.png"}


def test_hostile_class_names_are_data_in_every_figure_and_escaped(tmp_path):
    run_dir = make_run(tmp_path / "run", n=90, class_names=HOSTILE_CLASS_NAMES)
    markdown_path, html_path = write_report(run_dir, worst_n=5)
    figures = {path.name for path in (run_dir / runs.FIGURES_DIR).iterdir()}
    assert EVERY_RUN_FIGURE <= figures
    markdown, page = markdown_path.read_text(encoding="utf-8"), html_path.read_text(encoding="utf-8")
    assert "could not be drawn" not in markdown
    assert "<script" not in page.lower() and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "caf\\xe9" in page and "\\xff\\xfe" in page  # undecodable bytes shown, not crashed on
    paths = write_comparison([run_dir, make_run(tmp_path / "other", seed=3)], tmp_path / "out",
                             labels=["$run$", "a$b<i>"])
    comparison = paths["html"].read_text(encoding="utf-8")
    assert "could not be drawn" not in comparison and "a$b&lt;i&gt;" in comparison


def test_plain_text_escapes_math_and_keeps_the_name_readable():
    assert plots.plain_text("$x$") == r"\$x\$"
    assert plots.plain_text("caf\udce9") == "caf\\xe9"
    assert plots.plain_text("bell\x07") == "bell\\x07"
    assert plots.plain_text("n" * 60, 10) == "n" * 9 + "\u2026"
    assert plots.plain_labels(["_x"]) == [" _x"]
    figure = plots.plot_confusion(np.eye(2), ["$\\frac{1}{0}$", "a$b"])
    assert len(plots.figure_to_png(figure)) > 0  # would raise a math-text ParseException unescaped


def test_a_figure_that_fails_becomes_a_note_and_the_report_completes(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("drawing went wrong")

    monkeypatch.setattr(plots, "plot_per_class", broken)
    run_dir = make_run(tmp_path / "run")
    markdown_path, html_path = write_report(run_dir)
    markdown = markdown_path.read_text()
    assert 'The figure "per\\_class"' in markdown or 'The figure "per_class"' in markdown
    assert "ValueError: drawing went wrong" in markdown
    assert not (run_dir / runs.FIGURES_DIR / "per_class.png").exists()
    assert (run_dir / runs.FIGURES_DIR / "confusion.png").exists() and html_path.exists()


def test_validate_every_reads_healthy_and_draws_only_validated_epochs(tmp_path):
    run_dir = make_run(tmp_path / "run")
    rows = runs.read_history(run_dir)
    for row in rows:
        if row["epoch"] % 2:  # train.validate_every=2: odd epochs have no validation pass
            row["val_loss"] = row["val_accuracy"] = math.nan
    runs.write_csv_atomic(run_dir / runs.HISTORY_FILE, rows, runs.HISTORY_COLUMNS)
    markdown = write_report(run_dir)[0].read_text()
    assert "diverged" not in markdown and "Diagnosis: " in markdown
    figure = plots.plot_history(rows)
    validation_lines = [line for line in figure.axes[0].get_lines() if line.get_label() == "validation"]
    assert [list(line.get_xdata()) for line in validation_lines] == [[2.0, 4.0]]
