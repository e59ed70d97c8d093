"""The example configs and suites that ship inside the package, by name; the wheel works without the checkout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from cnnlab.bundled import bundled_example, bundled_suite, example_names, suite_names
from cnnlab.cli import main
from cnnlab.config import load_config
from cnnlab.errors import ConfigError
from cnnlab.studies.suite import load_suite

REPO = Path(__file__).resolve().parents[1]


def test_examples_and_suites_resolve_by_name():
    assert "digits" in example_names()
    assert {"report000-keras-mnist", "report001", "report004"} <= set(suite_names())
    assert bundled_example("digits.yaml") == bundled_example("digits")
    assert load_config("digits").to_dict() == load_config(str(REPO / "examples" / "digits.yaml")).to_dict()
    assert load_suite(Path("report001")).name == "report001"


def test_a_name_is_never_a_path():
    for name in ("../pyproject", "suites/report001", ".hidden", "", "/etc/passwd", "x" * 100_000, "digits\0"):
        assert bundled_example(name) is None and bundled_suite(name) is None


def test_the_repository_folders_are_the_bundled_files():
    assert (REPO / "suites" / "report001.yaml").resolve() == bundled_suite("report001").resolve()
    assert (REPO / "examples" / "digits.yaml").resolve() == bundled_example("digits").resolve()


def test_an_unknown_suite_names_the_bundled_ones():
    with pytest.raises(ConfigError, match="report000-keras-mnist"):
        load_suite(Path("no-such-suite"))


def test_help_documents_exit_codes(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "exit codes" in text and "130" in text and "diverged" in text


@pytest.mark.slow
def test_the_wheel_works_without_the_checkout(tmp_path):
    """Build the wheel, install it alone into a new environment (the dependencies come from this one) and run
    an example and a suite by name from a folder far from the checkout."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist")], check=True)
    wheel = next((tmp_path / "dist").glob("cnnlab-*.whl"))
    venv.create(tmp_path / "env", system_site_packages=True, with_pip=True)
    python = tmp_path / "env" / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True)
    work = tmp_path / "work"
    work.mkdir()
    environment = {**os.environ, "PYTHONPATH": "", "CNNLAB_OFFLINE": "1"}

    def run(*argv: str | Path) -> str:
        result = subprocess.run(argv, cwd=work, env=environment, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        return result.stdout

    where = run(python, "-c", "import cnnlab, json; print(json.dumps(cnnlab.__file__))")
    assert str(tmp_path / "env") in json.loads(where)  # the wheel's copy, not the checkout's
    cnnlab = tmp_path / "env" / "bin" / "cnnlab"
    run(cnnlab, "train", "digits", "train.epochs=1", "--out", "run", "--quiet")
    assert json.loads((work / "run" / "metrics.json").read_text())["test_accuracy"] > 0.2
    run(cnnlab, "suite", "digits-quick", "train.epochs=1", "--out", "suite", "--quiet")
    assert (work / "suite" / "comparison.md").is_file()
