"""The run registry: the SQLite index updated when a run finishes (single and multi-seed), rebuilt from the
folders, deleted folders dropped, --where/--sort/--limit, run ids in compare/report/predict (unknown and
ambiguous ids explained), broken and foreign index files, and two processes writing at once."""

import hashlib
import itertools
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab import runs
from cnnlab.analysis.run_index import INDEX_FILE, open_index, query_runs, record_run, resolve_run, run_id
from cnnlab.cli import main
from cnnlab.config import load_config
from cnnlab.errors import CnnlabError
from cnnlab.experiment import run_experiment
from cnnlab.studies.registry import format_runs, list_runs
from cnnlab.studies.seeds import run_seeds, with_seed_count

REPO = Path(__file__).resolve().parents[2]
# a finished multi-seed folder of real runs (three seeds of cifar10/cnn), small: metrics, history, config only
SEEDS_SOURCE = REPO / "docs" / "reproduction-runs" / "cifar10-cnn-recipe"
FAST = ["train.epochs=1", "train.early_stopping=null"]


def shared_datasets():
    """The offline datasets, as tests/conftest.py finds them (a module fixture cannot use its fixture)."""
    for candidate in (os.environ.get("CNNLAB_DATA"), REPO.parent / "shared" / "datasets"):
        if candidate and (Path(candidate) / "mnist").is_dir():
            return Path(candidate)
    return None


def metrics_of(folder):
    return json.loads((folder / runs.METRICS_FILE).read_text())


def copy_seeds_folder(target):
    shutil.copytree(SEEDS_SOURCE, target)
    return target


def paths(found):
    return [run["path"] for run in found]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """runs/ with an index made while it was empty, then a run and a two-seed folder trained into it."""
    if shared_datasets() is None:
        pytest.skip("offline datasets not present")
    root = tmp_path_factory.mktemp("registry")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CNNLAB_OFFLINE", "1")
        patch.setenv("XDG_CACHE_HOME", str(root / "cache"))
        folder = root / "runs"
        folder.mkdir()
        open_index(folder)
        assert query_runs(folder) == []
        run_experiment(load_config("digits", FAST + ["optimizer.lr=0.003", "name=single"]), out=folder / "single",
                       data_dir=shared_datasets(), show_progress=False)
        run_seeds(with_seed_count(load_config("digits", FAST + ["name=multi"]), 2), out=folder / "multi",
                  data_dir=shared_datasets(), show_progress=False)
    return folder


@pytest.mark.slow
def test_a_finished_run_and_a_multi_seed_folder_are_in_the_index_without_a_rebuild(trained):
    found = {run["path"]: run for run in query_runs(trained)}  # the index as the runs left it: no scan
    assert sorted(found) == ["multi", "single"]
    single = metrics_of(trained / "single")
    assert found["single"]["test_accuracy"] == pytest.approx(single["test_accuracy"])
    assert (found["single"]["status"], found["single"]["name"], found["single"]["dataset"]) == ("complete", "single",
                                                                                                 "digits")
    assert found["single"]["id"] == run_id(trained / "single")
    aggregate = metrics_of(trained / "multi")
    statistic = aggregate["statistics"]["test_accuracy"]
    assert found["multi"]["kind"] == "seeds" and found["multi"]["n_seeds"] == 2 == found["multi"]["seeds_done"]
    assert found["multi"]["test_accuracy"] == pytest.approx(statistic["mean"])
    assert found["multi"]["test_accuracy_std"] == pytest.approx(statistic["std"])
    assert paths(query_runs(trained, include_seed_runs=True)) == ["multi", "multi/seed-0", "multi/seed-1", "single"]
    table = format_runs(query_runs(trained), trained)
    assert f"{100 * statistic['mean']:.2f}% ± {100 * statistic['std']:.2f}" in table
    assert f"{100 * single['test_accuracy']:.2f}%" in table


def test_rebuild_finds_new_folders_and_a_deleted_folder_disappears(tmp_path):
    folder = tmp_path / "runs"
    copy_seeds_folder(folder / "study" / "cnn")
    assert paths(list_runs(folder)) == ["study/cnn"]  # no index yet: built from the folders
    assert (folder / INDEX_FILE).is_file()
    shutil.copytree(SEEDS_SOURCE / "seed-1", folder / "copied")  # arrives without a run finishing
    assert paths(list_runs(folder, sort="folder")) == ["study/cnn"]
    assert paths(list_runs(folder, sort="folder", rebuild=True)) == ["copied", "study/cnn"]
    shutil.rmtree(folder / "study")
    assert paths(list_runs(folder)) == ["copied"]
    with sqlite3.connect(folder / INDEX_FILE) as connection:  # dropped from the file too, seed runs included
        assert [row[0] for row in connection.execute("SELECT path FROM runs")] == ["copied"]


def test_where_sort_and_limit(tmp_path):
    folder = tmp_path / "runs"
    copy_seeds_folder(folder / "cnn")
    accuracies = {f"cnn/seed-{seed}": metrics_of(folder / "cnn" / f"seed-{seed}")["test_accuracy"] for seed in range(3)}
    best_first = sorted(accuracies, key=accuracies.get, reverse=True)
    seed_runs = {"include_seed_runs": True, "where": ["kind=run"]}
    assert paths(list_runs(folder, sort="-test_accuracy", **seed_runs)) == best_first
    assert paths(list_runs(folder, sort="test_accuracy", **seed_runs)) == best_first[::-1]
    assert paths(list_runs(folder, sort="-accuracy", limit=2, **seed_runs)) == best_first[:2]
    middle = accuracies[best_first[1]]
    assert paths(list_runs(folder, where=[f"test_accuracy>={middle}", "kind=run"], include_seed_runs=True,
                           sort="-test_accuracy")) == best_first[:2]
    assert paths(list_runs(folder, where=[f"test_accuracy>={100 * middle}%", "seeds=1"], include_seed_runs=True,
                           sort="-test_accuracy")) == best_first[:2]
    assert paths(list_runs(folder, where=["dataset=cifar10-jpeg"])) == ["cnn"]
    assert paths(list_runs(folder, where=["dataset=CIFAR10-JPEG", "name=cifar10-*"])) == ["cnn"]
    assert list_runs(folder, where=["dataset=mnist"]) == []
    with pytest.raises(CnnlabError, match='Did you mean "dataset"'):
        list_runs(folder, where=["datset=mnist"])
    with pytest.raises(CnnlabError, match="is a number"):
        list_runs(folder, where=["test_accuracy>high"])
    with pytest.raises(CnnlabError, match="not a condition"):
        list_runs(folder, where=["mnist"])


def test_the_runs_command_sorts_descending_with_a_leading_minus(tmp_path, capsys):
    folder = tmp_path / "runs"
    copy_seeds_folder(folder / "cnn")
    assert main(["runs", str(folder), "--all", "--sort", "-test_accuracy", "--limit", "2", "--where", "kind=run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["id", "name", "dataset"] and len(lines) == 3
    accuracies = sorted((metrics_of(folder / "cnn" / f"seed-{seed}")["test_accuracy"] for seed in range(3)),
                        reverse=True)
    assert [f"{100 * value:.2f}%" in line for value, line in zip(accuracies, lines[1:])] == [True, True]
    assert main(["runs", str(tmp_path / "nowhere")]) == 2
    assert "There is no folder" in capsys.readouterr().err


def test_an_unknown_or_ambiguous_id_is_explained(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    names = {}
    for number in itertools.count():  # two folders whose ids begin alike (16 bits: a few hundred names)
        name = f"run{number}"
        prefix = run_id(tmp_path / "runs" / name)[:4]
        if prefix in names:
            break
        names[prefix] = name
    for folder_name in (names[prefix], name):
        shutil.copytree(SEEDS_SOURCE / "seed-0", tmp_path / "runs" / folder_name)
    assert resolve_run(run_id(tmp_path / "runs" / name)) == (tmp_path / "runs" / name).resolve()
    with pytest.raises(CnnlabError, match="begins the ids of 2 runs"):
        resolve_run(prefix)
    assert main(["report", "abcdef12"]) == 2
    assert "neither a folder nor the id of a run" in capsys.readouterr().err
    assert resolve_run("not-an-id") == Path("not-an-id")  # not an id: the command says what is wrong


def test_a_broken_index_is_rebuilt_and_a_foreign_database_left_alone(tmp_path, capsys):
    folder = tmp_path / "runs"
    copy_seeds_folder(folder / "cnn")
    (folder / INDEX_FILE).write_bytes(b"not a database at all" * 100)
    record_run(folder / "cnn")  # never raises: one warning
    assert "the run index was not updated" in capsys.readouterr().err
    assert paths(list_runs(folder)) == ["cnn"]
    assert "moved to" in capsys.readouterr().err
    assert len(list(folder.glob(f"{INDEX_FILE}.broken-*"))) == 1
    other = tmp_path / "other"
    copy_seeds_folder(other / "cnn")
    with sqlite3.connect(other / INDEX_FILE) as connection:
        connection.execute("CREATE TABLE notes (text TEXT)")
    record_run(other / "cnn")
    assert capsys.readouterr().err == ""  # another program's index.sqlite: not touched, nothing to say
    with sqlite3.connect(other / INDEX_FILE) as connection:
        assert [row[0] for row in connection.execute("SELECT name FROM sqlite_master")] == ["notes"]
    with pytest.raises(CnnlabError, match="another program's SQLite database"):
        list_runs(other)


WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from cnnlab.analysis.run_index import record_run
    folder, number = Path(sys.argv[1]), sys.argv[2]
    (folder / f"ready-{number}").touch()
    while not (folder / "go").exists():
        time.sleep(0.01)
    for run_dir in sorted(folder.glob(f"writer{number}-*")):
        record_run(run_dir)
""")


@pytest.mark.slow
def test_two_processes_recording_runs_at_once_keep_the_index_whole(tmp_path):
    folder = tmp_path / "runs"
    source = SEEDS_SOURCE / "seed-2"
    for writer, number in itertools.product((1, 2), range(30)):
        (folder / f"writer{writer}-{number:02d}").mkdir(parents=True)
        for name in (runs.METRICS_FILE, runs.ENVIRONMENT_FILE):
            shutil.copy(source / name, folder / f"writer{writer}-{number:02d}" / name)
    open_index(folder, rebuild=True)
    with sqlite3.connect(folder / INDEX_FILE) as connection:
        connection.execute("DELETE FROM runs")  # an index that has seen none of them
    processes = [subprocess.Popen([sys.executable, "-c", WRITER, str(folder), str(writer)], stderr=subprocess.PIPE,
                                  text=True) for writer in (1, 2)]
    while not all((folder / f"ready-{writer}").exists() for writer in (1, 2)):
        assert all(process.poll() is None for process in processes), [p.stderr.read() for p in processes]
    (folder / "go").touch()  # both start writing together
    errors = [process.communicate(timeout=300)[1] for process in processes]
    assert [process.returncode for process in processes] == [0, 0] and errors == ["", ""], errors
    with sqlite3.connect(folder / INDEX_FILE) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = sorted(row[0] for row in connection.execute("SELECT path FROM runs"))
    assert stored == sorted(f"writer{writer}-{number:02d}" for writer, number in itertools.product((1, 2), range(30)))
    assert metrics_of(source)["test_accuracy"] == pytest.approx(query_runs(folder, limit=1)[0]["test_accuracy"])


def test_run_ids_are_the_short_hash_of_the_resolved_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a").mkdir()
    expected = hashlib.sha256(str((tmp_path / "a").resolve()).encode()).hexdigest()[:8]
    assert run_id("a") == run_id(tmp_path / "a") == expected
    assert run_id(tmp_path / "b") != expected


@pytest.mark.slow
def test_compare_report_and_predict_accept_run_ids(trained, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(trained.parent)  # ./runs is the trained folder
    single, multi = run_id(trained / "single"), run_id(trained / "multi")
    assert main(["report", single]) == 0
    assert capsys.readouterr().out.split() == [str((trained / "single" / name).resolve())
                                               for name in ("report.md", "report.html")]
    assert main(["compare", single[:5], multi, "--out", str(tmp_path / "cmp")]) == 0
    capsys.readouterr()
    compared = (tmp_path / "cmp" / "comparison.csv").read_text()
    assert str((trained / "single").resolve()) in compared and str((trained / "multi").resolve()) in compared
    examples = runs.load_npz(trained / "single" / runs.EXAMPLES_FILE)
    saved = runs.load_npz(trained / "single" / runs.PREDICTIONS_FILE)
    Image.fromarray(np.ascontiguousarray(examples["images"][0][0])).save(tmp_path / "digit.png")
    assert main(["predict", single, str(tmp_path / "digit.png"), "--format", "json", "--device", "cpu"]) == 0
    predicted = json.loads(capsys.readouterr().out)
    expected = str(saved["class_names"][int(np.argmax(saved["probabilities"][int(examples["indices"][0])]))])
    assert predicted[0]["image"].endswith("digit.png") and predicted[0]["predictions"][0]["class"] == expected
