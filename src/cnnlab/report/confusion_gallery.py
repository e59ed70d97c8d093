"""The confusion matrix as an HTML table whose off-diagonal cells link to the test images of their
(true, predicted) pair, and those images as one gallery section per pair: plain links and embedded
thumbnails, no script.

The report reads only the run folder: training saves, besides the images the other sections show, up to
``PER_PAIR`` images of every confused pair (``gallery_indices``, most confident errors first, pairs most
frequent first, within ``GALLERY_BYTES``) into examples.npz. A run saved before that shows the pairs'
images it happens to hold."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image as PilImage

from cnnlab import runs
from cnnlab.analysis.interpretation import Interpretation, describe_confused
from cnnlab.analysis.run_files import lookup_images
from cnnlab.report import plots
from cnnlab.report.document import (
    Block, BulletList, Callout, Cell, FigureWriter, Gallery, Heading, ImageRow, Inline, Link, Paragraph, Table,
    Thumbnail, format_probability,
)

PER_PAIR = 8  # images saved and shown per confused pair
GALLERY_BYTES = 8 << 20  # at most this many bytes of pair images are saved with a run
MAX_TABLE_CLASSES = 40  # beyond this the matrix is a figure only; the list of pairs still links the galleries
THUMBNAIL_CSS_PIXELS = 96  # the longer side of a gallery thumbnail on the page
MATRIX_ANCHOR = "confusion-matrix"
GALLERIES_ANCHOR = "confused-pair-images"


def pair_anchor(true_class: int, predicted_class: int) -> str:
    return f"pair-{true_class}-{predicted_class}"


def confused_pairs(matrix: np.ndarray) -> list[tuple[int, int, int]]:
    """Off-diagonal (true, predicted, count) with a count above 0, most frequent first (ties in class order,
    as ``Interpretation.most_confused``)."""
    counts = np.array(matrix, copy=True)
    np.fill_diagonal(counts, 0)
    true_index, predicted_index = np.nonzero(counts > 0)
    order = np.argsort(-counts[true_index, predicted_index], kind="stable")
    return [(int(true_index[i]), int(predicted_index[i]), int(counts[true_index[i], predicted_index[i]]))
            for i in order]


def pair_members(interpretation: Interpretation) -> dict[tuple[int, int], np.ndarray]:
    """The test indices of each confused pair, the most confident errors first (ties by index)."""
    wrong = np.flatnonzero(interpretation.predictions != interpretation.labels)
    keys = interpretation.labels[wrong] * interpretation.n_classes + interpretation.predictions[wrong]
    ordered = wrong[np.lexsort((wrong, -interpretation.p_pred[wrong], keys))]
    ordered_keys = interpretation.labels[ordered] * interpretation.n_classes + interpretation.predictions[ordered]
    starts = np.flatnonzero(np.r_[True, ordered_keys[1:] != ordered_keys[:-1]]) if len(ordered) else np.array([], int)
    bounds = np.r_[starts, len(ordered)]
    return {divmod(int(ordered_keys[start]), interpretation.n_classes): ordered[start:end]
            for start, end in zip(bounds[:-1], bounds[1:])}


def gallery_indices(interpretation: Interpretation, image_bytes: int, per_pair: int = PER_PAIR,
                    max_bytes: int = GALLERY_BYTES) -> np.ndarray:
    """Sorted test indices to save for the galleries: up to ``per_pair`` per confused pair, the most frequent
    pairs first, until ``max_bytes`` of images of ``image_bytes`` each."""
    members = pair_members(interpretation)
    budget = max_bytes // max(int(image_bytes), 1)
    chosen: list[np.ndarray] = []
    for true_class, predicted_class, _ in confused_pairs(interpretation.confusion()):
        take = members[(true_class, predicted_class)][:min(per_pair, budget)]
        if not len(take):
            break
        chosen.append(take)
        budget -= len(take)
    return np.unique(np.concatenate(chosen)).astype(np.int64) if chosen else np.zeros(0, np.int64)


def confusion_section(interpretation: Interpretation, figures: FigureWriter,
                      galleries: dict[tuple[int, int], list[Thumbnail]]) -> list[Block]:
    """The "Confusion matrix" section: the linked table (up to ``MAX_TABLE_CLASSES`` classes), the count and
    normalised figures, and the most confused pairs, each linking its gallery when there is one."""
    names = interpretation.class_names
    matrix = interpretation.confusion()
    blocks: list[Block] = [Heading("Confusion matrix", anchor=MATRIX_ANCHOR)]
    never = [names[label] for label in range(len(names))
             if not (interpretation.predictions == label).any() and (interpretation.labels == label).any()]
    if never:
        blocks.append(Callout(
            f"The model never predicts {', '.join(never)}. When whole classes are never predicted, look for a "
            "softmax applied before a cross-entropy loss (report 000's PyTorch part saw exactly this), a learning "
            "rate too high, or too few epochs.", "warning"))
    if len(names) <= MAX_TABLE_CLASSES:
        blocks += [Paragraph("Rows: true class; columns: predicted class; the shade is the share of the row. "
                             "A linked count opens the test images of that pair."),
                   _matrix_table(interpretation, matrix, galleries)]
    else:
        blocks.append(Paragraph(f"With {len(names)} classes the matrix is shown as figures only; the most "
                                "confused pairs below link to their images."))
    blocks.append(ImageRow([
        figures.add("confusion", lambda: plots.plot_confusion(matrix, names),
                    "Counts (rows: true class, columns: predicted)"),
        figures.add("confusion_normalized", lambda: plots.plot_confusion(
            interpretation.confusion(normalize=True), names, normalize=True), "Each row divided by its total"),
    ]))
    pairs = confused_pairs(matrix)[:10]
    blocks.append(Heading("Most confused pairs", 3))
    if not pairs:
        return blocks + [Paragraph("No test image was misclassified.")]
    items: list[Inline] = []
    for true_class, predicted_class, count in pairs:
        text = describe_confused((names[true_class], names[predicted_class], count))
        linked = (true_class, predicted_class) in galleries
        items.append(Link(text, "#" + pair_anchor(true_class, predicted_class)) if linked else text)
    return blocks + [BulletList(items, ordered=True)]


def _matrix_table(interpretation: Interpretation, matrix: np.ndarray,
                  galleries: dict[tuple[int, int], list[Thumbnail]]) -> Table:
    totals = matrix.sum(axis=1)
    rows = []
    for true_class, name in enumerate(interpretation.class_names):
        row: list = [name]
        for predicted_class in range(len(interpretation.class_names)):
            count = int(matrix[true_class, predicted_class])
            share = count / totals[true_class] if totals[true_class] else 0.0
            content: Inline = str(count) if count or true_class == predicted_class else ""
            if (true_class, predicted_class) in galleries:
                content = Link(str(count), "#" + pair_anchor(true_class, predicted_class))
            row.append(Cell(content, shade=share, marked=true_class == predicted_class))
        rows.append(row)
    return Table(["true \\ predicted", *interpretation.class_names], rows, row_headers=True, kind="matrix")


def pair_galleries(interpretation: Interpretation,
                   examples: dict[str, np.ndarray] | None) -> dict[tuple[int, int], list[Thumbnail]]:
    """Thumbnails of each confused pair's saved test images (up to ``PER_PAIR``, the most confident errors
    first); pairs with no saved image are left out."""
    if examples is None:
        return {}
    galleries = {}
    for pair, members in pair_members(interpretation).items():
        images, found = lookup_images(examples, members)
        shown = members[found][:PER_PAIR]
        if len(shown):
            galleries[pair] = [_thumbnail(image, f"#{index}: {format_probability(interpretation.p_pred[index])}")
                               for image, index in zip(images[:PER_PAIR], shown)]
    return galleries


def gallery_section(interpretation: Interpretation, galleries: dict[tuple[int, int], list[Thumbnail]],
                    has_examples: bool) -> list[Block]:
    """One heading and gallery per confused pair, the most frequent first; each links back to the matrix."""
    if not interpretation.n_classes or not (interpretation.predictions != interpretation.labels).any():
        return []
    blocks: list[Block] = [Heading("Images of the confused pairs", anchor=GALLERIES_ANCHOR)]
    if not has_examples:
        return blocks + [Callout(f"No {runs.EXAMPLES_FILE} in the run directory: no images to show.")]
    blocks.append(Paragraph(f"Up to {PER_PAIR} test images per pair, the most confident errors first; under "
                            "each, its test index and the probability of the wrong prediction."))
    names = interpretation.class_names
    for true_class, predicted_class, count in confused_pairs(interpretation.confusion()):
        thumbnails = galleries.get((true_class, predicted_class))
        if not thumbnails:
            continue
        blocks += [
            Heading(f"{names[true_class]} predicted as {names[predicted_class]}", 3,
                    anchor=pair_anchor(true_class, predicted_class), listed=False),
            Paragraph([f"{count} test image{'s' if count != 1 else ''}, {len(thumbnails)} shown. ",
                       Link("Back to the matrix", "#" + MATRIX_ANCHOR)]),
            Gallery(thumbnails),
        ]
    missing = sum(1 for true_class, predicted_class, _ in confused_pairs(interpretation.confusion())
                  if (true_class, predicted_class) not in galleries)
    if missing:
        blocks.append(Paragraph(f"{missing} less frequent pair{'s have' if missing != 1 else ' has'} no saved "
                                f"images (the run keeps at most {GALLERY_BYTES >> 20} MiB of them)."))
    return blocks


def _thumbnail(image: np.ndarray, caption: str) -> Thumbnail:
    """A (C, H, W) uint8 image as a PNG no larger than the thumbnail box; small images are enlarged on
    the page by a whole factor (drawn pixelated), large ones are shrunk before encoding."""
    pixels = np.ascontiguousarray(np.transpose(image, (1, 2, 0)))
    picture = PilImage.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    height, width = pixels.shape[:2]
    if max(height, width) > THUMBNAIL_CSS_PIXELS:
        picture.thumbnail((THUMBNAIL_CSS_PIXELS, THUMBNAIL_CSS_PIXELS), PilImage.Resampling.LANCZOS)
        shown = picture.size
    else:
        factor = THUMBNAIL_CSS_PIXELS // max(height, width)
        shown = (width * factor, height * factor)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return Thumbnail(buffer.getvalue(), caption, shown[0], shown[1])
