"""The fast path gives the results of a straightforward implementation: same seed, same data order,
same losses (float32 on CPU), identical augmentation; its automatic choices are the documented ones."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from cnnlab.augment.augmenter import build_augmenter
from cnnlab.augment.settings import parse_augment
from cnnlab.training.weight_average import WeightAverage
from cnnlab.data.device_images import DeviceImages
from cnnlab.data.normalization import fit_normalization
from cnnlab.config import load_config
from cnnlab.data import DatasetConfig, load_dataset
from cnnlab.errors import ConfigError
from cnnlab.training import precision
from cnnlab.training.precision import ComputePlan, choose_compute_plan
from cnnlab.models import create_model
from cnnlab.models.whitening import PatchWhitening, initialize_from_data, needs_data_initialization
from cnnlab.training.optimizers import make_optimizer
from cnnlab.training.loop import _steps_per_epoch, fit

LAYERS = ["Conv2D: 8, 3, 1, same", "BatchNorm", "MaxPooling: 2", "Flatten", "Dense: 32", "Dense: classes"]
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits():
    dataset = load_dataset(DatasetConfig(name="digits"))
    normalization = fit_normalization("scale", dataset.train_images)
    return DeviceImages(dataset.train_images, dataset.train_labels, normalization, CPU)


def reference_epoch_losses(model: nn.Module, data: DeviceImages, indices: torch.Tensor, epochs: int,
                           batch_size: int, seed: int) -> list[float]:
    """The textbook loop: shuffle with the same generator, slice, normalise, Adam (unfused), mean loss."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=False)
    generator = torch.Generator().manual_seed(seed)
    images = data.images.float() * data.multiplier + data.offset
    losses = []
    for _ in range(epochs):
        order = indices[torch.randperm(len(indices), generator=generator)]
        total, seen = 0.0, 0
        for step in range(_steps_per_epoch(len(indices), batch_size)):
            batch = order[step * batch_size:(step + 1) * batch_size]
            loss = nn.functional.cross_entropy(model(images[batch]), data.labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
            seen += len(batch)
        losses.append(total / seen)
    return losses


def test_training_loop_matches_a_plain_reference_loop(digits):
    config = load_config("examples/digits.yaml", ["train.epochs=3", "train.batch_size=50", "train.precision=fp32",
                                                  "train.channels_last=false", "train.seed=3",
                                                  "schedule.name=constant"])
    torch.manual_seed(0)
    model = create_model({"layers": LAYERS}, (1, 8, 8), 10).module
    reference_model = copy.deepcopy(model)
    indices = torch.arange(1200)
    result = fit(model, digits, indices, torch.arange(0), config, show_progress=False,
                 plan=ComputePlan(CPU, "fp32", channels_last=False))
    expected = reference_epoch_losses(reference_model, digits, indices, 3, 50, seed=3)
    # float32 rounding (summation order inside kernels) differs between torch releases; a wrong data order,
    # learning rate or normalisation moves these losses by far more than 0.1%
    np.testing.assert_allclose([row["train_loss"] for row in result.history], expected, rtol=1e-3)
    for trained, reference in zip(model.parameters(), reference_model.parameters()):
        # Adam's sign-like steps turn rounding differences into up to ~2e-3 after 72 steps (1.9e-3 seen with
        # torch 2.14.1); a learning rate 30% too high moved them by 0.024
        torch.testing.assert_close(trained, reference, rtol=0, atol=5e-3)


@pytest.mark.slow
def test_bf16_channels_last_training_follows_float32(digits):
    """Mixed precision changes rounding, not the result: the same run in bf16 + channels-last learns as well."""
    config = load_config("examples/digits.yaml", ["train.epochs=12", "train.batch_size=50", "optimizer.lr=0.003"])
    indices, test = torch.arange(1400), torch.arange(1400, len(digits))
    accuracies = {}
    for fast in (ComputePlan(CPU, "fp32"), ComputePlan(CPU, "bf16", channels_last=True)):
        torch.manual_seed(0)
        model = fast.prepare(create_model({"layers": LAYERS}, (1, 8, 8), 10).module)
        fit(model, digits, indices, torch.arange(0), config, show_progress=False, plan=fast)
        model.eval()
        with torch.no_grad(), fast.autocast():
            images, labels = digits.batch(test)
            accuracies[fast.precision] = (model(images).argmax(1) == labels).float().mean().item()
    assert accuracies["fp32"] > 0.85
    assert abs(accuracies["bf16"] - accuracies["fp32"]) < 0.03


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_fused_optimiser_takes_the_unfused_step(name):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    twin = copy.deepcopy(model)
    settings = load_config("examples/digits.yaml", [f"optimizer.name={name}", "optimizer.momentum=0.9",
                                                    "optimizer.weight_decay=0.01"]).optimizer
    fused = make_optimizer(model, settings)
    assert fused.defaults.get("fused") is True
    kind = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[name]
    extra = {"momentum": 0.9} if name == "sgd" else {}
    plain = kind(twin.parameters(), lr=settings.lr, weight_decay=0.01, foreach=False, **extra)
    inputs, targets = torch.randn(16, 6), torch.randint(0, 3, (16,))
    for optimizer, network in ((fused, model), (plain, twin)):
        for _ in range(3):
            optimizer.zero_grad()
            nn.functional.cross_entropy(network(inputs), targets).backward()
            optimizer.step()
    for left, right in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(left, right, rtol=1e-5, atol=1e-6)


def test_same_seed_gives_identical_augmentation():
    config = parse_augment({"horizontal_flip": True, "width_shift_range": 0.1, "rotation_range": 10,
                            "random_crop": {"padding": 2}, "cutout": {"size": 3}})
    images = torch.rand(64, 3, 16, 16)
    first = build_augmenter(config, (3, 16, 16), "cpu", seed=5)(images)
    second = build_augmenter(config, (3, 16, 16), "cpu", seed=5)(images)
    other = build_augmenter(config, (3, 16, 16), "cpu", seed=6)(images)
    assert torch.equal(first, second)
    assert not torch.equal(first, other)


def test_alternating_flips_show_each_image_both_ways_in_two_epochs():
    augmenter = build_augmenter(parse_augment({"alternating_flip": True}), (1, 4, 4), "cpu", seed=0)
    images = torch.rand(1000, 1, 4, 4)
    positions = torch.randperm(1000)
    first = augmenter(images, indices=positions, epoch=1)
    second = augmenter(images, indices=positions, epoch=2)
    third = augmenter(images, indices=positions, epoch=3)
    flipped = [(batch == images.flip(3)).flatten(1).all(1) for batch in (first, second, third)]
    assert torch.equal(flipped[0], ~flipped[1]) and torch.equal(flipped[0], flipped[2])
    assert 0.45 < flipped[0].float().mean() < 0.55  # half the images, chosen per image


def test_weight_average_is_the_exponential_moving_average():
    model = nn.Linear(3, 2)
    average = WeightAverage(model, decay=0.9, every=1)
    expected = [p.detach().clone() for p in model.parameters()]
    for step in range(1, 200):
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter))
        average.update()
        decay = min(0.9, (1 + step) / (10 + step))  # warms up, then stays at the set decay
        expected = [decay * old + (1 - decay) * new.detach() for old, new in zip(expected, model.parameters())]
    average.copy_to_model()
    for parameter, wanted in zip(model.parameters(), expected):
        torch.testing.assert_close(parameter.detach(), wanted)


def test_patch_whitening_decorrelates_patches():
    torch.manual_seed(0)
    mixing = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.5, 0.5, 0.7]])
    images = torch.einsum("dc,nchw->ndhw", mixing, torch.randn(300, 3, 12, 12)).cumsum(dim=3)  # correlated
    model = create_model({"layers": ["Whiten: 2", "GELU", "Flatten", "Dense: classes"]}, (3, 12, 12), 10).module
    assert needs_data_initialization(model)
    initialize_from_data(model, images)
    assert not needs_data_initialization(model)
    layer = next(m for m in model.modules() if isinstance(m, PatchWhitening))
    assert not layer.weight.requires_grad and layer.bias.requires_grad
    outputs = nn.functional.conv2d(images, layer.weight[:12]).permute(0, 2, 3, 1).reshape(-1, 12)
    covariance = torch.cov(outputs.T)
    torch.testing.assert_close(covariance, torch.eye(12), atol=0.05, rtol=0)


def test_automatic_choices():
    settings = load_config("examples/digits.yaml").train
    mlp = create_model({"layers": ["Flatten", "Dense: 16", "Dense: classes"]}, (1, 8, 8), 10).module
    one_conv = create_model({"layers": ["Conv2D: 4, 3", "Flatten", "Dense: classes"]}, (1, 8, 8), 10).module
    deep = create_model({"layers": ["Conv2D: 4, 3", "Conv2D: 4, 3", "Flatten", "Dense: classes"]}, (1, 8, 8), 10).module
    assert choose_compute_plan(settings, CPU, (1, 8, 8), mlp) == ComputePlan(CPU, "fp32", False, False)
    assert choose_compute_plan(settings, CPU, (1, 8, 8), one_conv).channels_last is False
    assert choose_compute_plan(settings, CPU, (1, 8, 8), deep).channels_last is True
    forced = load_config("examples/digits.yaml", ["train.precision=fp32", "train.channels_last=false"]).train
    assert choose_compute_plan(forced, CPU, (1, 8, 8), deep) == ComputePlan(CPU, "fp32", False, False)
    with pytest.raises(ConfigError, match="fp16"):
        choose_compute_plan(load_config("examples/digits.yaml", ["train.precision=fp16"]).train, CPU, (1, 8, 8), deep)


def test_cpu_bf16_runs_depthwise_convolutions_in_float32_only_when_training():
    torch.manual_seed(0)
    depthwise = nn.Conv2d(6, 6, 3, stride=2, groups=6)
    pointwise = nn.Conv2d(6, 4, 1)
    images = torch.randn(2, 6, 9, 9)
    fast = ComputePlan(CPU, "bf16", True, False)
    with fast.autocast():
        assert depthwise(images).dtype == torch.float32  # gradients needed: float32
        assert pointwise(images).dtype == torch.bfloat16  # other convolutions keep bfloat16
        with torch.no_grad():
            assert depthwise(images).dtype == torch.bfloat16  # inference keeps bfloat16
    with ComputePlan(CPU, "bf16", True, True).autocast():  # compiled: plain autocast
        assert depthwise(images).dtype == torch.bfloat16
    # the gradients are float32's
    with fast.autocast():
        depthwise(images).square().sum().backward()
    fast_grad = depthwise.weight.grad.clone()
    depthwise.weight.grad = None
    depthwise(images).square().sum().backward()
    torch.testing.assert_close(fast_grad, depthwise.weight.grad)


@pytest.fixture
def convolutional_models():
    """A convolutional model and two that are not (no convolution; one convolution on grey images)."""
    deep = create_model({"layers": ["Conv2D: 4, 3", "Conv2D: 4, 3", "Flatten", "Dense: classes"]}, (1, 8, 8), 10)
    mlp = create_model({"layers": ["Flatten", "Dense: 16", "Dense: classes"]}, (1, 8, 8), 10)
    one_conv = create_model({"layers": ["Conv2D: 4, 3", "Flatten", "Dense: classes"]}, (1, 8, 8), 10)
    return deep.module, mlp.module, one_conv.module


def fake_cpu(monkeypatch, flags: set[str], onednn: bool = True) -> None:
    monkeypatch.setattr(precision, "read_cpu_flags", lambda: frozenset(flags | {"fpu", "sse2", "avx2", "avx512f"}))
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: onednn)


@pytest.mark.parametrize("flags, expected, named", [
    ({"amx_bf16", "amx_tile", "avx512_bf16"}, "bf16", "amx_bf16"),  # Intel Sapphire Rapids and later
    ({"avx512_bf16"}, "bf16", "avx512_bf16"),  # AMD Zen 4, Intel Cooper Lake
    (set(), "fp32", "no bfloat16"),  # Zen 3, Skylake-X, Ice Lake
])
def test_cpu_precision_follows_the_bf16_instructions(monkeypatch, convolutional_models, flags, expected, named):
    fake_cpu(monkeypatch, flags)
    settings = load_config("examples/digits.yaml").train
    plan = choose_compute_plan(settings, CPU, (1, 8, 8), convolutional_models[0])
    assert plan.precision == expected
    assert named in plan.reason and plan.to_dict()["reason"] == plan.reason
    assert plan.channels_last  # the layout does not depend on the precision


def test_cpu_bf16_needs_onednn(monkeypatch, convolutional_models):
    fake_cpu(monkeypatch, {"amx_bf16", "avx512_bf16"}, onednn=False)
    plan = choose_compute_plan(load_config("examples/digits.yaml").train, CPU, (1, 8, 8), convolutional_models[0])
    assert plan.precision == "fp32" and "oneDNN" in plan.reason


def test_models_that_are_not_convolutional_stay_in_float32(monkeypatch, convolutional_models):
    fake_cpu(monkeypatch, {"amx_bf16", "avx512_bf16"})
    settings = load_config("examples/digits.yaml").train
    for model in convolutional_models[1:]:
        plan = choose_compute_plan(settings, CPU, (1, 8, 8), model)
        assert plan.precision == "fp32" and "not a convolutional model" in plan.reason
    # one convolution on colour images is convolutional
    colour = create_model({"layers": ["Conv2D: 4, 3", "Flatten", "Dense: classes"]}, (3, 8, 8), 10).module
    assert choose_compute_plan(settings, CPU, (3, 8, 8), colour).precision == "bf16"


def test_explicit_precision_wins_over_the_cpu(monkeypatch, convolutional_models):
    settings = load_config("examples/digits.yaml").train
    fake_cpu(monkeypatch, set())
    forced = settings.model_copy(update={"precision": "bf16"})
    plan = choose_compute_plan(forced, CPU, (1, 8, 8), convolutional_models[1])
    assert plan.precision == "bf16" and plan.reason == "train.precision=bf16 in the config"
    fake_cpu(monkeypatch, {"amx_bf16"})
    forced = settings.model_copy(update={"precision": "fp32"})
    assert choose_compute_plan(forced, CPU, (1, 8, 8), convolutional_models[0]).precision == "fp32"


@pytest.mark.parametrize("bf16_supported, expected", [(True, "bf16"), (False, "fp16")])
def test_gpu_precision_ignores_the_cpu(monkeypatch, convolutional_models, bf16_supported, expected):
    fake_cpu(monkeypatch, set())
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16_supported)
    settings = load_config("examples/digits.yaml").train
    for model in convolutional_models:  # any model, convolutional or not
        plan = choose_compute_plan(settings, torch.device("cuda"), (1, 8, 8), model)
        assert plan.precision == expected and "cuda" in plan.reason


def test_cpu_flags_are_read_from_x86_and_arm_cpuinfo(tmp_path):
    x86, arm = tmp_path / "x86", tmp_path / "arm"
    x86.write_text("processor\t: 0\nmodel name\t: AMD EPYC 9654\nflags\t\t: fpu avx512f avx512_bf16\n\n"
                   "processor\t: 1\nflags\t\t: fpu avx512f avx512_bf16\n")
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd sve bf16\nCPU implementer\t: 0x41\n")
    assert precision.read_cpu_flags(x86) == {"fpu", "avx512f", "avx512_bf16"}
    assert precision.read_cpu_flags(arm) == {"fp", "asimd", "sve", "bf16"}
    assert precision.read_cpu_flags(tmp_path / "missing") == frozenset()


def test_a_plan_compares_without_its_reason():
    assert ComputePlan(CPU, "bf16", True, False, "one reason") == ComputePlan(CPU, "bf16", True, False, "another")
    assert set(ComputePlan(CPU).to_dict()) == {"precision", "channels_last", "compile", "reason"}


def test_the_depthwise_mode_is_left_out_for_models_without_depthwise_convolutions(monkeypatch):
    fake_cpu(monkeypatch, {"amx_bf16"})
    settings = load_config("examples/digits.yaml").train
    plain = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Conv2d(6, 6, 3, groups=2), nn.Flatten())
    depthwise = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Conv2d(6, 6, 3, groups=6), nn.Flatten())
    plain_plan = choose_compute_plan(settings, CPU, (3, 9, 9), plain)
    depthwise_plan = choose_compute_plan(settings, CPU, (3, 9, 9), depthwise)
    assert plain_plan.precision == depthwise_plan.precision == "bf16"
    assert not plain_plan.depthwise_in_float32 and depthwise_plan.depthwise_in_float32
    images = torch.randn(2, 3, 9, 9)
    with depthwise_plan.autocast():
        assert depthwise(images).dtype == torch.float32  # the last convolution is depthwise: float32
    with plain_plan.autocast():
        assert plain(images).dtype == torch.bfloat16


def test_a_depthwise_kernel_outside_a_convolution_module_keeps_the_mode():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.kernel = nn.Parameter(torch.randn(4, 1, 3, 3))

        def forward(self, images):
            return nn.functional.conv2d(images, self.kernel, groups=4)

    assert precision.may_run_depthwise_convolutions(Functional())
    assert not precision.may_run_depthwise_convolutions(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 8, 3)))
