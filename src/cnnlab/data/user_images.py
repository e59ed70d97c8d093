"""Your own images, for `cnnlab predict`: finding them (files, folders, archives) and decoding each one
to a network's input size and channels.

Decoding goes through the datasets' own path (`cnnlab.data.images`): only PNG, JPEG, BMP, WebP and GIF
(`IMAGE_FORMATS`, whatever a file's name says), at most `MAX_PIXELS` pixels, transparent pixels
composited on white, converted to grey (ITU-R 601 luma) or RGB, resized bilinearly to the exact input
size without keeping the aspect ratio, as the training images were, the EXIF orientation applied (a phone
photo is turned upright) and 16-bit grey pixels scaled to 8 bits (65535 -> 255) rather than clipped. An animated GIF or WebP gives its first frame.

Folders are walked in sorted order without following links: a linked folder is not entered, a linked
file is read only when it points inside the folder; hidden files and folders, and files whose names are
not images, are passed over. Archives are read member by member in memory, every member checked and
bounded by `cnnlab.data.archives`, nothing written to disk. A file that cannot be used becomes a
`UserImage` with its ``problem`` set, to be listed and skipped, never an exception.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cnnlab.data.archives import is_archive, iter_archive_files
from cnnlab.data.images import (IMAGE_SUFFIXES, HeightWidth, UnreadableImage, is_image_name, open_image, prepare_image,
                                prepare_upright)
from cnnlab.errors import DataError

ACCEPTED = "PNG, JPEG, BMP, WebP or GIF"
NOT_ACCEPTED = (f"not a {ACCEPTED} image (another format, whatever the file's name says, or a damaged file); "
                "cnnlab reads only these formats: convert it, e.g. to PNG")
PIXEL_ARRAY_CHANNELS = {1: "L", 3: "RGB", 4: "RGBA"}

PixelSource = Path | bytes | Image.Image | np.ndarray  # a file, a file's content, a Pillow image, uint8 pixels


@dataclass(frozen=True)
class UserImage:
    """One image to predict: ``label`` (the path, ``archive.zip:member``, or ``<array 3>``) and where its
    pixels are; or, when ``problem`` is set, why it is skipped."""

    label: str
    source: PixelSource | None = None
    problem: str | None = None


def find_user_images(path: Path | str) -> Iterator[UserImage]:
    """The images ``path`` names: the file itself (tried whatever its name), every image file in a folder
    (sorted, links not followed out of it), or every image member of a .zip/.tar archive."""
    path = Path(path)
    label = str(path)
    if not path.exists():
        yield UserImage(label, problem="does not exist")
    elif path.is_dir():
        yield from _folder_images(path)
    elif not path.is_file():
        yield UserImage(label, problem="is not a regular file (a device, pipe or socket)")
    elif is_archive(path):
        yield from _archive_images(path)
    else:
        yield UserImage(label, path)


def decode_user_image(source: PixelSource, size: HeightWidth, channels: int) -> np.ndarray:
    """One image as uint8 (``channels``, height, width), prepared as the training images were (see the
    module's notes). Raises UnreadableImage with the reason in words."""
    colour = channels == 3
    if isinstance(source, np.ndarray):
        return _decode_pixels(source, size, colour)
    try:
        if isinstance(source, Image.Image):
            return _as_array(prepare_upright(source, size, colour, draft=False), colour)
        with open_image(source) as image:
            return _as_array(prepare_upright(image, size, colour, draft=True), colour)
    except UnreadableImage:
        raise
    except UnidentifiedImageError:
        raise UnreadableImage(NOT_ACCEPTED) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise UnreadableImage(f"too many pixels to decode safely ({error})") from None
    except Exception as error:  # Pillow's decoders raise many kinds; all mean a damaged file here
        raise UnreadableImage(f"damaged or truncated ({type(error).__name__}: {error})") from None


def pixel_array_image(pixels: np.ndarray) -> Image.Image:
    """uint8 pixels (H, W) or (H, W, C) with C of 1, 3 or 4 (RGBA) as a Pillow image; DataError otherwise."""
    if pixels.dtype != np.uint8:
        raise DataError(f"An image array must hold uint8 pixels (0-255), not {pixels.dtype}: convert it, e.g. "
                        "(array * 255).round().astype(numpy.uint8) for values in 0..1.")
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    mode = "L" if pixels.ndim == 2 else PIXEL_ARRAY_CHANNELS.get(pixels.shape[2]) if pixels.ndim == 3 else None
    if mode is None or 0 in pixels.shape:
        raise DataError(f"An image array must be shaped (height, width) or (height, width, 1, 3 or 4 channels), "
                        f"not {tuple(pixels.shape)}.")
    return Image.fromarray(np.ascontiguousarray(pixels), mode=mode)


def _decode_pixels(pixels: np.ndarray, size: HeightWidth, colour: bool) -> np.ndarray:
    channels = 3 if colour else 1
    if pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape == (*size, channels):
        return np.ascontiguousarray(pixels.transpose(2, 0, 1))  # already the input: nothing to convert or resize
    image = pixel_array_image(pixels)
    return _as_array(prepare_image(image, size, colour), colour)


def _as_array(image: Image.Image, colour: bool) -> np.ndarray:
    pixels = np.asarray(image)
    return pixels.transpose(2, 0, 1) if colour else pixels[np.newaxis]


def _folder_images(folder: Path) -> Iterator[UserImage]:
    root = folder.resolve()
    found = False
    for current, folders, files in os.walk(folder, followlinks=False):
        folders[:] = sorted(name for name in folders if not _hidden(name))  # os.walk enters only these
        for name in sorted(files):
            if not is_image_name(name):
                continue
            found = True
            path = Path(current) / name
            if path.is_symlink() and not path.resolve().is_relative_to(root):
                yield UserImage(str(path), problem=f"is a link to a file outside {folder}; links out of a folder "
                                                   "are not followed (give the file itself)")
            elif not path.is_file():
                yield UserImage(str(path), problem="is not a regular file (a device, pipe, socket or broken link)")
            else:
                yield UserImage(str(path), path)
    if not found:
        yield UserImage(str(folder), problem=f"holds no image files ({' '.join(sorted(IMAGE_SUFFIXES))})")


def _archive_images(archive: Path) -> Iterator[UserImage]:
    found = False
    try:
        for name, content in iter_archive_files(archive):
            if is_image_name(name) and not any(_hidden(part) for part in PurePosixPath(name).parts[:-1]):
                found = True
                yield UserImage(f"{archive}:{name}", content)
    except DataError as error:  # refused (a link, a bomb) or damaged: reading it stops here
        yield UserImage(str(archive), problem=str(error))
        return
    if not found:
        yield UserImage(str(archive), problem=f"holds no image files ({' '.join(sorted(IMAGE_SUFFIXES))})")


def _hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


__all__ = ["ACCEPTED", "NOT_ACCEPTED", "PixelSource", "UserImage", "decode_user_image", "find_user_images",
           "pixel_array_image"]
