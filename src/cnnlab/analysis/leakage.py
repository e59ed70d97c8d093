"""Train/test leakage: test images that are also in the training set, byte for byte or nearly.

**Exact** duplicates have identical pixels (a BLAKE2 digest per image). **Near** duplicates are the same
photograph re-encoded, recoloured, slightly cropped or shifted. Each image gets a 64-bit difference hash (dHash:
its grey version shrunk by area averaging to 8x9 cells, one bit per pair of neighbouring cells, set where the
brightness rises to the right), and every test hash meets every training hash in blocks (XOR and a population
count: MNIST's 10,000 x 60,000 pairs in about 2 s of one core). A pair within ``NEAR_HASH_DISTANCE`` bits is a
near duplicate when the images correlate at ``MIN_CORRELATION`` or more (grey, at most 32x32, each centred and
scaled) and the match is distinctive: at most ``MAX_NEIGHBOURS`` training images lie that close to the test
image. Where more do, the test image sits in a *crowd* of lookalikes (MNIST's ones: thin strokes with the same
64 bits that correlate at up to 0.992 without being one drawing), and only a nearly identical image that stands
out of the crowd counts (``DENSE_MIN_CORRELATION``, ``CROWD_RATIO``). That correlation floor applies to every
pair of images under 16 pixels a side (little more detail than the hash) and of a dataset of lookalikes (its
median test image in a crowd).

The thresholds were set by measuring both datasets, pinned to one core. On cifar10-jpeg every pair within 8
bits that correlates at 0.9 or more is, looked at, the same photograph recoloured, re-cropped or re-encoded (the
kind of near-duplicates Barz and Denzler report in "Do we train on test data?", 2020), while 4 test images in
5 have no training image within 11 bits. On MNIST no test image has a training image closer than a
root-mean-square 7.5 grey levels, yet 3,164 test images have a training image within 4 bits that correlates at
0.9: all lookalikes, all rejected.

``check_and_save`` runs at training time (the run folder keeps leakage.json and thumbnails, so a report reads
no dataset) and in ``cnnlab explore``; ``accuracy_on_duplicates`` splits a run's test accuracy."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab import runs
from cnnlab.errors import CnnlabError

NEAR_HASH_DISTANCE = 8  # bits of 64
MIN_CORRELATION = 0.9
MAX_NEIGHBOURS = 3  # training images within the hash distance of a test image; more: a crowd of lookalikes
LOOKALIKES = 16  # in a crowd, the training images nearest by hash that are compared
DENSE_MIN_CORRELATION = 0.995  # in a crowd: above the most alike distinct MNIST pair (0.992)
CROWD_RATIO = 0.5  # in a crowd, the best match's (1 - correlation) at most this share of the next one's
HASH_ROWS, HASH_COLUMNS = 8, 9  # the grey image shrunk to this; neighbouring columns give 8x8 = 64 bits
SMALL_SIDE = 16  # images smaller than this a side count as near duplicates only when nearly identical
COMPARE_SIDE = 32  # correlations are of grey images shrunk to at most this
MIN_CONTRAST = 1.0  # grey levels of standard deviation below which an image is flat (no correlation)
BLOCK_PAIRS = 1 << 24  # hash pairs compared at once (128 MB of 64-bit XORs), at most 256 test rows
PAIR_CHUNK = 8192  # image pairs correlated at once
MAX_LISTED_PAIRS = 5000  # pairs written to leakage.json; the counts are always complete
THUMBNAIL_PAIRS = 24  # pairs whose thumbnails the report shows
THUMBNAIL_SIDE = 64  # larger images are shrunk to this for the thumbnails
WARN_INFLATION = 0.001  # share x accuracy gap from which a report warns that the test accuracy may be inflated


@dataclass
class Duplicates:
    """Test images with a copy in the training set: ``exact`` and ``near`` pairs as rows (test index, train
    index), the near pairs' hash distances and correlations, how many test images were ambiguous."""

    n_train: int
    n_test: int
    exact: np.ndarray  # (P, 2) int64
    near: np.ndarray  # (Q, 2) int64
    near_distance: np.ndarray  # (Q,) int64, bits
    near_correlation: np.ndarray  # (Q,) float
    crowded: int  # test images among more than MAX_NEIGHBOURS lookalikes (judged by the crowd test)
    seconds: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)  # the thresholds used (``check_settings``)

    def test_indices(self) -> np.ndarray:
        """Sorted test indices with an exact or near duplicate in the training set."""
        return np.union1d(self.exact[:, 0], self.near[:, 0]).astype(np.int64)


def find_duplicates(train_images: np.ndarray, test_images: np.ndarray) -> Duplicates:
    """Exact and near duplicates of ``test_images`` in ``train_images`` (both uint8 (N, C, H, W), one size)."""
    started = time.perf_counter()
    exact = exact_pairs(train_images, test_images)
    train_hashes, test_hashes = difference_hashes(train_images), difference_hashes(test_images)
    lookalikes = min(LOOKALIKES, len(train_hashes))  # a crowd has more than MAX_NEIGHBOURS (>= 4) members
    distinct, dense, neighbours = _candidates(test_hashes, train_hashes, lookalikes)
    lookalike_dataset = bool(len(neighbours)) and float(np.median(neighbours)) > MAX_NEIGHBOURS
    distinct_correlation = pair_correlations(test_images, train_images, distinct[:, 0], distinct[:, 1])
    dense_correlation = pair_correlations(test_images, train_images, dense[:, 0], dense[:, 1])
    kept = np.concatenate([distinct_correlation >= min_correlation(test_images.shape[2:], lookalike_dataset),
                           _distinct_in_crowd(dense, dense_correlation, lookalikes)])
    pairs = np.concatenate([distinct, dense])[kept]
    correlation = np.concatenate([distinct_correlation, dense_correlation])[kept]
    if len(exact) and len(pairs):  # an exact copy is not also a near one
        exact_keys = set(map(tuple, exact.tolist()))
        unique = np.array([tuple(pair) not in exact_keys for pair in pairs[:, :2].tolist()], dtype=bool)
        pairs, correlation = pairs[unique], correlation[unique]
    crowded = len(np.unique(dense[:, 0])) if len(dense) else 0
    return Duplicates(len(train_images), len(test_images), exact, pairs[:, :2], pairs[:, 2],
                      correlation.astype(np.float64), crowded, time.perf_counter() - started,
                      check_settings(test_images.shape[2:], lookalike_dataset))


def check_settings(image_size: tuple[int, ...], lookalike_dataset: bool = False) -> dict[str, Any]:
    """The thresholds of a check of images of ``image_size`` (height, width), as leakage.json records them."""
    return {"hash": f"64-bit difference hash of the grey image shrunk to {HASH_ROWS}x{HASH_COLUMNS}",
            "near_hash_distance": NEAR_HASH_DISTANCE,
            "min_correlation": min_correlation(image_size, lookalike_dataset),
            "max_neighbours": MAX_NEIGHBOURS, "crowd_min_correlation": DENSE_MIN_CORRELATION,
            "crowd_ratio": CROWD_RATIO, "lookalike_dataset": lookalike_dataset}


def min_correlation(image_size: tuple[int, ...], lookalike_dataset: bool = False) -> float:
    """The correlation a distinct near pair needs: MIN_CORRELATION; DENSE_MIN_CORRELATION, as in a crowd, for
    images under SMALL_SIDE a side (little more detail than the 64-bit hash itself: scikit-learn's 8x8 digits
    of one class correlate at 0.9 without being one drawing) and in a dataset of lookalikes (its median test
    image has more than MAX_NEIGHBOURS training images within the hash distance: MNIST's 45 even in a
    2,000-image subset, where a test image with few neighbours is a rare drawing, not a copy; cifar10-jpeg's 0)."""
    return MIN_CORRELATION if min(image_size) >= SMALL_SIDE and not lookalike_dataset else DENSE_MIN_CORRELATION


def exact_pairs(train_images: np.ndarray, test_images: np.ndarray) -> np.ndarray:
    """(test index, train index) rows of identical images, by a 128-bit digest of each image's bytes."""
    by_digest: dict[bytes, list[int]] = {}
    for index, image in enumerate(train_images):
        by_digest.setdefault(_digest(image), []).append(index)
    pairs = [(test, train) for test, image in enumerate(test_images) for train in by_digest.get(_digest(image), ())]
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


def _digest(image: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16).digest()


def difference_hashes(images: np.ndarray) -> np.ndarray:
    """One 64-bit difference hash per image (uint64 (N,)): the grey image shrunk to 8x9 by area averaging,
    a bit per horizontal pair of cells, 1 where the right one is brighter."""
    cells = shrink_grey(images, HASH_ROWS, HASH_COLUMNS)
    bits = (cells[:, :, 1:] > cells[:, :, :-1]).reshape(len(images), -1)
    return np.packbits(bits, axis=1).view(">u8")[:, 0].astype(np.uint64)


def shrink_grey(images: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """uint8 (N, C, H, W) as float32 (N, rows, columns): the mean over channels, shrunk by area averaging
    (two matrix products), in chunks of about 16 million pixels."""
    count, _, height, width = images.shape
    out = np.empty((count, rows, columns), dtype=np.float32)
    if count == 0:
        return out
    down, across = _area_matrix(rows, height), _area_matrix(columns, width).T
    step = max(1, (1 << 24) // max(1, images[0].size))
    for start in range(0, count, step):
        grey = images[start:start + step].astype(np.float32).mean(axis=1)
        out[start:start + step] = down @ grey @ across
    return out


@lru_cache(maxsize=16)
def _area_matrix(size_out: int, size_in: int) -> np.ndarray:
    """(size_out, size_in) weights: each output cell the mean of the input it covers (fractions at edges)."""
    edges = np.arange(size_out + 1) * size_in / size_out
    starts, ends = np.arange(size_in), np.arange(size_in) + 1
    overlap = np.minimum(ends[None, :], edges[1:, None]) - np.maximum(starts[None, :], edges[:-1, None])
    overlap = np.clip(overlap, 0, None)
    return (overlap / overlap.sum(axis=1, keepdims=True)).astype(np.float32)


def hamming_distances(hashes: np.ndarray, others: np.ndarray) -> np.ndarray:
    """(len(hashes), len(others)) uint8 bit distances between 64-bit hashes."""
    different = hashes[:, None] ^ others[None, :]
    if hasattr(np, "bitwise_count"):  # NumPy 2
        return np.bitwise_count(different)
    return _BYTE_BITS[different.view(np.uint8).reshape(*different.shape, 8)].sum(axis=-1, dtype=np.uint8)


_BYTE_BITS = np.array([bin(value).count("1") for value in range(256)], dtype=np.uint8)


def _candidates(test_hashes: np.ndarray, train_hashes: np.ndarray,
                lookalikes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows (test, train, hash distance) of the pairs to confirm: for a test image with at most MAX_NEIGHBOURS
    training images within NEAR_HASH_DISTANCE, those; for one with more (a crowd of lookalikes), the
    ``lookalikes`` nearest by hash, in a group of that many rows. Returns both (distinct, crowded) and each
    test image's number of training images within the distance."""
    distinct, dense, counts = [], [], []
    block = max(1, min(256, BLOCK_PAIRS // max(1, len(train_hashes))))
    for start in range(0, len(test_hashes), block):
        distances = hamming_distances(test_hashes[start:start + block], train_hashes)
        close = distances <= NEAR_HASH_DISTANCE
        neighbours = np.count_nonzero(close, axis=1)
        counts.append(neighbours)
        few = np.flatnonzero((neighbours > 0) & (neighbours <= MAX_NEIGHBOURS))
        rows, columns = np.nonzero(close[few])
        distinct.append(np.stack([few[rows] + start, columns, distances[few[rows], columns]], axis=1))
        many = np.flatnonzero(neighbours > MAX_NEIGHBOURS)
        if len(many):
            # torch's top-k reads a row once; NumPy's argpartition is eight times slower here
            nearest = torch.topk(torch.from_numpy(distances[many]), lookalikes, dim=1, largest=False).indices.numpy()
            rows = np.repeat(many, lookalikes)
            columns = nearest.ravel()
            dense.append(np.stack([rows + start, columns, distances[rows, columns]], axis=1))
    distinct_rows, dense_rows = (np.concatenate(found).astype(np.int64) if found else np.zeros((0, 3), np.int64)
                                 for found in (distinct, dense))
    return distinct_rows, dense_rows, np.concatenate(counts) if counts else np.zeros(0, np.int64)


def _distinct_in_crowd(dense: np.ndarray, correlation: np.ndarray, lookalikes: int) -> np.ndarray:
    """Which rows of ``dense`` (test, train, distance; grouped by test image) are a near duplicate in a crowd of
    lookalikes: the best-correlated of its test image's, at DENSE_MIN_CORRELATION or more, and distinctly
    closer than the next (1 - c1 <= CROWD_RATIO x (1 - c2)): a copy stands out, a lookalike among lookalikes
    does not."""
    kept = np.zeros(len(dense), dtype=bool)
    if not len(dense):
        return kept
    groups = correlation.reshape(-1, lookalikes)
    order = np.argsort(-groups, axis=1)
    best = groups[np.arange(len(groups)), order[:, 0]]
    second = groups[np.arange(len(groups)), order[:, 1]]
    stands_out = (best >= DENSE_MIN_CORRELATION) & (1 - best <= CROWD_RATIO * (1 - second))
    kept[(np.arange(len(groups)) * lookalikes + order[:, 0])[stands_out]] = True
    return kept


def pair_correlations(test_images: np.ndarray, train_images: np.ndarray, test_index: np.ndarray,
                      train_index: np.ndarray) -> np.ndarray:
    """Pearson correlation of each pair's grey images, shrunk to at most COMPARE_SIDE a side (each image
    shrunk once however many pairs it is in)."""
    if not len(test_index):
        return np.zeros(0)
    height, width = test_images.shape[2:]
    rows, columns = min(height, COMPARE_SIDE), min(width, COMPARE_SIDE)
    tests, test_at = np.unique(test_index, return_inverse=True)
    trains, train_at = np.unique(train_index, return_inverse=True)
    first = _centred(shrink_grey(test_images[tests], rows, columns))
    second = _centred(shrink_grey(train_images[trains], rows, columns))
    test_at, train_at = test_at.ravel(), train_at.ravel()
    correlation = np.empty(len(test_at), dtype=np.float32)
    for start in range(0, len(test_at), PAIR_CHUNK):  # gathered a chunk at a time: bounded memory
        chunk = slice(start, start + PAIR_CHUNK)
        correlation[chunk] = np.einsum("ij,ij->i", first[test_at[chunk]], second[train_at[chunk]])
    return correlation.astype(np.float64)


def _centred(cells: np.ndarray) -> np.ndarray:
    """Each image's grey cells centred and scaled to unit length; a flat image (standard deviation under
    MIN_CONTRAST grey levels) becomes zeros, so it correlates with nothing: its float rounding is no pattern."""
    flat = cells.reshape(len(cells), -1)
    flat = flat - flat.mean(axis=1, keepdims=True)
    length = np.sqrt(np.einsum("ij,ij->i", flat, flat))[:, None]
    flat_images = length < MIN_CONTRAST * np.sqrt(flat.shape[1])
    return np.where(flat_images, 0.0, flat / np.maximum(length, 1e-9)).astype(np.float32)


def accuracy_on_duplicates(duplicates: dict[str, Any], correct: np.ndarray) -> dict[str, Any]:
    """The test accuracy split between test images with a duplicate and the rest (``correct``: one bool per
    test image), and how much the duplicates may inflate it: share x (accuracy on them - on the rest), which
    is what the accuracy would lose if they were scored like the others."""
    correct = np.asarray(correct, dtype=bool)
    flagged = np.zeros(len(correct), dtype=bool)
    indices = [index for index in duplicates["test_indices"] if isinstance(index, int) and 0 <= index < len(correct)]
    flagged[indices] = True
    share = float(flagged.mean()) if len(correct) else 0.0
    on_duplicates = float(correct[flagged].mean()) if flagged.any() else None
    on_rest = float(correct[~flagged].mean()) if (~flagged).any() else None
    gap = on_duplicates - on_rest if on_duplicates is not None and on_rest is not None else 0.0
    inflation = share * gap
    return {"count": int(flagged.sum()), "share": share, "accuracy_on_duplicates": on_duplicates,
            "accuracy_on_rest": on_rest, "inflation": inflation,
            "warn": bool(inflation >= WARN_INFLATION)}


def summarize(duplicates: Duplicates, train_labels: np.ndarray, test_labels: np.ndarray) -> dict[str, Any]:
    """``duplicates`` as leakage.json holds it: the settings, the counts, every test index with a duplicate,
    and the pairs (exact first, then near by hash distance) with both labels, up to MAX_LISTED_PAIRS."""
    pairs = ordered_pairs(duplicates)
    listed = [{"kind": kind, "test": test, "train": train, "hash_distance": distance,
               "correlation": None if correlation is None else round(correlation, 4),
               "test_label": int(test_labels[test]), "train_label": int(train_labels[train])}
              for kind, test, train, distance, correlation in pairs[:MAX_LISTED_PAIRS]]
    disagreements = sum(int(test_labels[test]) != int(train_labels[train]) for _, test, train, _, _ in pairs)
    return {"cnnlab": "leakage", "settings": duplicates.settings, "n_train": duplicates.n_train,
            "n_test": duplicates.n_test, "seconds": round(duplicates.seconds, 3), "exact_pairs": len(duplicates.exact),
            "near_pairs": len(duplicates.near), "crowded_test_images": duplicates.crowded,
            "label_disagreements": disagreements, "test_indices": duplicates.test_indices().tolist(),
            "pairs": listed, "pairs_listed": len(listed)}


def ordered_pairs(duplicates: Duplicates) -> list[tuple[str, int, int, int, float | None]]:
    """(kind, test, train, hash distance, correlation) of every pair: exact ones, then near ones closest first."""
    exact = [("exact", int(test), int(train), 0, None) for test, train in duplicates.exact]
    order = np.lexsort((-duplicates.near_correlation, duplicates.near_distance))
    near = [("near", int(duplicates.near[k, 0]), int(duplicates.near[k, 1]), int(duplicates.near_distance[k]),
             float(duplicates.near_correlation[k])) for k in order]
    return exact + near


def save_duplicates(folder: Path, duplicates: Duplicates, train_images: np.ndarray, test_images: np.ndarray,
                    train_labels: np.ndarray, test_labels: np.ndarray) -> dict[str, Any]:
    """Write leakage.json (``summarize``) and leakage.npz (thumbnails of the first THUMBNAIL_PAIRS pairs:
    ``test``, ``train`` uint8 (M, C, h, w)) into ``folder``; return the summary."""
    summary = summarize(duplicates, train_labels, test_labels)
    runs.write_json_atomic(Path(folder) / runs.LEAKAGE_FILE, summary)
    shown = summary["pairs"][:THUMBNAIL_PAIRS]
    test_index = np.array([pair["test"] for pair in shown], dtype=np.int64)
    train_index = np.array([pair["train"] for pair in shown], dtype=np.int64)
    runs.write_npz_atomic(Path(folder) / runs.LEAKAGE_EXAMPLES_FILE, test=thumbnails(test_images[test_index]),
                          train=thumbnails(train_images[train_index]))
    return summary


def check_and_save(folder: Path, train_images: np.ndarray, test_images: np.ndarray, train_labels: np.ndarray,
                   test_labels: np.ndarray) -> dict[str, Any]:
    """``find_duplicates`` of the test images in the training images, saved into ``folder``: what a run
    and ``cnnlab explore`` call."""
    duplicates = find_duplicates(train_images, test_images)
    return save_duplicates(folder, duplicates, train_images, test_images, train_labels, test_labels)


def thumbnails(images: np.ndarray) -> np.ndarray:
    """uint8 (N, C, H, W) shrunk by area averaging so neither side exceeds THUMBNAIL_SIDE (kept when smaller)."""
    count, channels, height, width = images.shape
    scale = min(1.0, THUMBNAIL_SIDE / max(height, width, 1))
    if scale == 1.0 or count == 0:
        return np.ascontiguousarray(images, dtype=np.uint8)
    rows, columns = max(1, round(height * scale)), max(1, round(width * scale))
    down, across = _area_matrix(rows, height), _area_matrix(columns, width).T
    shrunk = down @ images.astype(np.float32).reshape(count * channels, height, width) @ across
    return np.clip(np.rint(shrunk), 0, 255).astype(np.uint8).reshape(count, channels, rows, columns)


def read_duplicates(folder: Path) -> tuple[dict[str, Any], dict[str, np.ndarray] | None] | None:
    """leakage.json and its thumbnails from ``folder`` (None for the thumbnails when absent), or None when
    the folder has no leakage.json (a run trained before cnnlab checked). CnnlabError names a damaged file."""
    path = Path(folder) / runs.LEAKAGE_FILE
    if not path.is_file():
        return None
    try:
        summary = runs.read_json(path)
    except ValueError as error:
        raise CnnlabError(f"{path} is damaged ({error}); delete it, or retrain to write it again.") from None
    if not isinstance(summary, dict) or summary.get("cnnlab") != "leakage" \
            or not isinstance(summary.get("test_indices"), list) or not isinstance(summary.get("pairs"), list) \
            or not all(isinstance(pair, dict) for pair in summary["pairs"]):
        raise CnnlabError(f"{path} is not cnnlab's duplicate check (or is damaged); delete it, or retrain to write "
                          "it again.")
    examples_path = Path(folder) / runs.LEAKAGE_EXAMPLES_FILE
    return summary, (runs.load_npz(examples_path) if examples_path.is_file() else None)
