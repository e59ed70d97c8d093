"""Looking inside a trained network: kernels, feature maps, Grad-CAM and the report section."""

import shutil

import numpy as np
import pytest
import torch
from torch import nn

from cnnlab import runs
from cnnlab.config import load_config
from cnnlab.experiment import run_experiment
from cnnlab.analysis.interpretability import (
    conv_layer_names, feature_maps, feeds_flatten, first_layer_kernels, grad_cam, grad_cam_caveat, kernel_images,
)
from cnnlab.models import create_model
from cnnlab.report.run_report import write_report
from cnnlab.analysis.trained_run import load_trained_model


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("inside") / "digits"
    return run_experiment(load_config("examples/digits.yaml", ["train.epochs=1"]), out=out, show_progress=False)


def test_kernel_images_colour_and_grey():
    colour = kernel_images(np.random.default_rng(0).normal(size=(4, 3, 5, 5)))
    grey = kernel_images(np.random.default_rng(1).normal(size=(6, 1, 3, 3)))
    assert colour.shape == (4, 5, 5, 3) and grey.shape == (6, 3, 3)
    for pictures in (colour, grey):
        assert pictures.min() == 0 and pictures.max() == 1
    flat = kernel_images(np.ones((2, 1, 3, 3)))  # a constant kernel has no range: mid grey, not NaN
    assert np.all(flat == 0.5)


def test_first_layer_kernels_only_for_convolutions():
    conv = nn.Sequential(nn.Conv2d(3, 8, 5), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    assert first_layer_kernels(conv).shape == (8, 3, 5, 5)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.ReLU(), nn.Linear(10, 3))
    assert first_layer_kernels(mlp) is None
    assert conv_layer_names(mlp) == []
    assert conv_layer_names(conv) == ["1"]  # the activation after the convolution


@pytest.mark.slow
def test_grad_cam_has_image_size_and_is_not_constant(digits_run):
    trained = load_trained_model(digits_run)
    images = trained.normalize(torch.from_numpy(runs.load_npz(digits_run / runs.EXAMPLES_FILE)["images"][:6]))
    targets = trained.module(images).argmax(1)
    maps = grad_cam(trained.module, images, targets)
    assert maps.shape == (6, 8, 8)
    assert maps.min() >= 0 and maps.max() <= 1
    assert all(np.ptp(single) > 0 for single in maps)
    assert not any(p.grad is not None for p in trained.module.parameters())  # only activations' gradients taken


def test_grad_cam_tolerates_inplace_activation_and_frozen_weights():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(4, 4, 3, padding=1),
                          nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    maps = grad_cam(model, torch.randn(3, 3, 12, 10), [0, 1, 0], layer="2")
    assert maps.shape == (3, 12, 10) and np.isfinite(maps).all()


@pytest.mark.slow
def test_feature_maps_of_a_named_layer(digits_run):
    trained = load_trained_model(digits_run)
    images = trained.normalize(torch.from_numpy(runs.load_npz(digits_run / runs.EXAMPLES_FILE)["images"][:2]))
    first = conv_layer_names(trained.module)[0]
    maps = feature_maps(trained.module, images, first)
    assert maps.shape == (2, 32, 8, 8)
    assert (maps >= 0).all()  # after the ReLU
    with pytest.raises(ValueError, match="No layer called"):
        feature_maps(trained.module, images, "no-such-layer")


@pytest.mark.slow
def test_report_has_the_network_section(digits_run):
    markdown, html = write_report(digits_run)
    text = markdown.read_text()
    assert "## Looking inside the network" in text
    for figure in ("kernels", "feature_maps", "grad_cam"):
        assert (digits_run / "figures" / f"{figure}.png").exists()
        assert f"figures/{figure}.png" in text
    assert html.read_text().count("data:image/png;base64") >= 3


@pytest.mark.slow
def test_report_without_weights_skips_the_section(digits_run, tmp_path):
    copy = tmp_path / "no-weights"
    shutil.copytree(digits_run, copy)
    (copy / runs.WEIGHTS_FILE).unlink()
    for figure in (copy / "figures").glob("*.png"):
        figure.unlink()
    markdown, _ = write_report(copy)
    text = markdown.read_text()
    assert "## Looking inside the network" in text and "model.safetensors" in text
    assert not (copy / "figures" / "grad_cam.png").exists()


@pytest.mark.slow
def test_report_of_an_mlp_skips_the_kernel_grid(tmp_path):
    run_dir = run_experiment(load_config("mlp", ["train.epochs=1"]), out=tmp_path / "mlp", show_progress=False)
    text = (run_dir / "report.md").read_text()
    assert "not a convolution" in text
    assert not (run_dir / "figures" / "kernels.png").exists()


def test_grad_cam_caveat_where_the_maps_cannot_mean_much():
    torch.manual_seed(0)
    images = torch.randn(2, 3, 16, 16)
    flat = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Dropout(0.1), nn.Flatten(), nn.Linear(1024, 2))
    assert feeds_flatten(flat, "1") and feeds_flatten(flat, "0")
    text = grad_cam_caveat(flat, images, "1")
    assert "feeds Flatten directly" in text and "wrong place" not in text
    pooled = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                           nn.Linear(4, 2))
    assert not feeds_flatten(pooled, "1") and grad_cam_caveat(pooled, images, "1") is None
    strided = nn.Sequential(nn.Conv2d(3, 4, 3, stride=4, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                            nn.Flatten(), nn.Linear(4, 2))
    text = grad_cam_caveat(strided, torch.randn(2, 3, 32, 32), "1")
    assert "only 8x8 cells for 32x32-pixel images" in text and "Flatten" not in text
    assert grad_cam_caveat(pooled, torch.randn(2, 3, 8, 8), "1") is None  # 8x8 maps of 8x8 images: full size
    built = create_model({"layers": ["Conv2D: 4, 3, 1, same", "Flatten", "Dense: 2"]}, (3, 16, 16), 2).module
    assert "feeds Flatten directly" in grad_cam_caveat(built, images, conv_layer_names(built)[-1])
    pooled_built = create_model({"layers": ["Conv2D: 4, 3, 1, same", "MaxPooling: 2, 2", "Flatten", "Dense: 2"]},
                                (3, 16, 16), 2).module
    assert not feeds_flatten(pooled_built, conv_layer_names(pooled_built)[-1])


def test_kernel_grid_figure_is_colour_for_rgb_kernels():
    from matplotlib.figure import Figure

    from cnnlab.report.image_plots import plot_kernel_grid

    figure = plot_kernel_grid(kernel_images(np.random.default_rng(2).normal(size=(20, 3, 3, 3))))
    assert isinstance(figure, Figure)
    mosaic = figure.axes[0].get_images()[0].get_array()
    assert mosaic.shape == (2 * 3 + 1, 16 * 3 + 15, 4)  # two rows of 16 kernels, 1-pixel gaps, RGB and alpha
    grey = plot_kernel_grid(kernel_images(np.random.default_rng(3).normal(size=(4, 1, 3, 3))))
    pixels = np.asarray(grey.axes[0].get_images()[0].get_array())
    assert np.allclose(pixels[..., 0], pixels[..., 1])  # grey kernels drawn grey
