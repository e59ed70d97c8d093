"""Your own images for `cnnlab predict`: every mode decoded as the datasets decode it (plus EXIF orientation
and 16-bit scaling), folders walked without following links out, archives read safely, and every file
that cannot be used named with its reason instead of an exception."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.data import images as images_module
from cnnlab.data.images import UnreadableImage, decode_image
from cnnlab.data.user_images import NOT_ACCEPTED, UserImage, decode_user_image, find_user_images, pixel_array_image
from cnnlab.errors import DataError

RNG = np.random.default_rng(0)


def save(image: Image.Image, path: Path, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    return path


def pattern(height: int, width: int, channels: int = 3) -> np.ndarray:
    """Distinct pixels, so that a rotation or a mirror shows."""
    return RNG.integers(0, 256, size=(height, width, channels), dtype=np.uint8)


def test_grey_and_rgb_convert_to_the_run_channels(tmp_path):
    grey = pattern(5, 7, 1)[:, :, 0]
    rgb = pattern(5, 7)
    grey_file = save(Image.fromarray(grey, "L"), tmp_path / "grey.png")
    rgb_file = save(Image.fromarray(rgb, "RGB"), tmp_path / "rgb.png")
    assert np.array_equal(decode_user_image(grey_file, (5, 7), 1), grey[np.newaxis])
    assert np.array_equal(decode_user_image(grey_file, (5, 7), 3), np.repeat(grey[np.newaxis], 3, axis=0))
    assert np.array_equal(decode_user_image(rgb_file, (5, 7), 3), rgb.transpose(2, 0, 1))
    luma = np.asarray(Image.fromarray(rgb).convert("L"))  # ITU-R 601-2, as the grey datasets are made
    assert np.array_equal(decode_user_image(rgb_file, (5, 7), 1), luma[np.newaxis])


def test_transparency_is_composited_on_white(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)  # opaque: kept
    rgba[0, 1] = (10, 20, 30, 0)  # transparent: white
    rgba[1, 0] = (0, 0, 0, 128)  # half: halfway to white
    decoded = decode_user_image(save(Image.fromarray(rgba, "RGBA"), tmp_path / "a.png"), (2, 2), 3)
    assert tuple(decoded[:, 0, 0]) == (10, 20, 30)
    assert tuple(decoded[:, 0, 1]) == (255, 255, 255)
    assert all(abs(int(value) - 127) <= 1 for value in decoded[:, 1, 0])
    grey_alpha = Image.fromarray(np.array([[[50, 255], [50, 0]]], np.uint8), "LA")
    assert decode_user_image(save(grey_alpha, tmp_path / "la.png"), (1, 2), 1).tolist() == [[[50, 255]]]


def test_palette_with_a_transparent_index(tmp_path):
    palette_image = Image.new("P", (2, 1))
    palette_image.putpalette([200, 0, 0, 0, 0, 200] + [0] * 762)
    palette_image.putpixel((0, 0), 0)
    palette_image.putpixel((1, 0), 1)
    path = save(palette_image, tmp_path / "p.gif", transparency=1)
    with Image.open(path) as opened:
        assert opened.mode == "P"
    assert decode_user_image(path, (1, 2), 3)[:, 0].T.tolist() == [[200, 0, 0], [255, 255, 255]]


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 32896, 65535]], np.uint16)
    path = save(Image.fromarray(values), tmp_path / "deep.png")
    with Image.open(path) as opened:
        assert opened.mode.startswith("I")
    assert decode_user_image(path, (1, 4), 1).tolist() == [[[0, 1, 128, 255]]]
    assert decode_image(path, (1, 4), False).tolist() == [[[0, 1, 128, 255]]], "datasets decode it the same way"
    with Image.open(path) as opened:
        assert np.asarray(opened.convert("L")).tolist() != [[0, 1, 128, 255]], "what plain conversion would do"


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    cyan = Image.new("CMYK", (8, 8), (255, 0, 0, 0))
    decoded = decode_user_image(save(cyan, tmp_path / "cmyk.jpg", quality=95), (8, 8), 3)
    assert np.abs(decoded[:, 4, 4].astype(int) - (0, 255, 255)).max() <= 8


@pytest.mark.parametrize("orientation, turn", [(6, -1), (8, 1), (3, 2)])
def test_exif_orientation_turns_the_photo_upright(tmp_path, orientation, turn):
    """A phone stores the sensor's pixels and an Orientation tag: 6 means turn 90 degrees clockwise to view."""
    stored = Image.fromarray(pattern(8, 16))
    plain = save(stored, tmp_path / "plain.jpg", quality=100)
    exif = Image.Exif()
    exif[0x0112] = orientation
    tagged = save(stored, tmp_path / "tagged.jpg", quality=100, exif=exif)
    unturned = decode_user_image(plain, (8, 16), 3)  # the same JPEG data without the tag
    size = (16, 8) if orientation in (6, 8) else (8, 16)
    upright = decode_user_image(tagged, size, 3)
    assert np.array_equal(upright, np.rot90(unturned, k=turn, axes=(1, 2)))
    assert np.array_equal(decode_image(tagged, size, True), upright), "a dataset's images are turned the same way"


def test_exif_orientation_with_a_reduced_jpeg_decode(tmp_path):
    """A large photo is decoded at a reduced scale (as datasets do); the scale is chosen for the turned size."""
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = Image.fromarray(pattern(64, 128))
    photo = save(stored, tmp_path / "photo.jpg", quality=90, exif=exif)
    plain = save(stored, tmp_path / "plain.jpg", quality=90)
    # 128x64 stored, 64x128 upright; wanted 16 wide, 32 high: a quarter-scale decode, then only the turn
    expected = np.rot90(decode_image(plain, (16, 32), colour=True), k=-1, axes=(1, 2))
    assert np.array_equal(decode_user_image(photo, (32, 16), 3), expected)


@pytest.mark.parametrize("suffix, options", [(".png", {}), (".jpg", {"quality": 90}), (".bmp", {}),
                                             (".webp", {"lossless": True}), (".gif", {})])
def test_without_exif_or_16_bits_it_decodes_as_the_datasets_do(tmp_path, suffix, options):
    """Resizing (bilinear, aspect ratio not kept), colour conversion and JPEG draft all as `decode_image`."""
    image = Image.fromarray(pattern(45, 30))
    path = save(image, tmp_path / f"image{suffix}", **options)
    for size, channels in (((8, 8), 3), ((6, 10), 1), ((45, 30), 3)):
        assert np.array_equal(decode_user_image(path, size, channels), decode_image(path, size, channels == 3))


def test_pillow_images_and_arrays(tmp_path):
    rgb = pattern(4, 6)
    assert np.array_equal(decode_user_image(Image.fromarray(rgb), (4, 6), 3), rgb.transpose(2, 0, 1))
    assert np.array_equal(decode_user_image(rgb, (4, 6), 3), rgb.transpose(2, 0, 1))
    assert decode_user_image(rgb, (2, 3), 1).shape == (1, 2, 3)
    grey = rgb[:, :, 0]
    assert np.array_equal(decode_user_image(grey, (4, 6), 1), grey[np.newaxis])
    assert np.array_equal(decode_user_image(grey[:, :, np.newaxis], (4, 6), 1), grey[np.newaxis])
    transparent = np.zeros((2, 2, 4), np.uint8)
    assert decode_user_image(transparent, (2, 2), 3).min() == 255
    with pytest.raises(DataError, match="uint8"):
        pixel_array_image(rgb.astype(np.float32) / 255)
    with pytest.raises(DataError, match=r"\(4, 6, 2\)"):
        pixel_array_image(rgb[:, :, :2])


def test_damaged_unaccepted_and_oversized_files_are_unreadable_with_a_reason(tmp_path, monkeypatch):
    damaged = tmp_path / "damaged.png"
    damaged.write_bytes(save(Image.fromarray(pattern(20, 20)), tmp_path / "whole.png").read_bytes()[:80])
    with pytest.raises(UnreadableImage, match="damaged or truncated"):
        decode_user_image(damaged, (8, 8), 3)
    tiff = save(Image.fromarray(pattern(4, 4)), tmp_path / "scan.tiff")
    with pytest.raises(UnreadableImage) as refused:
        decode_user_image(tiff, (4, 4), 3)
    assert str(refused.value) == NOT_ACCEPTED and "PNG, JPEG, BMP, WebP or GIF" in NOT_ACCEPTED
    eps = tmp_path / "drawing.png"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    with pytest.raises(UnreadableImage, match="not a PNG, JPEG"):  # never handed to Ghostscript
        decode_user_image(eps, (4, 4), 3)
    monkeypatch.setattr(images_module, "MAX_PIXELS", 100)
    with pytest.raises(UnreadableImage, match="more than the 100"):
        decode_user_image(save(Image.new("L", (20, 20)), tmp_path / "large.png"), (4, 4), 1)


def labels_and_problems(entries) -> list[tuple[str, str | None]]:
    return [(entry.label, entry.problem) for entry in entries]


def test_a_folder_is_walked_sorted_without_hidden_files_and_links_out(tmp_path):
    folder = tmp_path / "photos"
    for name in ("b.png", "a.jpg", "sub/c.gif", ".hidden.png", ".cache/d.png", "__MACOSX/e.png"):
        save(Image.new("RGB", (3, 3)), folder / name)
    (folder / "notes.txt").write_text("not an image")
    outside = save(Image.new("RGB", (3, 3)), tmp_path / "elsewhere" / "secret.png")
    (folder / "out.png").symlink_to(outside)
    (folder / "in.png").symlink_to(folder / "b.png")
    (folder / "linked").symlink_to(outside.parent, target_is_directory=True)
    entries = list(find_user_images(folder))
    found = labels_and_problems(entries)
    assert [label for label, _ in found] == [str(folder / name) for name in
                                             ("a.jpg", "b.png", "in.png", "out.png", "sub/c.gif")]
    problems = dict(found)
    assert problems[str(folder / "out.png")].startswith("is a link to a file outside")
    assert sum(problem is None for problem in problems.values()) == 4
    assert all(isinstance(entry.source, Path) for entry in entries if entry.problem is None)


def test_missing_empty_and_special_paths_are_named_with_the_reason(tmp_path):
    (tmp_path / "empty").mkdir()
    os.mkfifo(tmp_path / "pipe.png")
    missing = tmp_path / "nowhere.png"
    assert labels_and_problems(find_user_images(missing)) == [(str(missing), "does not exist")]
    [(label, problem)] = labels_and_problems(find_user_images(tmp_path / "empty"))
    assert label == str(tmp_path / "empty") and problem.startswith("holds no image files")
    [(_, problem)] = labels_and_problems(find_user_images(tmp_path / "pipe.png"))
    assert "not a regular file" in problem
    folder_with_pipe = labels_and_problems(find_user_images(tmp_path))
    pipe_problem = "is not a regular file (a device, pipe, socket or broken link)"
    assert (str(tmp_path / "pipe.png"), pipe_problem) in folder_with_pipe


def test_an_explicit_file_is_tried_whatever_its_name(tmp_path):
    jfif = save(Image.new("L", (2, 2), 9), tmp_path / "photo.jfif", format="JPEG")
    [entry] = find_user_images(jfif)
    assert entry == UserImage(str(jfif), jfif)
    assert decode_user_image(entry.source, (2, 2), 1).shape == (1, 2, 2)


def png_bytes(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (3, 3), value).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_zip_archive_is_read_in_memory_member_by_member(tmp_path):
    archive = tmp_path / "images.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("set/two.png", png_bytes(2))
        zipped.writestr("set/one.png", png_bytes(1))
        zipped.writestr("__MACOSX/set/._one.png", b"resource fork")
        zipped.writestr("set/readme.txt", "text")
    entries = list(find_user_images(archive))
    assert [entry.label for entry in entries] == [f"{archive}:set/two.png", f"{archive}:set/one.png"]
    assert [int(decode_user_image(entry.source, (3, 3), 1)[0, 0, 0]) for entry in entries] == [2, 1]
    assert [path.name for path in tmp_path.iterdir()] == ["images.zip"], "nothing extracted to disk"


def test_a_tar_archive_and_a_refused_member(tmp_path):
    archive = tmp_path / "images.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        content = png_bytes(7)
        info = tarfile.TarInfo("a/seven.png")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
        link = tarfile.TarInfo("a/escape.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    entries = list(find_user_images(archive))
    assert entries[0].label == f"{archive}:a/seven.png" and entries[0].problem is None
    assert entries[1].label == str(archive) and "symbolic link" in entries[1].problem
    assert len(entries) == 2


def test_a_damaged_archive_is_one_skipped_entry(tmp_path):
    archive = tmp_path / "broken.zip"
    archive.write_bytes(b"PK\x03\x04 not really a zip")
    [(label, problem)] = labels_and_problems(find_user_images(archive))
    assert label == str(archive) and "Cannot read the archive" in problem
