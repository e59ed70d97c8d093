"""The Python API (cnnlab.api, docs/api.md): `import cnnlab` stays quick and lazy; settings given in Python
are the command line's; `Run` reads single and multi-seed folders and shows itself in a notebook; a
trained run's model and predictions are the run's own; every example of docs/api.md runs."""

import base64
import io
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cnnlab
from cnnlab import runs
from cnnlab.api import Run, load_run, make_config
from cnnlab.cli import main
from cnnlab.config import load_config, validate_config
from cnnlab.errors import CnnlabError, ConfigError
from cnnlab.models import zoo

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- the package


def test_import_cnnlab_loads_no_torch():
    code = "import sys, cnnlab; print('torch' in sys.modules, 'cnnlab.api' in sys.modules, cnnlab.__version__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split()[:2] == ["False", "False"], "the API (and torch) load on first use only"


def test_the_public_names_are_documented_and_models_stays_the_function():
    for name in cnnlab.__all__:
        value = getattr(cnnlab, name)
        assert name == "__version__" or (value.__doc__ or "").strip(), f"cnnlab.{name} has no docstring"
    for name in ("path", "config", "metrics", "history", "seeds", "interpretation", "model", "predict", "report"):
        assert name in (Run.__doc__ or "") or (getattr(Run, name).__doc__ or "").strip(), name
    from cnnlab import models  # noqa: F401 - the function, though the subpackage cnnlab.models is imported
    assert models is cnnlab.models is cnnlab.api.models and callable(models)
    assert sys.modules["cnnlab.models"].zoo is zoo, "the subpackage is still imported by its name"
    assert "train" in dir(cnnlab) and "models" in dir(cnnlab)
    with pytest.raises(AttributeError):
        cnnlab.no_such_name  # noqa: B018
    assert (REPO / "src" / "cnnlab" / "py.typed").is_file()


# --------------------------------------------------------------------------- settings


def test_settings_in_python_are_the_command_lines():
    python = make_config("mlp", {"train.epochs": 3, "train.early_stopping": {"patience": 2}},
                         optimizer__lr=1e-5, train__validation_split=0.2, name="mine")
    cli = load_config("mlp", ["train.epochs=3", "train.early_stopping={patience: 2}", "optimizer.lr=1e-5",
                              "train.validation_split=0.2", "name=mine"])
    assert python.to_dict() == cli.to_dict()
    assert make_config("mlp", {"train.epochs": 3}, train__epochs=4).train.epochs == 4, "keywords come last"
    text = make_config("mlp", name="with: colon # and \"quotes\"\n")
    assert text.name == "with: colon # and \"quotes\"\n", "text stays text"
    assert make_config("mlp", train__seeds=None).train.seeds is None


def test_mappings_and_typed_configs_take_settings_too():
    base = load_config("mlp")
    from_typed = make_config(base, train__epochs=2, dataset="mnist")
    assert from_typed.train.epochs == 2 and from_typed.dataset.name == "mnist"
    assert from_typed.dataset.normalize == base.dataset.normalize, "a dataset name keeps the section's options"
    from_mapping = make_config({"dataset": "digits", "model": "mlp"}, {"train.epochs": 1}, optimizer__name="sgd")
    assert (from_mapping.train.epochs, from_mapping.optimizer.name, from_mapping.model.name) == (1, "sgd", "mlp")
    written_out = {"dataset": "digits", "model": "mlp", "train": {"epochs": 1}, "optimizer": {"name": "sgd"}}
    assert from_mapping.to_dict() == validate_config(written_out).to_dict()


def test_wrong_settings_are_named():
    with pytest.raises(ConfigError, match="epochs"):
        make_config("mlp", train__epoch=3)
    with pytest.raises(ConfigError):
        make_config({"dataset": "digits", "model": "mlp"}, train__epochs="many")
    with pytest.raises(TypeError, match="not a setting"):
        make_config("mlp", {"train..epochs": 3})
    with pytest.raises(TypeError, match="cannot be a setting"):
        make_config("mlp", train__epochs=object())
    with pytest.raises(TypeError, match="config must be"):
        make_config(42)


def test_train_refuses_wrong_arguments_before_training(tmp_path):
    with pytest.raises(TypeError, match="seeds"):
        cnnlab.train("mlp", seeds="3", out=tmp_path / "a")
    with pytest.raises(ValueError, match="give out"):
        cnnlab.train("mlp", resume=True)
    with pytest.raises(TypeError, match="not a callback"):
        cnnlab.train("mlp", callbacks=[object()], out=tmp_path / "c")
    assert not list(tmp_path.iterdir()), "nothing was written"


# --------------------------------------------------------------------------- the zoo and summaries


def test_models_lists_the_zoo_with_parameter_counts():
    listed = cnnlab.models()
    assert [entry["name"] for entry in listed] == [entry.name for entry in zoo.list_entries()]
    mlp = next(entry for entry in listed if entry["name"] == "mlp")
    assert mlp["dataset"] == "digits" and mlp["params"] == 167_178 and mlp["backbone"] is None
    for entry in listed:
        assert set(entry) == {"name", "dataset", "params", "backbone", "description", "source", "reported_accuracy"}
        assert (entry["params"] is None) == (entry["backbone"] is not None)


def test_summary_is_the_command_lines(capsys):
    for model, extra in (("mlp", []), ("keras/mnist/model1", ["--dataset", "cifar10"])):
        main(["summary", model, *extra])
        printed = capsys.readouterr().out.rstrip("\n")
        assert cnnlab.summary(model, dataset=extra[1] if extra else None) == printed
    assert "Param #" in cnnlab.summary({"dataset": "digits", "model": {"layers": ["Flatten", "Dense: 10"]}})


# --------------------------------------------------------------------------- Run, from hand-built folders


def png_bytes(colour) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 3), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def hand_built_run(folder: Path, name="digits <b>&</b> co", accuracy=0.75, seed=0) -> Path:
    metrics = {"cnnlab": {"kind": "run", "version": "0"}, "name": name, "dataset": "digits", "model": "mlp",
               "params": 1234, "epochs": 2, "epochs_planned": 2, "status": "complete", "test_accuracy": accuracy,
               "test_loss": 0.5, "train_time_s": 1.5, "seed": seed, "device": "cpu", "stop_reason": "completed 2 epochs"}
    runs.write_json_atomic(folder / runs.METRICS_FILE, metrics)
    row = {"train_loss": 1.0, "train_accuracy": 0.5, "val_loss": 0.9, "val_accuracy": 0.6, "lr": 0.01,
           "epoch_time_s": 0.1}
    runs.write_csv_atomic(folder / runs.HISTORY_FILE, [{**row, "epoch": 1}, {**row, "epoch": 2}], runs.HISTORY_COLUMNS)
    runs.write_text_atomic(folder / runs.CONFIG_FILE, "name: digits\ntrain: {epochs: 2}\n")
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]], dtype=np.float32)
    runs.write_npz_atomic(folder / runs.PREDICTIONS_FILE, probabilities=probabilities,
                          labels=np.array([0, 1, 1, 1]), class_names=np.array(["<zero>", "one"]))
    runs.write_bytes_atomic(folder / runs.FIGURES_DIR / "history.png", png_bytes("red"))
    return folder


def test_a_run_folder_reads_back_and_shows_itself_escaped(tmp_path):
    run = load_run(hand_built_run(tmp_path / "run"))
    assert run.metrics["test_accuracy"] == 0.75 and run.config["train"] == {"epochs": 2}
    assert [row["epoch"] for row in run.history] == [1, 2] and run.history[0]["val_accuracy"] == 0.6
    assert run.interpretation.accuracy == 0.75 and run.interpretation.class_names == ["<zero>", "one"]
    assert run.seeds == [] and not run.is_multi_seed
    assert "status complete" in repr(run) and "75.00%" in repr(run)
    shown = run._repr_html_()
    assert "digits &lt;b&gt;&amp;&lt;/b&gt; co" in shown and "<b>&</b>" not in shown
    (embedded,) = re.findall(r'src="data:image/png;base64,([^"]+)"', shown)
    assert base64.b64decode(embedded) == png_bytes("red")
    assert "Confusion matrix" in shown and "not drawn" in shown  # its figure is not drawn yet
    assert "75.00%" in shown and "1,234" in shown


def test_a_multi_seed_folder_is_its_aggregate_and_its_seeds(tmp_path):
    folder = tmp_path / "seeds"
    for seed, accuracy in ((0, 0.75), (1, 0.5)):
        hand_built_run(folder / f"seed-{seed}", accuracy=accuracy, seed=seed)
    aggregate = {"cnnlab": {"kind": "seeds", "version": "0"}, "name": "digits", "status": "complete",
                 "seeds": [0, 1], "n_seeds": 2, "runs": ["seed-0", "seed-1"], "test_accuracy": 0.625,
                 "statistics": {"test_accuracy": {"mean": 0.625, "std": 0.177, "min": 0.5, "max": 0.75,
                                                  "values": [0.75, 0.5]}}}
    runs.write_json_atomic(folder / runs.METRICS_FILE, aggregate)
    run = load_run(folder)
    assert run.is_multi_seed and [seed.metrics["test_accuracy"] for seed in run.seeds] == [0.75, 0.5]
    assert run.seeds[0].interpretation.accuracy == 0.75
    for what in ("model", "interpretation", "predictor"):
        with pytest.raises(CnnlabError, match=rf"run\.seeds\[0\]\.{'predict' if what == 'predictor' else what}"):
            getattr(run, what)
    assert "62.50% ± 17.70 (2 seeds)" in run._repr_html_() and "<td style=\"text-align:left\">0, 1</td>" in run._repr_html_()
    assert "2 seeds" in repr(run)


def test_load_run_refuses_a_folder_that_is_no_run(tmp_path):
    with pytest.raises(CnnlabError, match="not a cnnlab run directory"):
        load_run(tmp_path)


# --------------------------------------------------------------------------- a trained run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A digits CNN trained for two epochs through the API, with a callback."""
    rows = []
    watcher = type("Watcher", (cnnlab.Callback,), {"on_epoch_end": lambda self, row: rows.append(row)})()
    out = tmp_path_factory.mktemp("api") / "digits"
    return cnnlab.train(str(REPO / "examples" / "digits.yaml"), train__epochs=2, out=out, progress=False,
                        callbacks=[watcher]), rows


@pytest.mark.slow
def test_train_returns_the_run_it_wrote(trained):
    run, rows = trained
    assert isinstance(run, Run) and runs.is_complete(run.path)
    assert run.metrics == json.loads((run.path / runs.METRICS_FILE).read_text())
    assert run.metrics["epochs"] == 2 == len(run.history) == len(rows)
    assert run.interpretation.accuracy == pytest.approx(run.metrics["test_accuracy"])
    for row, written in zip(rows, run.history):
        assert row["epoch"] == written["epoch"]
        assert row["val_loss"] == pytest.approx(written["val_loss"], rel=1e-5)
    assert run.config == load_config(str(run.path / runs.CONFIG_FILE)).to_dict()


@pytest.mark.slow
def test_the_model_and_predict_give_the_runs_own_predictions(trained, tmp_path):
    run, _ = trained
    saved = runs.load_npz(run.path / runs.PREDICTIONS_FILE)["probabilities"]
    examples = runs.load_npz(run.path / runs.EXAMPLES_FILE)
    images, indices = examples["images"][:6], examples["indices"][:6]
    model = run.model
    assert not model.training and next(model.parameters()).device.type == "cpu"
    normalization = run.metrics["normalization"]
    mean = torch.tensor(normalization["mean"], dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(normalization["std"], dtype=torch.float32).view(1, -1, 1, 1)
    with torch.no_grad():
        logits = model((torch.from_numpy(images).float() * normalization["scale"] - mean) / std)
    # float32 here; the run evaluated in its own precision (bfloat16 on CPUs that have it)
    tolerance = 1e-4 if run.metrics["fast_path"]["precision"] == "fp32" else 2e-2
    np.testing.assert_allclose(torch.softmax(logits, 1).numpy(), saved[indices], atol=tolerance)
    assert (logits.argmax(1).numpy() == saved[indices].argmax(1)).all()
    Image.fromarray(images[0, 0]).save(tmp_path / "digit.png")
    predictions = run.predict([tmp_path / "digit.png", images[1, 0]])
    np.testing.assert_allclose(predictions.probabilities, saved[indices[:2]], atol=1e-4)
    assert predictions.sources[0].endswith("digit.png") and len(predictions.top_k(3)[0]) == 3
    assert run.predictor is run.predictor, "the network is loaded once"


@pytest.mark.slow
def test_report_and_the_notebook_view(trained):
    run, _ = trained
    html_path = Path(run.report())
    assert html_path == run.path / runs.REPORT_HTML_FILE and html_path.is_file()
    shown = run._repr_html_()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', shown)
    figures = [(run.path / runs.FIGURES_DIR / name).read_bytes() for name in ("history.png", "confusion.png")]
    assert [base64.b64decode(image) for image in images] == figures
    assert f"{100 * run.metrics['test_accuracy']:.2f}%" in shown
    assert cnnlab.summary(run) == (run.path / runs.SUMMARY_FILE).read_text().rstrip("\n")


@pytest.mark.slow
def test_several_seeds_through_the_api(tmp_path):
    class Rows(cnnlab.Callback):
        def __init__(self):
            self.epochs, self.ends = [], 0

        def on_epoch_end(self, row):
            self.epochs.append(row["epoch"])

        def on_run_end(self, result):
            self.ends += 1

    rows = Rows()
    run = cnnlab.train("mlp", seeds=2, train__epochs=1, out=tmp_path / "seeds", progress=False, callbacks=[rows])
    assert rows.epochs == [1, 1] and rows.ends == 2, "each seed's run calls the callbacks in turn"
    assert run.is_multi_seed and [seed.metrics["seed"] for seed in run.seeds] == [0, 1]
    assert run.metrics["n_seeds"] == 2 and len(run.seeds[1].predict(np.zeros((8, 8), np.uint8))) == 1
    assert "± " in run._repr_html_()


# --------------------------------------------------------------------------- docs/api.md


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", markdown, flags=re.S | re.M)


def test_the_docs_python_blocks_are_found():
    blocks = python_blocks((REPO / "docs" / "api.md").read_text(encoding="utf-8"))
    assert len(blocks) >= 6 and all("cnnlab" in block or "predict" in block for block in blocks)


@pytest.mark.slow
def test_every_example_of_the_api_docs_runs(tmp_path, datasets_dir, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CNNLAB_DATA", str(datasets_dir))
    namespace: dict = {}
    for number, block in enumerate(python_blocks((REPO / "docs" / "api.md").read_text(encoding="utf-8")), 1):
        exec(compile(block, f"docs/api.md python block {number}", "exec"), namespace)  # noqa: S102
    printed = capsys.readouterr().out
    assert "Run('runs/digits'" in printed and "training ended: complete" in printed
    assert (tmp_path / "runs" / "digits" / runs.REPORT_HTML_FILE).is_file()
    assert (tmp_path / "my-digit.png").is_file() and math.isfinite(namespace["run"].metrics["test_loss"])
    assert os.path.isdir(tmp_path / "runs" / "mlp")
