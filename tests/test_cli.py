"""The command line: each bad input gives one clear paragraph and exit code 2, no traceback."""

import gzip
import json
import subprocess
import sys

import pytest

from cnnlab.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def config_file(tmp_path, text):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return str(path)


def assert_clean_error(code, err, *fragments):
    assert code == 2
    assert "Traceback" not in err
    assert err.startswith("error: ")
    for fragment in fragments:
        assert fragment in err.replace("\n", " "), (fragment, err)


@pytest.mark.slow
def test_no_traceback_in_a_real_process(tmp_path):
    path = config_file(tmp_path, "train: {epocs: 2}\n")
    result = subprocess.run([sys.executable, "-m", "cnnlab.cli", "train", path], capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and 'Did you mean "epochs"' in result.stderr.replace("\n", " ")


@pytest.mark.slow
def test_debug_shows_traceback(tmp_path):
    path = config_file(tmp_path, "train: {epocs: 2}\n")
    result = subprocess.run([sys.executable, "-m", "cnnlab.cli", "--debug", "train", path], capture_output=True, text=True)
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_unknown_layer(capsys, tmp_path):
    path = config_file(tmp_path, "model: {layers: ['Conv2D: 8, 3', 'Flaten', 'Dense: 10']}\n")
    code, _, err = run_cli(capsys, "train", path, "--out", str(tmp_path / "r"))
    assert_clean_error(code, err, "Flaten", "Did you mean")


def test_impossible_shape(capsys, tmp_path):
    path = config_file(tmp_path, "dataset: digits\nmodel: {layers: ['Conv2D: 8, 5', 'Conv2D: 8, 5', 'Flatten', 'Dense: 10']}\n")
    code, _, err = run_cli(capsys, "train", path, "--out", str(tmp_path / "r"))
    assert_clean_error(code, err, "Conv2D")


def test_unknown_model_name(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", config_file(tmp_path, "model: keras/mnist/modl1\n"))
    assert_clean_error(code, err, "keras/mnist/model1")


def test_missing_dataset(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("CNNLAB_DATA", raising=False)
    code, _, err = run_cli(capsys, "train", config_file(tmp_path, "dataset: mnist\n"), "--data-dir", str(tmp_path / "empty"))
    assert_clean_error(code, err, str(tmp_path / "empty"))


@pytest.mark.slow
def test_corrupt_idx(capsys, tmp_path, datasets_dir, monkeypatch):
    monkeypatch.delenv("CNNLAB_DATA", raising=False)
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    for name in ("train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (folder / name).write_bytes((datasets_dir / "mnist" / name).read_bytes())
    whole = gzip.decompress((datasets_dir / "mnist" / "train-images-idx3-ubyte.gz").read_bytes())
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(whole[: len(whole) // 2]))
    code, _, err = run_cli(capsys, "train", config_file(tmp_path, "dataset: mnist\n"), "--data-dir", str(tmp_path / "data"))
    assert_clean_error(code, err, "train-images-idx3-ubyte.gz")


def test_unwritable_output(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_cli(capsys, "train", "examples/digits.yaml", "--out", str(blocker / "run"), "--quiet")
    assert_clean_error(code, err, "--out")


@pytest.mark.slow
def test_train_report_compare_summary(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "train", "examples/digits.yaml", "model=mlp", "train.epochs=2",
                           "--out", str(tmp_path / "a"), "--quiet")
    assert code == 0 and out.strip().splitlines()[-1] == str(tmp_path / "a")
    code, out, _ = run_cli(capsys, "train", "examples/digits.yaml", "train.epochs=2", "--out", str(tmp_path / "b"), "--quiet")
    assert code == 0
    (tmp_path / "a" / "report.html").unlink()
    code, out, _ = run_cli(capsys, "report", str(tmp_path / "a"))
    assert code == 0 and (tmp_path / "a" / "report.html").exists()
    code, out, _ = run_cli(capsys, "compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "cmp"))
    assert code == 0
    table = (tmp_path / "cmp" / "comparison.csv").read_text().splitlines()
    assert len(table) == 3
    accuracy_a = json.loads((tmp_path / "a" / "metrics.json").read_text())["test_accuracy"]
    row = dict(zip(table[0].split(","), table[1].split(",")))
    assert float(row["test_accuracy"]) == pytest.approx(accuracy_a, abs=1e-6)


def test_summary_keras_style(capsys):
    code, out, _ = run_cli(capsys, "summary", "keras/mnist/model1", "--dataset", "digits")
    assert code == 0
    assert "Total params" in out and "Trainable params" in out


def test_report_on_non_run(capsys, tmp_path):
    code, _, err = run_cli(capsys, "report", str(tmp_path))
    assert_clean_error(code, err, "not a cnnlab run directory")


def test_out_into_a_foreign_folder_is_refused(capsys, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    code, _, err = run_cli(capsys, "train", "mlp", "train.epochs=1", "--out", str(tmp_path), "--quiet")
    assert_clean_error(code, err, "not a cnnlab run directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.slow
def test_unwritable_comparison_output(capsys, tmp_path):
    code, _, _ = run_cli(capsys, "train", "mlp", "train.epochs=1", "--out", str(tmp_path / "a"), "--quiet")
    assert code == 0
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_cli(capsys, "compare", str(tmp_path / "a"), "--out", str(blocker / "cmp"))
    assert_clean_error(code, err, "cannot read or write")


@pytest.mark.slow
def test_debug_after_the_command(tmp_path):
    path = config_file(tmp_path, "train: {epocs: 2}\n")
    result = subprocess.run([sys.executable, "-m", "cnnlab.cli", "train", path, "--debug"], capture_output=True, text=True)
    assert "Traceback" in result.stderr
