"""Batched augmentation: shapes kept, images never mixed, independent per-image randomness, both
vocabularies, and the batched resampling checked against a per-image reference and torchvision."""

import math

import pytest
import torch
import torchvision.transforms.functional as TF
from torch import nn
from torchvision.transforms import InterpolationMode

from cnnlab.augment import test_time as evaluation_views
from cnnlab.augment.resample import apply_affine, compose_matrices
from cnnlab.augment.augmenter import build_augmenter
from cnnlab.augment.plan import describe
from cnnlab.augment.settings import parse_augment
from cnnlab.augment.test_time import predict_with_views
from cnnlab.data.normalization import Normalization
from cnnlab.errors import ConfigError

SHAPE = (3, 16, 20)  # not square, so width and height cannot be confused
GEOMETRY = {"horizontal_flip": True, "vertical_flip": True, "rotation_range": 30, "width_shift_range": 0.2,
            "height_shift_range": 0.1, "zoom_range": 0.2, "shear_range": 10, "fill_mode": "nearest"}
EVERYTHING = {**GEOMETRY, "random_crop": {"padding": 2}, "cutout": {"size": 4, "count": 2},
              "color_jitter": {"brightness": 0.3, "contrast": 0.3, "saturation": 0.3}}


def make(raw, seed=0, shape=SHAPE, normalization=None):
    return build_augmenter(parse_augment(raw), shape, "cpu", seed, normalization)


def random_images(count, shape=SHAPE, seed=0):
    return torch.rand((count, *shape), generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- contract

@pytest.mark.parametrize("raw", [{"horizontal_flip": True}, {"random_rotation": 15}, {"random_crop": {"padding": 4}},
                                 {"color_jitter": {"brightness": 0.2}}, {"cutout": {"size": 3}}, EVERYTHING])
def test_shape_dtype_and_device_kept(raw):
    images = random_images(8)
    out = make(raw)(images)
    assert out.shape == images.shape and out.dtype == images.dtype and out.device == images.device
    assert torch.isfinite(out).all()


def test_channels_last_batches_stay_channels_last():
    images = random_images(4).contiguous(memory_format=torch.channels_last)
    assert make(GEOMETRY)(images).is_contiguous(memory_format=torch.channels_last)


def test_augmentation_never_mixes_images():
    # image i is constant i: under edge-repeating fill every output pixel of image i must still be i
    count = 32
    images = torch.arange(count, dtype=torch.float32).view(-1, 1, 1, 1).expand(count, *SHAPE).contiguous()
    out = make({**GEOMETRY, "random_crop": {"padding": 2, "padding_mode": "edge"}})(images)
    torch.testing.assert_close(out, images, atol=1e-4, rtol=0)
    cut = make({"cutout": {"size": 4}, "horizontal_flip": True})(images)
    assert ((cut == images) | (cut == 0)).all()


def test_empty_and_zero_configs_do_nothing():
    assert parse_augment({}).is_empty() and parse_augment(None).is_empty()
    assert make({}) is None and make({"rotation_range": 0, "horizontal_flip": False}) is None
    assert not parse_augment({"test_time": "flip"}).is_empty() and make({"test_time": "flip"}) is None
    images = random_images(4)
    ones, zeros = torch.ones(4), torch.zeros(4)
    identity = compose_matrices(zeros, zeros, ones, ones, zeros, zeros)
    torch.testing.assert_close(apply_affine(images, identity), images, atol=1e-5, rtol=0)


def test_certain_flip_is_an_exact_mirror():
    images = random_images(4)
    assert torch.equal(make({"random_horizontal_flip": 1.0})(images), images.flip(3))
    assert torch.equal(make({"random_vertical_flip": 1.0})(images), images.flip(2))
    ones, zeros = torch.ones(4), torch.zeros(4)
    mirror = compose_matrices(zeros, zeros, -ones, ones, zeros, zeros)
    torch.testing.assert_close(apply_affine(images, mirror), images.flip(3), atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- randomness

def test_identical_images_get_different_shifts():
    images = random_images(1).expand(256, *SHAPE).contiguous()
    out = make({"width_shift_range": 0.1, "height_shift_range": 0.1})(images)
    assert len(torch.unique(out.flatten(1), dim=0)) > 200


@pytest.mark.parametrize("raw", [{"random_horizontal_flip": 0.5}, {"horizontal_flip": True, "rotation_range": 2}])
def test_about_half_are_flipped(raw):
    # bright left half: a flipped image is dark on its left; binomial(256, 0.5) stays in [0.35, 0.65] (5 sigma)
    images = torch.zeros((256, *SHAPE))
    images[..., : SHAPE[2] // 2] = 1.0
    out = make(raw)(images)
    flipped = (out[..., : SHAPE[2] // 2].mean(dim=(1, 2, 3)) < 0.5).float().mean().item()
    assert 0.35 < flipped < 0.65


def test_sampled_rotations_and_shifts_fill_their_ranges():
    count = 512
    rotation = make({"random_rotation": 10}).sample_matrices(count)
    angles_deg = torch.rad2deg(torch.atan2(rotation[:, 1, 0], rotation[:, 0, 0]))
    assert angles_deg.abs().max() <= 10 + 1e-4 and angles_deg.min() < -9 and angles_deg.max() > 9
    shift = make({"width_shift_range": 0.1, "height_shift_range": 0.2}).sample_matrices(count)
    limits = torch.tensor([0.1 * SHAPE[2], 0.2 * SHAPE[1]])
    assert (shift[:, :, 2].abs() <= limits + 1e-5).all() and (shift[:, :, 2].abs().amax(0) > 0.9 * limits).all()


def test_same_seed_same_output_other_seed_other_output():
    images = random_images(16)
    first, again, other = make(EVERYTHING, seed=1), make(EVERYTHING, seed=1), make(EVERYTHING, seed=2)
    assert torch.equal(first(images), again(images))
    assert not torch.equal(first(images), other(images))


# --------------------------------------------------------------------------- vocabularies and errors

@pytest.mark.parametrize("keras, torchvision", [
    ({"rotation_range": 10, "fill_mode": "nearest"}, {"random_rotation": 10, "fill_mode": "nearest"}),
    ({"rotation_range": 10, "fill_mode": "nearest"}, {"random_affine": {"degrees": 10}, "fill_mode": "nearest"}),
    ({"horizontal_flip": True}, {"random_horizontal_flip": True}),
    ({"vertical_flip": True}, {"random_vertical_flip": 0.5}),
    ({"width_shift_range": 0.1, "height_shift_range": 0.2, "shear_range": 5, "fill_mode": "reflect"},
     {"random_affine": {"translate": [0.1, 0.2], "shear": 5}, "fill_mode": "reflect"}),
])
def test_keras_and_torchvision_names_give_one_plan(keras, torchvision):
    assert parse_augment(keras).plan() == parse_augment(torchvision).plan()
    assert describe(parse_augment(keras).plan()) == describe(parse_augment(torchvision).plan())


def test_default_fill_follows_the_vocabulary():
    assert parse_augment({"rotation_range": 10}).plan().fill_mode == "nearest"  # Keras default
    assert parse_augment({"random_rotation": 10}).plan().fill_mode == "constant"  # torchvision fills 0
    assert parse_augment({"zoom_range": 0.2}).plan().zoom == pytest.approx((0.8, 1.2))


@pytest.mark.parametrize("raw, message", [
    ({"rotation_rang": 10}, 'Did you mean "rotation_range"'),
    ({"random_affine": {"degree": 5}}, 'Did you mean "degrees"'),
    ({"RandomHorizontalFlip": 0.5}, 'Did you mean "random_horizontal_flip"'),
    ({"random_erasing": {"p": 0.5}}, '"cutout" erases squares'),
    ({"rotation_range": 10, "random_rotation": 5}, "give only one"),
    ({"zoom_range": 0.2, "random_affine": {"scale": [0.8, 1.2]}}, "give only one"),
    ({"color_jitter": {"hue": 0.1}}, "hue is not supported"),
    ({"zoom_range": 1.5}, "above 0"),
    ({"random_rotation": [10, -10]}, "low <= high"),
    ({"width_shift_range": 4}, "width_shift_range"),
])
def test_bad_settings_are_config_errors(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_augment(raw)


def test_crop_size_must_match_the_images():
    with pytest.raises(ConfigError, match="random_crop.size"):
        make({"random_crop": {"size": 32, "padding": 4}})
    assert make({"random_crop": {"size": 16, "padding": 4}}, shape=(3, 16, 16)) is not None


def test_describe_reads_like_the_reports():
    lines = describe(parse_augment({"horizontal_flip": True, "rotation_range": 10, "width_shift_range": 0.1,
                                    "height_shift_range": 0.1, "test_time": "flip"}).plan())
    assert "horizontal flip (p=0.5)" in lines and "rotation ±10°" in lines
    assert "shift up to 10% of the width, 10% of the height" in lines
    assert any("test-time views: flip" in line for line in lines)


# --------------------------------------------------------------------------- pixel operations

def test_colour_jitter_acts_on_pixel_values():
    normalization = Normalization("zscore", [0.5] * 3, [0.25] * 3, 1 / 255)  # pixel 0.5 -> 0, 1 -> 2, 0 -> -2
    grey = torch.zeros((4, *SHAPE))
    brighter = make({"color_jitter": {"brightness": [2, 2]}}, normalization=normalization)(grey)
    torch.testing.assert_close(brighter, torch.full_like(grey, 2.0))
    darker = make({"color_jitter": {"brightness": [0, 0]}}, normalization=normalization)(grey)
    torch.testing.assert_close(darker, torch.full_like(grey, -2.0))
    colourful = random_images(4)
    washed = make({"color_jitter": {"saturation": [0, 0]}})(colourful)
    torch.testing.assert_close(washed, washed[:, :1].expand_as(washed))


def test_constant_fill_is_black_in_pixel_space():
    normalization = Normalization("zscore", [0.5] * 3, [0.25] * 3, 1 / 255)
    images = torch.zeros((2, *SHAPE))  # mid-grey
    out = make({"random_affine": {"scale": [0.5, 0.5]}}, normalization=normalization)(images)
    assert out[..., 0, 0].allclose(torch.tensor(-2.0)) and out[..., 8, 10].allclose(torch.tensor(0.0))


def test_pad_and_crop_are_whole_pixel_shifts():
    images = random_images(64)
    out = make({"random_crop": {"padding": 2}})(images)
    padded = nn.functional.pad(images, (2, 2, 2, 2))
    height, width = SHAPE[1:]
    offsets = set()
    for index in range(len(images)):
        matches = [(dy, dx) for dy in range(5) for dx in range(5)
                   if torch.equal(out[index], padded[index, :, dy:dy + height, dx:dx + width])]
        assert len(matches) == 1
        offsets.add(matches[0])
    assert len(offsets) > 12


def test_cutout_zeroes_squares_of_the_given_size():
    out = make({"cutout": {"size": 4}})(torch.ones((64, *SHAPE)))
    zeros = (out == 0).all(dim=1).sum(dim=(1, 2))
    assert (zeros <= 16).all() and (zeros == 16).any() and (zeros > 0).all()


# --------------------------------------------------------------------------- test-time views

def test_test_time_views_and_their_average():
    images = random_images(5)
    assert [len(evaluation_views.test_time_views(images, mode)) for mode in ("none", "flip", "flip_shift")] == [1, 2, 6]
    views = evaluation_views.test_time_views(images, "flip_shift")
    assert torch.equal(views[1], images.flip(3)) and all(view.shape == images.shape for view in views)
    torch.testing.assert_close(views[2][..., :-2, :-2], images[..., 2:, 2:])  # moved up-left by 2
    model = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(SHAPE), 4)).eval()
    probabilities = predict_with_views(model, images, "flip")
    expected = (torch.softmax(model(images), 1) + torch.softmax(model(images.flip(3)), 1)) / 2
    torch.testing.assert_close(probabilities, expected)
    torch.testing.assert_close(probabilities.sum(1), torch.ones(5))
    with pytest.raises(ConfigError, match="test_time"):
        evaluation_views.test_time_views(images, "flips")


def test_views_only_for_unsure_images():
    """With `below`, an image whose plain top probability reaches it keeps its plain prediction; the others get
    the mean over every view, as without `below`."""
    images = random_images(6)
    model = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(SHAPE), 3)).eval()
    plain = predict_with_views(model, images, "none")
    every = predict_with_views(model, images, "flip_shift")
    threshold = plain.amax(1).median().item()
    unsure = plain.amax(1) < threshold
    assert 0 < unsure.sum() < len(images)
    mixed = predict_with_views(model, images, "flip_shift", below=threshold)
    torch.testing.assert_close(mixed[unsure], every[unsure])
    torch.testing.assert_close(mixed[~unsure], plain[~unsure])
    torch.testing.assert_close(predict_with_views(model, images, "flip_shift", below=1e-6), plain)


# --------------------------------------------------------------------------- reference implementations

def reference_affine(images, matrices):
    """One image at a time, by hand: bilinear sampling with edge repetition (fill_mode nearest)."""
    _, _, height, width = images.shape
    rows, columns = torch.meshgrid(torch.arange(height, dtype=torch.float64),
                                   torch.arange(width, dtype=torch.float64), indexing="ij")
    centred = torch.stack([columns - (width - 1) / 2, rows - (height - 1) / 2, torch.ones_like(rows)])
    outputs = []
    for image, matrix in zip(images.double(), matrices.double()):
        source = torch.einsum("ij,jhw->ihw", matrix, centred)
        x = (source[0] + (width - 1) / 2).clamp(0, width - 1)
        y = (source[1] + (height - 1) / 2).clamp(0, height - 1)
        x0, y0 = x.floor().long(), y.floor().long()
        x1, y1 = (x0 + 1).clamp(max=width - 1), (y0 + 1).clamp(max=height - 1)
        wx, wy = x - x0, y - y0
        outputs.append(image[:, y0, x0] * (1 - wx) * (1 - wy) + image[:, y0, x1] * wx * (1 - wy)
                       + image[:, y1, x0] * (1 - wx) * wy + image[:, y1, x1] * wx * wy)
    return torch.stack(outputs).float()


def test_batched_resampling_matches_a_per_image_reference():
    images = random_images(12)
    augmenter = make(GEOMETRY, seed=3)
    matrices = augmenter.sample_matrices(len(images))
    batched = apply_affine(images, matrices, "nearest")
    torch.testing.assert_close(batched, reference_affine(images, matrices), atol=1e-4, rtol=0)
    # the augmenter itself draws exactly these matrices from the same seed
    torch.testing.assert_close(make(GEOMETRY, seed=3)(images), batched)


def test_matrices_follow_torchvision_conventions():
    images = random_images(3)
    angles, shears, scales = [30.0, -12.0, 5.0], [0.0, 12.0, -8.0], [1.0, 0.8, 1.3]
    shifts = [(0, 0), (2, 1), (-3, 2)]
    matrices = compose_matrices(torch.tensor(angles), torch.tensor(shears), torch.tensor(scales),
                                torch.tensor(scales), torch.tensor([float(s[0]) for s in shifts]),
                                torch.tensor([float(s[1]) for s in shifts]))
    batched = apply_affine(images, matrices, "constant")
    for index in range(len(images)):
        # torchvision's affine turns clockwise for positive angles; its rotate (and we) counter-clockwise
        expected = TF.affine(images[index], angle=-angles[index], translate=list(shifts[index]),
                             scale=scales[index], shear=[shears[index], 0.0],
                             interpolation=InterpolationMode.BILINEAR, fill=None)
        torch.testing.assert_close(batched[index], expected, atol=1e-4, rtol=0)
    rotated = TF.rotate(images[0], 30.0, interpolation=InterpolationMode.BILINEAR)
    torch.testing.assert_close(batched[0], rotated, atol=1e-4, rtol=0)


def test_test_time_below_needs_test_time_views():
    from cnnlab.augment.settings import parse_augment

    assert parse_augment({"test_time": "flip", "test_time_below": 0.6}).test_time_below == 0.6
    with pytest.raises(ConfigError, match="test_time_below"):
        parse_augment({"test_time_below": 0.6})
    with pytest.raises(ConfigError, match="test_time_below"):
        parse_augment({"test_time": "flip", "test_time_below": 1.5})
