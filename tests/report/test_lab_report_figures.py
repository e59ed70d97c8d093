"""A zoo model's run beside the lab report's figure: what training records (`recipe_differences`) and how the
run report, the seeds report and the comparison say whether the run followed the report's recipe."""

from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

import pytest

from cnnlab import runs
from cnnlab.analysis.seed_runs import aggregate_metrics
from cnnlab.config import load_config
from cnnlab.errors import CnnlabError
from cnnlab.experiment import run_experiment
from cnnlab.report.comparison import write_comparison
from cnnlab.report.document import format_percent
from cnnlab.report.lab_report_figures import recipe_cell, recipe_sentence
from cnnlab.report.run_report import write_report
from cnnlab.report.seeds_report import write_seeds_report

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the run-folder builder beside this file
from gallery_runs import make_gallery_run  # noqa: E402

MODEL = "keras/mnist/model1"  # the report: 91.96% test accuracy, 20 epochs on all of MNIST
# one epoch on 300 digits images: seconds on a CPU, and four settings away from the report's recipe
SHORTENED = ["dataset.name=digits", "dataset.subset=300", "dataset.test_subset=80", "train.epochs=1",
             "train.device=cpu", "train.threads=1"]
NOT_RECORDED = "Whether this run followed the report's recipe was not recorded."


@pytest.fixture(scope="module")
def zoo_runs(tmp_path_factory) -> tuple[Path, Path]:
    """(Trains: the tests using it are marked slow.) A shortened run of a zoo model as training writes it, and a copy made as runs were before
    `recipe_differences` was recorded (its report rewritten)."""
    folder = tmp_path_factory.mktemp("zoo")
    run_dir = run_experiment(load_config(MODEL, SHORTENED), out=folder / "run", show_progress=False)
    old_dir = folder / "old-run"
    shutil.copytree(run_dir, old_dir)
    metrics = runs.read_json(old_dir / runs.METRICS_FILE)
    del metrics["recipe_differences"]
    runs.write_json_atomic(old_dir / runs.METRICS_FILE, metrics)
    write_report(old_dir)
    return run_dir, old_dir


def reported_run(run_dir: Path, **metrics) -> Path:
    """A hand-built run folder whose metrics.json holds the report's figures and ``metrics``."""
    make_gallery_run(run_dir, ["a", "b", "c"])
    recorded = runs.read_json(run_dir / runs.METRICS_FILE)
    recorded.update({"reported_accuracy": 0.6361, "reported_accuracy_kind": "test", "reported_dataset": "cifar10",
                     "source": "report 001", **metrics})
    runs.write_json_atomic(run_dir / runs.METRICS_FILE, recorded)
    return run_dir


@pytest.mark.slow
def test_training_records_how_the_run_differs_from_the_reports_recipe(zoo_runs):
    metrics = runs.read_json(zoo_runs[0] / runs.METRICS_FILE)
    assert metrics["reported_accuracy"] == pytest.approx(0.9196) and metrics["reported_dataset"] == "mnist"
    assert metrics["recipe_differences"] == [
        "train.epochs: 1 (the report: 20)", "dataset.name: digits (the report: mnist)",
        "dataset.subset: 300 training images (the report: all)", "dataset.test_subset: 80 test images (the report: all)",
    ]
    assert metrics["epochs_planned"] == 1, "the recorded difference is the run's own setting"


@pytest.mark.slow
def test_run_report_sets_the_reports_figure_beside_the_runs_and_says_the_recipe_differs(zoo_runs):
    run_dir = zoo_runs[0]
    accuracy = format_percent(runs.read_json(run_dir / runs.METRICS_FILE)["test_accuracy"])
    markdown = (run_dir / runs.REPORT_MARKDOWN_FILE).read_text()
    section = markdown.split("## Against the lab report", 1)[1].split("\n## ", 1)[0]
    assert "| The lab report (report 000, Keras part) | 91.96% | test images | mnist |" in section
    assert f"| This run | {accuracy} | test images | digits |" in section
    assert "This run's recipe differs from the report's: train.epochs: 1 (the report: 20);" in section
    assert "the two figures are not comparable." in section and "**Warning:**" in section
    assert markdown.index("## Against the lab report") < markdown.index("## Training curves")
    page = (run_dir / runs.REPORT_HTML_FILE).read_text()
    assert '<a href="#against-the-lab-report">Against the lab report</a>' in page, "listed in the contents"


@pytest.mark.slow
def test_a_run_made_before_the_recipe_was_recorded_says_so(zoo_runs):
    markdown = (zoo_runs[1] / runs.REPORT_MARKDOWN_FILE).read_text()
    assert NOT_RECORDED in markdown and "91.96%" in markdown and "differs" not in markdown


@pytest.mark.slow
def test_comparison_says_which_runs_followed_the_recipe(zoo_runs, tmp_path):
    followed = reported_run(tmp_path / "followed", recipe_differences=[])
    paths = write_comparison([*zoo_runs, followed], tmp_path / "out", labels=["short", "old", "followed"])
    markdown = paths["md"].read_text()
    assert "| Reported accuracy | Recipe |" in markdown
    assert ("differs: epochs 1 (report 20); dataset digits (report mnist); subset 300 training images (report "
            "all); test_subset 80 test images (report all)") in markdown
    assert "| 91.96% (test) | not recorded |" in markdown and "| 63.61% (test) | report's |" in markdown
    assert "cannot be compared with the report's figure" in markdown
    with paths["csv"].open() as handle:
        recipes = [row["recipe"] for row in csv.DictReader(handle)]
    assert recipes[0].startswith("differs: epochs 1 (report 20)") and recipes[1:] == ["not recorded", "report's"]


def test_comparison_of_hand_built_runs_names_each_runs_recipe(tmp_path):
    short = reported_run(tmp_path / "short", recipe_differences=["train.epochs: 1 (the report: 10)"])
    old, followed = reported_run(tmp_path / "old"), reported_run(tmp_path / "followed", recipe_differences=[])
    markdown = write_comparison([short, old, followed], tmp_path / "out")["md"].read_text()
    rows = [line for line in markdown.splitlines() if line.startswith(("| short", "| old", "| followed"))]
    assert ["differs: epochs 1 (report 10)" in rows[0], "not recorded" in rows[1], "report's" in rows[2]] == [True] * 3
    assert "cannot be compared with the report's figure" in markdown


def test_comparison_without_reported_figures_has_no_recipe_column(tmp_path):
    run_dir = make_gallery_run(tmp_path / "plain", ["a", "b"])
    markdown = write_comparison([run_dir], tmp_path / "out")["md"].read_text()
    assert "Recipe" not in markdown and "Reported accuracy" not in markdown


def test_run_report_of_a_run_that_followed_the_recipe_of_a_validation_figure(tmp_path):
    run_dir = reported_run(tmp_path / "run", recipe_differences=[], reported_accuracy_kind="validation")
    markdown = write_report(run_dir)[0].read_text()
    assert "This run followed the report's recipe." in markdown
    assert "| The lab report (report 001) | 63.61% | validation images | cifar10 |" in markdown
    assert "The report's figure is a validation accuracy; this run's is a test accuracy" in markdown


def test_a_run_without_a_reported_figure_has_no_section(tmp_path):
    markdown = write_report(make_gallery_run(tmp_path / "run", ["a", "b"]))[0].read_text()
    assert "Against the lab report" not in markdown


def test_seeds_report_and_its_comparison_row_carry_the_seeds_recipe(tmp_path):
    folder = tmp_path / "seeds"
    differences = ["train.epochs: 2 (the report: 10)"]
    seed_metrics = [runs.read_json(reported_run(folder / f"seed-{seed}", recipe_differences=differences)
                                   / runs.METRICS_FILE) for seed in (0, 1)]
    runs.write_json_atomic(folder / runs.METRICS_FILE, aggregate_metrics(seed_metrics, [0, 1], ["seed-0", "seed-1"]))
    markdown = write_seeds_report(folder)[0].read_text()
    assert "These runs' recipe differs from the report's: train.epochs: 2 (the report: 10);" in markdown
    assert "| These runs | " in markdown and "(2 seeds) | test images |" in markdown
    compared = write_comparison([folder], tmp_path / "out")["md"].read_text()
    assert "differs: epochs 2 (report 10)" in compared


def test_wording_of_each_case():
    reported = {"reported_accuracy": 0.5}
    assert recipe_cell({}) == "n/a" and recipe_cell(reported) == "not recorded"
    assert recipe_cell({**reported, "recipe_differences": []}) == "report's"
    many = [f"train.setting{number}: {number} (the report: 0)" for number in range(6)]
    assert recipe_cell({**reported, "recipe_differences": many}).endswith("setting3 3 (report 0); and 2 more")
    assert recipe_sentence(reported) == NOT_RECORDED
    assert recipe_sentence({"recipe_differences": []}, "These runs") == "These runs followed the report's recipe."


def test_damaged_recipe_differences_are_a_user_error(tmp_path):
    run_dir = reported_run(tmp_path / "run", recipe_differences="train.epochs: 1")
    with pytest.raises(CnnlabError, match="recipe_differences"):
        write_report(run_dir)


def test_a_copy_of_the_reports_dataset_is_said_apart_from_a_changed_recipe(tmp_path):
    copy = "dataset.name: cifar10-jpeg, a JPEG copy of cifar10 (the report: cifar10)"
    metrics = {"reported_accuracy": 0.78, "dataset": "cifar10-jpeg", "recipe_differences": [copy]}
    assert recipe_cell(metrics) == "report's (on cifar10-jpeg)"
    sentence = recipe_sentence(metrics)
    assert sentence.startswith("This run followed the report's recipe on cifar10-jpeg, a copy of the report's dataset")
    shortened = {**metrics, "recipe_differences": [copy, "train.epochs: 1 (the report: 10)"]}
    assert recipe_cell(shortened) == "differs: epochs 1 (report 10)"
    assert "not comparable" in recipe_sentence(shortened) and "JPEG" not in recipe_sentence(shortened)
    run_dir = reported_run(tmp_path / "run", recipe_differences=[copy], dataset="cifar10-jpeg")
    markdown = write_report(run_dir)[0].read_text()
    assert "followed the report's recipe on cifar10-jpeg" in markdown and "**Warning:**" not in markdown.split(
        "## Against the lab report", 1)[1].split("\n## ", 1)[0]
