"""Decoding image files into uint8 arrays with Pillow, one colour mode and size per set.

A set is RGB when any of its images is in colour, else grey (one channel); transparent
pixels are composited on white; every image is resized (bilinear, antialiased when
shrinking; the aspect ratio is not kept) to the set's size. A file Pillow cannot read is
skipped and reported with the others in one line, never halfway through with a traceback.
"""

from __future__ import annotations

import io
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageOps

from cnnlab.errors import require_memory
from cnnlab.runs import progress_bar

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif"})
# The only decoders Pillow may use, whatever a file's name or first bytes say: a file of any other format
# (EPS, which would start Ghostscript; PSD, TIFF, ...) is unreadable, never handed to another decoder.
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "WEBP", "GIF")
MAX_PIXELS = 1 << 26  # 67 million pixels (8192 x 8192); larger images are skipped before their pixels are decoded
DEFAULT_SIZE = 64  # when the images differ in size or are large
MAX_KEPT_SIZE = 128  # a common size up to this is kept as it is
PROGRESS_MIN_IMAGES = 1000  # smaller sets decode too fast to need a progress bar
NAMES_SHOWN = 5
ORIENTATION_TAG = 0x0112  # EXIF Orientation
SWAPPED_ORIENTATIONS = frozenset({5, 6, 7, 8})  # stored turned by 90 degrees: width and height swap
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})  # Pillow's 16-bit grey PNG modes
SIXTEEN_TO_EIGHT = 65535 / 255  # 257: 65535 -> 255, 32896 -> 128
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})

ImageSource = Path | bytes  # a file, or a file's content
HeightWidth = tuple[int, int]


class UnreadableImage(Exception):
    """Pillow could not open or decode one image."""


@dataclass
class Survey:
    """What the image headers say about a set, read without decoding the pixels."""

    colour: bool
    sizes: Counter  # (height, width) -> number of images
    unreadable: list[int]  # positions of the files whose header could not be read


def is_image_name(name: str) -> bool:
    """True for a visible file whose extension is one of `IMAGE_SUFFIXES` (any case)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return not base.startswith(".") and Path(base).suffix.lower() in IMAGE_SUFFIXES


def as_height_width(size: int | Sequence[int] | None) -> HeightWidth | None:
    """``64`` -> ``(64, 64)``; ``(48, 64)`` stays (height, width); None stays None."""
    if size is None:
        return None
    if isinstance(size, int):
        return (size, size)
    height, width = size
    return (int(height), int(width))


def survey_images(paths: Sequence[Path]) -> Survey:
    """Open each file's header (not its pixels) to learn the set's colour and sizes."""
    colour, sizes, unreadable = False, Counter(), []
    for position, path in enumerate(paths):
        try:
            with open_image(path) as image:
                sizes[(image.height, image.width)] += 1
                colour = colour or _is_colour(image)
        except Exception:  # any decoder error means the same to us: unreadable
            unreadable.append(position)
    return Survey(colour=colour, sizes=sizes, unreadable=unreadable)


def choose_size(sizes: Counter, requested: HeightWidth | None) -> tuple[HeightWidth, str | None]:
    """The size to decode to, and a note to show when it was chosen for the user: the
    requested size; else the images' common size when there is one up to
    `MAX_KEPT_SIZE`; else `DEFAULT_SIZE` square."""
    if requested is not None:
        return requested, None
    if not sizes:  # nothing readable: the caller reports that
        return (DEFAULT_SIZE, DEFAULT_SIZE), None
    if len(sizes) == 1:
        (only,) = sizes
        if max(only) <= MAX_KEPT_SIZE:
            return only, None
        found = f"all {only[0]}x{only[1]} (larger than {MAX_KEPT_SIZE})"
    else:
        heights = [height for height, _ in sizes]
        widths = [width for _, width in sizes]
        found = f"{len(sizes)} different sizes, {min(heights)}-{max(heights)} high and {min(widths)}-{max(widths)} wide"
    note = (
        f"images are {found}: resizing all to {DEFAULT_SIZE}x{DEFAULT_SIZE}; "
        "set dataset.image_size (e.g. image_size=96) to choose another size"
    )
    return (DEFAULT_SIZE, DEFAULT_SIZE), note


def decode_image(source: ImageSource, size: HeightWidth, colour: bool) -> np.ndarray:
    """One image as uint8 (C, H, W): turned upright by its EXIF orientation, RGB when ``colour`` else grey
    (16-bit grey scaled to 8 bits), alpha composited on white, resized to ``size`` (height, width).
    Raises UnreadableImage."""
    try:
        with open_image(source) as image:
            pixels = np.asarray(prepare_upright(image, size, colour, draft=True))
    except Exception as error:  # Pillow's decoders raise many kinds; all mean unreadable here
        raise UnreadableImage(f"{type(error).__name__}: {error}") from None
    return pixels.transpose(2, 0, 1) if colour else pixels[np.newaxis]


def open_image(source: ImageSource) -> Image.Image:
    """Pillow's image for ``source``, its header read and its pixels not yet: only `IMAGE_FORMATS`, at most
    `MAX_PIXELS` pixels. Raises UnreadableImage otherwise (and whatever Pillow raises on a damaged file)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # an error here, not a line on stderr
        image = Image.open(source if isinstance(source, Path) else io.BytesIO(source), formats=IMAGE_FORMATS)
    if image.width * image.height > MAX_PIXELS:
        image.close()
        raise UnreadableImage(f"{image.width}x{image.height} pixels, more than the {MAX_PIXELS:,} cnnlab decodes")
    return image


def decode_images(
    sources: Iterable[ImageSource], count: int, size: HeightWidth, colour: bool, description: str
) -> tuple[np.ndarray, list[int]]:
    """Decode ``count`` images into one uint8 (N, C, H, W) array of the readable ones;
    also returns the positions of the unreadable ones. Shows a progress bar on stderr
    for large sets."""
    channels = 3 if colour else 1
    require_memory(count * channels * size[0] * size[1], f"Decoding {count:,} images at {size[0]}x{size[1]}",
                   "Set a smaller dataset.image_size, or use fewer images.")
    images = np.empty((count, channels, *size), dtype=np.uint8)
    kept, unreadable = 0, []
    with progress_bar(count, description, minimum=PROGRESS_MIN_IMAGES) as bar:
        for position, source in enumerate(sources):
            try:
                images[kept] = decode_image(source, size, colour)
                kept += 1
            except UnreadableImage:
                unreadable.append(position)
            bar.update(1)
    return images[:kept], unreadable


def skipped_message(names: Sequence[str]) -> str:
    """``warning: skipped 3 unreadable images: a.jpg, b.png, c.jpg`` (the first few)."""
    shown = ", ".join(names[:NAMES_SHOWN]) + (f" and {len(names) - NAMES_SHOWN} more" if len(names) > NAMES_SHOWN else "")
    noun = "image" if len(names) == 1 else "images"
    return f"warning: skipped {len(names)} unreadable {noun}: {shown}"


def resize_images(images: np.ndarray, size: HeightWidth, description: str = "resizing") -> np.ndarray:
    """A uint8 (N, C, H, W) array with every image resized to ``size`` (height, width)."""
    count, channels = images.shape[:2]
    if tuple(images.shape[2:]) == tuple(size):
        return images
    height, width = size
    resized = np.empty((count, channels, height, width), dtype=np.uint8)
    with progress_bar(count, description, minimum=PROGRESS_MIN_IMAGES) as bar:
        for position, image in enumerate(images):
            pixels = image[0] if channels == 1 else image.transpose(1, 2, 0)
            result = np.asarray(Image.fromarray(pixels).resize((width, height), Image.Resampling.BILINEAR))
            resized[position] = result[np.newaxis] if channels == 1 else result.transpose(2, 0, 1)
            bar.update(1)
    return resized


def prepare_image(image: Image.Image, size: HeightWidth, colour: bool) -> Image.Image:
    """``image`` in RGB (``colour``) or grey, transparent pixels composited on white, resized (bilinear) to
    ``size`` (height, width): what every decoded image goes through, in a dataset or given to `cnnlab predict`."""
    if image.mode in ("RGBA", "LA", "La", "PA", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    image = image.convert("RGB" if colour else "L")
    height, width = size
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    return image


def prepare_upright(image: Image.Image, size: HeightWidth, colour: bool, draft: bool) -> Image.Image:
    """`prepare_image` after two steps for photos and scans: the EXIF orientation applied (a phone photo turned
    upright) and 16-bit grey scaled to 8 bits (65535 -> 255, 32896 -> 128) rather than clipped. ``draft``: a
    JPEG much larger than ``size`` is decoded at a reduced scale (its stored, unrotated size considered)."""
    orientation = image.getexif().get(ORIENTATION_TAG, 1)
    if draft:
        height, width = size
        stored_size = (height, width) if orientation in SWAPPED_ORIENTATIONS else (width, height)
        image.draft("RGB" if colour else "L", stored_size)
    if orientation != 1:
        image = ImageOps.exif_transpose(image)
    if image.mode in SIXTEEN_BIT_MODES:
        eight_bit = np.clip(np.rint(np.asarray(image, dtype=np.float64) / SIXTEEN_TO_EIGHT), 0, 255)
        image = Image.fromarray(eight_bit.astype(np.uint8), mode="L")
    return prepare_image(image, size, colour)


def _is_colour(image: Image.Image) -> bool:
    if image.mode in GREY_MODES:
        return False
    if image.mode in ("P", "PA"):  # a palette may hold only greys (common in GIFs)
        palette = image.getpalette() or []
        return any(len({*palette[i : i + 3]}) > 1 for i in range(0, len(palette) - 2, 3))
    return True


__all__ = [
    "DEFAULT_SIZE",
    "IMAGE_FORMATS",
    "IMAGE_SUFFIXES",
    "MAX_PIXELS",
    "MAX_KEPT_SIZE",
    "Survey",
    "UnreadableImage",
    "as_height_width",
    "choose_size",
    "decode_image",
    "decode_images",
    "is_image_name",
    "open_image",
    "prepare_image",
    "prepare_upright",
    "resize_images",
    "skipped_message",
    "survey_images",
]
