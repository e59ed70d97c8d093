"""cnnlab.models: layer parser, shape inference, Keras-style parameter counts, summary, zoo."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cnnlab.errors import ConfigError, ShapeError
from cnnlab.models import (
    SOFTMAX_NOTE, build_model, count_parameters, create_model, format_summary, parse_layers,
)
from cnnlab.models import zoo
from cnnlab.models.whitening import fitting_sample

CIFAR_CNN = ["Conv2D: 32, 3", "Conv2D: 32, 3", "MaxPooling: 2", "Conv2D: 64, 3", "Conv2D: 64, 3", "MaxPooling: 2",
             "Flatten", "Dense: 512, relu", "Dense: 10"]
BN_CNN = ["Conv2D: 32, 3", "BatchNorm", "Conv2D: 32, 3", "BatchNorm", "MaxPooling: 2", "Dropout",
          "Conv2D: 64, 3", "BatchNorm", "Conv2D: 64, 3", "BatchNorm", "MaxPooling: 2", "Dropout",
          "Flatten", "Dense: 10"]
DENSE = ["Flatten", "Dense: 2048", "Dense: 1024", "Dense: 512", "Dense: 256", "Dense: 10"]
SEED_NAMES = [
    *(f"keras/mnist/model{number}" for number in range(1, 6)),
    *(f"torch/mnist/model{number}" for number in range(1, 5)),
    *(f"keras/cifar10/model{number}" for number in (1, 5, 6, 7, 8, 9, 10)),
    "keras/cifar10/resnet50", "keras/cifar10/resnet50-da",
    "torch/cifar10/model1", "torch/cifar10/model4", "torch/cifar10/model5", "torch/cifar10/praisnet",
    "torch/cifar10/praisynet", "torch/cifar10/resnet50", "torch/cifar10/resnet50-da",
    "cifar10/dense", "cifar10/cnn", "cifar10/cnn-dropout", "cifar10/cnn-batchnorm", "cifar10/vgg16-features",
    "cifar10/bn-cnn", "cifar10/bn-cnn-zscore", "cifar10/bn-cnn-augment", "cifar10/bn-cnn-l2",
    "cifar10/vgg16-block3", "report004/baseline", "report004/squeezenet", "mlp",
]


# --------------------------------------------------------------------------- parser

def test_parse_reports_notation():
    conv, pool, dense = parse_layers(
        ["Conv2D: 32, 3, 1, 'valid'.", "MaxPooling: 2, 1, 'valid'", "Dense: 10, 'softmax'"])
    assert (conv.kind, conv.type_name, conv.style) == ("conv", "Conv2D", "keras")
    assert conv.options == {"filters": 32, "kernel": 3, "stride": 1, "padding": 0, "activation": "relu"}
    assert pool.options == {"pool": 2, "stride": 1, "padding": 0}
    assert dense.options == {"units": 10, "activation": "softmax"}


def test_parse_defaults_and_aliases():
    specs = parse_layers(["conv2d: 16, 5", "MaxPool: 3", "BN", "Dropout", "maxpooling2d: 2, 2, same",
                          "GlobalAvgPool", "Dense: 64", "Activation: linear", "Dense: classes"])
    assert specs[0].options == {"filters": 16, "kernel": 5, "stride": 1, "padding": 0, "activation": "relu"}
    assert specs[1].options["stride"] == 3  # pool stride defaults to the pool size
    assert specs[2].kind == "batch_norm"
    assert specs[3].options == {"rate": 0.5}
    assert specs[4].options["padding"] == "same"
    assert specs[6].options["activation"] == "relu"  # Keras Dense, not the last one
    assert specs[7].options == {"activation": "none"}
    assert specs[8].options == {"units": "classes", "activation": "none"}  # the last Dense outputs logits


def test_torch_names_default_to_no_activation():
    conv, relu, pool, _, linear, last = parse_layers(
        ["Conv2d: 64, 3, 1, 0", "ReLU", "MaxPool2d: 2, 1, 0", "Flatten", "Linear: 128", "Linear: 10"])
    assert conv.style == "torch" and conv.options["activation"] == "none"
    assert linear.options["activation"] == "none" and last.options["activation"] == "none"
    assert relu.kind == "activation" and relu.options == {"activation": "relu"}
    assert pool.type_name == "MaxPool2d"


def test_parse_mappings():
    conv, dense = parse_layers([
        {"type": "Conv2D", "filters": 32, "kernel": 3, "stride": 1, "padding": "valid", "activation": "relu"},
        {"type": "Dense", "units": 10, "activation": "softmax"},
    ])
    assert conv.options == {"filters": 32, "kernel": 3, "stride": 1, "padding": 0, "activation": "relu"}
    assert dense.options == {"units": 10, "activation": "softmax"}
    (pool,) = parse_layers([{"type": "MaxPooling2D", "pool_size": [2, 2], "strides": 1}])
    assert pool.options == {"pool": 2, "stride": 1, "padding": 0}


def test_unknown_type_names_position_text_and_suggestion():
    with pytest.raises(ConfigError) as caught:
        parse_layers(["Flatten", "Dnese: 10"])
    message = str(caught.value)
    assert 'Layer 2 "Dnese: 10"' in message and 'Did you mean "Dense"?' in message


@pytest.mark.parametrize("spec, expected", [
    ("Conv2D: 32", "needs kernel"),
    ("Conv2D: 32, 3, 1, valid, relu, 9", "at most 5"),
    ("Conv2D: 32, 3, 1, vaild", "padding must be"),
    ("Conv2D: 32, 3, activation=rleu", 'Did you mean "relu"?'),
    ("Conv2D: 0, 3", "at least 1"),
    ("Dropout: 1.5", "dropout rate"),
    ("Dense: ten", "units must be"),
    ("Flatten: 3", "takes no arguments"),
    ("ReLU: 3", "takes no arguments"),
    ({"type": "Conv2D", "filtres": 32, "kernel": 3}, 'Did you mean "filters"?'),
    ({"filters": 32}, 'no "type" key'),
])
def test_bad_arguments_are_config_errors(spec, expected):
    with pytest.raises(ConfigError) as caught:
        parse_layers([spec, "Flatten", "Dense: 10"])
    assert expected in str(caught.value)
    assert "ayer 1" in str(caught.value)


# --------------------------------------------------------------------------- softmax

@pytest.mark.parametrize("layers", [
    ["Flatten", "Dense: 10, softmax"],
    ["Flatten", "Linear: 10", "Softmax"],
    ["Flatten", "Dense: 10", "Activation: softmax"],
])
def test_final_softmax_is_folded_into_the_loss(layers):
    built = build_model(layers, (1, 8, 8), 10)
    assert SOFTMAX_NOTE in built.notes
    assert not any(isinstance(child, nn.Softmax) for child in built.module.modules())
    assert [row.type for row in built.rows] == ["Flatten", built.rows[1].type]  # no row for the folded softmax
    logits = built.module(torch.randn(3, 1, 8, 8))
    assert not torch.allclose(logits.sum(dim=1), torch.ones(3))


@pytest.mark.parametrize("layers", [
    ["Flatten", "Dense: 64", "Softmax", "Dense: 10"],
    ["Flatten", "Dense: 64, softmax", "Dense: 10"],
    ["Flatten", "Dense: 10, softmax", "Softmax"],
])
def test_softmax_inside_the_network_is_rejected(layers):
    with pytest.raises(ConfigError) as caught:
        build_model(layers, (1, 8, 8), 10)
    assert "never predicted some classes" in str(caught.value)


# --------------------------------------------------------------------------- shapes

def _layer_outputs(built, images):
    """Run the module child by child and collect each summary row's real output shape."""
    outputs, children = {}, dict(built.module.named_children())
    for row in built.rows:
        for name in row.module_names:
            images = children[name](images)
        outputs[row.name] = tuple(images.shape[1:])
    return outputs


def test_shape_inference_matches_a_forward_pass():
    layers = ["Conv2D: 8, 4, 2, same", "BatchNorm", "MaxPooling: 3, 2, same", "Conv2d: 6, 3, 1, 1", "ReLU",
              "AvgPool: 3, 1, same", "Conv2D: 5, 2, 1, same", "GlobalAvgPool", "Dense: 7", "BatchNorm",
              "Dense: classes"]
    built = build_model(layers, (3, 13, 11), 4)
    expected = [(8, 7, 6), (8, 7, 6), (8, 4, 3), (6, 4, 3), (6, 4, 3), (6, 4, 3), (5, 4, 3), (5,), (7,), (7,), (4,)]
    assert [row.output_shape for row in built.rows] == expected
    built.module.eval()
    real = _layer_outputs(built, torch.randn(2, 3, 13, 11))
    assert [real[row.name] for row in built.rows] == expected
    assert [row.type for row in built.rows][1::8] == ["BatchNormalization", "BatchNormalization"]
    assert isinstance(built.module.batch_norm_2, nn.BatchNorm1d)


def test_batch_norm_constants_reach_the_module():
    built = build_model(["Conv2D: 4, 3", "BatchNorm: momentum=0.01, eps=0.001", "Flatten", "Dense: 8",
                         "BatchNorm", "Dense: classes"], (3, 8, 8), 2)
    keras_norm, torch_norm = built.module.batch_norm_1, built.module.batch_norm_2
    assert (keras_norm.momentum, keras_norm.eps) == (0.01, 0.001)
    assert (torch_norm.momentum, torch_norm.eps) == (0.1, 1e-5)
    built.module.train()
    images = torch.randn(16, 3, 8, 8) + 5
    built.module(images)
    batch_mean = built.module.conv2d_1_relu(built.module.conv2d_1(images)).mean(dim=(0, 2, 3))
    torch.testing.assert_close(keras_norm.running_mean, 0.01 * batch_mean.detach(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("text", ["BatchNorm: momentum=0.99x", "BatchNorm: momentum=1.5", "BatchNorm: epsilon=0",
                                  "BatchNorm: scale=2"])
def test_batch_norm_constants_are_checked(text):
    with pytest.raises(ConfigError, match='Layer 1 "BatchNorm'):
        build_model([text, "Flatten", "Dense: classes"], (3, 8, 8), 2)


def test_conv_kernel_larger_than_input_names_the_layer():
    with pytest.raises(ShapeError) as caught:
        build_model(["Conv2D: 32, 3", "MaxPooling: 2", "Conv2D: 64, 5", "Flatten", "Dense: 10"], (1, 8, 8), 10)
    message = str(caught.value)
    for part in ('Layer 3 "Conv2D: 64, 5"', "(None, 32, 3, 3)", "kernel 5", "3x3 input"):
        assert part in message


def test_dense_on_an_image_shape_suggests_flatten():
    with pytest.raises(ShapeError) as caught:
        build_model(["Conv2D: 4, 3", "Dense: 10"], (1, 8, 8), 10)
    assert 'Layer 2 "Dense: 10"' in str(caught.value) and '"Flatten"' in str(caught.value)


def test_image_layer_after_flatten_is_a_shape_error():
    with pytest.raises(ShapeError, match="Layer 2"):
        build_model(["Flatten", "Conv2D: 4, 3", "Dense: 10"], (1, 8, 8), 10)


def test_last_layer_size_must_match_the_classes():
    with pytest.raises(ConfigError) as caught:
        build_model(["Flatten", "Dense: 12"], (1, 8, 8), 10)
    assert "has 12 units but the dataset has 10 classes" in str(caught.value)
    with pytest.raises(ConfigError, match="image-shaped output"):
        build_model(["Conv2D: 10, 3"], (1, 8, 8), 10)


# --------------------------------------------------------------------------- parameter counts and summary

@pytest.mark.parametrize("layers, total, non_trainable", [
    (CIFAR_CNN, 890_410, 0),
    (BN_CNN, 82_346, 384),
    (DENSE, 9_050_378, 0),
])
def test_parameter_counts_match_the_reports(layers, total, non_trainable):
    trainable, frozen = count_parameters(build_model(layers, (3, 32, 32), 10).module)
    assert (trainable + frozen, frozen) == (total, non_trainable)


def test_frozen_parameters_count_as_non_trainable():
    built = build_model(["Flatten", "Dense: 4", "Dense: 2"], (1, 2, 2), 2)
    built.module.dense_1.weight.requires_grad_(False)
    assert count_parameters(built.module) == (4 + 10, 16)


def test_format_summary_reads_like_keras():
    text = format_summary(build_model(BN_CNN, (3, 32, 32), 10, name="cifar10/bn-cnn"))
    for part in ('Model: "cifar10/bn-cnn"', "Layer (type)", "Output Shape", "Param #",
                 "conv2d_1 (Conv2D)", "(None, 32, 30, 30)", "896", "dense_1 (Dense)", "16,010",
                 "Total params: 82,346", "Trainable params: 81,962", "Non-trainable params: 384"):
        assert part in text
    with_note = format_summary(build_model(["Flatten", "Dense: 10, softmax"], (1, 8, 8), 10))
    assert with_note.rstrip().endswith(SOFTMAX_NOTE)


# --------------------------------------------------------------------------- zoo

# entries with a pretrained backbone need weights files: tests/test_pretrained.py covers them
WITHOUT_BACKBONE = [entry.name for entry in zoo.list_entries() if entry.backbone is None]


@pytest.mark.parametrize("name", WITHOUT_BACKBONE)
def test_every_zoo_model_trains_one_step(name):
    torch.manual_seed(0)
    entry = zoo.get_entry(name)
    built = create_model(name, entry.input_shape, 10)
    logits = built.module(torch.rand(2, *entry.input_shape))
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()
    nn.functional.cross_entropy(logits, torch.tensor([0, 1])).backward()
    for parameter_name, parameter in built.module.named_parameters():
        if not parameter.requires_grad:  # frozen by design (a patch-whitening layer's filters)
            continue
        assert parameter.grad is not None, f"{name}: {parameter_name} gets no gradient"
        assert torch.isfinite(parameter.grad).all(), f"{name}: {parameter_name} has a NaN gradient"


def test_the_reports_models_are_all_registered():
    names = {entry.name for entry in zoo.list_entries()}
    assert set(SEED_NAMES) <= names
    assert any(name.startswith("report004/") and name != "report004/baseline" for name in names)


@pytest.mark.parametrize("name, total", [("cifar10/cnn", 890_410), ("cifar10/bn-cnn", 82_346),
                                         ("cifar10/dense", 9_050_378)])
def test_zoo_entries_have_the_reports_parameter_counts(name, total):
    assert sum(count_parameters(create_model(name, (3, 32, 32), 10).module)) == total


def test_zoo_entries_are_well_formed():
    for entry in zoo.list_entries():
        assert entry.description and entry.source and entry.layers
        assert set(entry.recipe) <= {"dataset", "train", "optimizer", "schedule", "augment"}
        assert entry.recipe["train"]["epochs"] >= 1
    assert zoo.get_entry("keras/cifar10/model10").recipe["train"]["epochs"] == 100
    assert zoo.get_entry("cifar10/bn-cnn-l2").recipe["schedule"] == {
        "name": "piecewise", "boundaries": [51, 76], "values": [0.001, 0.0005, 0.0003]}


def test_zoo_recipes_are_valid_experiment_configs():
    import cnnlab.config as config
    for entry in zoo.list_entries():
        validated = config.validate_config(config.zoo_recipe(entry.name), entry.name)
        assert validated.model.name == entry.name


def test_unknown_zoo_name_suggests_the_closest():
    with pytest.raises(ConfigError) as caught:
        zoo.get_entry("keras/cifar10/model77")
    assert "Did you mean" in str(caught.value) and "cnnlab models" in str(caught.value)


def test_pretrained_zoo_entry_without_weights_names_the_file(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("CNNLAB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="resnet50-0676ba61.pth"):
        create_model("torch/cifar10/resnet50", (3, 32, 32), 10)


def test_create_model_accepts_names_and_layer_lists():
    assert create_model({"name": "mlp"}, (1, 8, 8), 10).name == "mlp"
    assert create_model({"layers": ["Flatten", "Dense: classes"]}, (1, 8, 8), 3).rows[-1].output_shape == (3,)
    with pytest.raises(ConfigError, match="not both"):
        create_model({"name": "mlp", "layers": ["Flatten"]}, (1, 8, 8), 10)


def test_keras_names_take_keras_initialisation_and_torch_names_pytorchs():
    torch.manual_seed(0)
    keras = create_model({"layers": ["Conv2D: 16, 3", "Flatten", "Dense: classes"]}, (3, 8, 8), 10).module
    torch_style = create_model({"layers": ["Conv2d: 16, 3", "Flatten", "Linear: classes"]}, (3, 8, 8), 10).module
    for layer in (m for m in keras.modules() if isinstance(m, (nn.Conv2d, nn.Linear))):
        fan_in = layer.weight[0].numel()
        fan_out = layer.weight.shape[0] * (layer.weight[0, 0].numel() if layer.weight.dim() == 4 else 1)
        glorot_limit = (6 / (fan_in + fan_out)) ** 0.5
        assert layer.weight.abs().max() <= glorot_limit
        assert layer.weight.abs().max() > 0.9 * glorot_limit  # uniform over the whole Glorot range
        assert torch.count_nonzero(layer.bias) == 0
    for layer in (m for m in torch_style.modules() if isinstance(m, (nn.Conv2d, nn.Linear))):
        assert torch.count_nonzero(layer.bias) > 0  # PyTorch's default: uniform biases


def test_whitening_is_fitted_on_a_random_sample_of_every_part_of_the_training_set():
    sorted_by_class = np.repeat(np.arange(10), 5000)  # labels of a dataset stored class by class
    train_indices = np.arange(50_000)
    sample = fitting_sample(train_indices)
    assert len(sample) == 5000 and len(set(sample.tolist())) == 5000 and np.all(np.diff(sample) > 0)
    counts = np.bincount(sorted_by_class[sample], minlength=10)
    assert counts.min() > 400, f"every class is in the sample, not the first 5,000 images only: {counts}"
    assert np.array_equal(sample, fitting_sample(train_indices)), "the same images for every run and process"
    assert np.array_equal(fitting_sample(np.arange(300)), np.arange(300))
