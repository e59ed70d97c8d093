"""Analysis of a finished run, built once from its saved predictions.

``Interpretation`` holds the test-set probabilities and labels; the confusion matrix,
per-class scores, most-confused pairs and worst-classified images are cheap views on it,
so no view ever re-runs the model; ``confusion_matrix`` is the one confusion count (probes use it
too). ``diagnose_curves`` reads a training history.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab import runs
from cnnlab.errors import CnnlabError

# Probabilities are clipped before the log so one confident mistake gives a large
# but finite loss (the clip Keras applies in its categorical cross-entropy).
PROBABILITY_FLOOR = 1e-7
# How many leading test images get a prediction bar chart in the report.
N_PREDICTION_EXAMPLES = 6
# Fewer epochs (with validation) than this show no trend: "still improving" or "converged" would be guesses.
MIN_TREND_EPOCHS = 3


@dataclass
class Interpretation:
    """Test-set predictions of one model and the views a report needs."""

    probabilities: np.ndarray  # (N, K) float, rows sum to 1
    labels: np.ndarray  # (N,) int, true class indices
    class_names: list[str]
    predictions: np.ndarray = field(init=False)  # (N,) argmax class indices
    p_true: np.ndarray = field(init=False)  # (N,) probability given to the true class
    p_pred: np.ndarray = field(init=False)  # (N,) probability given to the predicted class

    def __post_init__(self) -> None:
        rows = np.arange(len(self.labels))
        self.predictions = self.probabilities.argmax(axis=1)
        self.p_true = self.probabilities[rows, self.labels]
        self.p_pred = self.probabilities[rows, self.predictions]
        self._confusion: np.ndarray | None = None

    @classmethod
    def from_arrays(cls, probabilities: Any, labels: Any, class_names: list[str]) -> "Interpretation":
        """Check types, shapes and class indices, then build the interpretation."""
        try:
            probabilities = np.asarray(probabilities, dtype=np.float64)
            labels = np.asarray(labels)
        except (ValueError, TypeError) as error:
            raise CnnlabError(f"Predictions must be numbers ({str(error)[:200]}). Re-run the evaluation to "
                              "rewrite them.") from None
        if labels.dtype.kind not in "iu" and not (labels.dtype.kind == "f" and np.all(labels == np.round(labels))):
            raise CnnlabError(f"Labels must be class indices (integers), not {labels.dtype} values. Re-run the "
                              "evaluation to rewrite them.")
        labels = labels.astype(np.int64)
        class_names = [str(name) for name in class_names]
        if not class_names:
            raise CnnlabError("Predictions name no class. Re-run the evaluation to rewrite them.")
        if probabilities.ndim != 2 or labels.ndim != 1 or len(probabilities) != len(labels):
            raise CnnlabError(
                f"Predictions must be probabilities shaped (N, K) with labels shaped (N,); got "
                f"{probabilities.shape} and {labels.shape}. Re-run the evaluation to rewrite them."
            )
        if probabilities.shape[1] != len(class_names):
            raise CnnlabError(
                f"Predictions have {probabilities.shape[1]} columns but {len(class_names)} class "
                "names. Re-run the evaluation to rewrite them."
            )
        if len(labels) and (labels.min() < 0 or labels.max() >= len(class_names)):
            raise CnnlabError(
                f"Labels must lie in 0..{len(class_names) - 1}; found {labels.min()}..{labels.max()}."
            )
        return cls(probabilities, labels, class_names)

    @classmethod
    def from_run(cls, run_dir: Path) -> "Interpretation":
        """Build from ``predictions.npz`` in a run directory."""
        path = Path(run_dir) / runs.PREDICTIONS_FILE
        if not path.exists():
            raise CnnlabError(
                f"{path} does not exist: the run has no saved test predictions. "
                "Finish the training (or re-run `cnnlab train`) to write them."
            )
        try:
            arrays = runs.load_npz(path)
            names = arrays["class_names"]
            if names.ndim != 1:
                raise CnnlabError(f"class_names should be a list of names, shaped (K,), not {names.shape}")
            return cls.from_arrays(arrays["probabilities"], arrays["labels"], list(names))
        except KeyError as missing:
            raise CnnlabError(f"{path} lacks the array {missing}; re-run the evaluation.") from None
        except CnnlabError as error:
            message = str(error)
            raise CnnlabError(message if message.startswith(str(path)) else f"{path}: {message}") from None

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.predictions == self.labels)) if len(self.labels) else float("nan")

    @property
    def loss(self) -> float:
        """Mean cross-entropy of the true class, from the saved probabilities."""
        if not len(self.labels):
            return float("nan")
        return float(-np.mean(np.log(np.clip(self.p_true, PROBABILITY_FLOOR, 1.0))))

    def confusion(self, normalize: bool = False) -> np.ndarray:
        """Counts with rows = true class, columns = predicted class; ``normalize``
        divides each row by its total (rows of absent classes stay 0)."""
        if self._confusion is None:
            self._confusion = confusion_matrix(self.labels, self.predictions, self.n_classes)
        if not normalize:
            return self._confusion.copy()
        totals = self._confusion.sum(axis=1, keepdims=True)
        return np.divide(self._confusion, totals, out=np.zeros(self._confusion.shape), where=totals > 0)

    def per_class(self) -> list[dict[str, Any]]:
        """One row per class: support, accuracy (= recall), precision, recall, F1;
        scores whose denominator is 0 are 0, as in scikit-learn's zero_division=0."""
        matrix = self.confusion()
        hits = np.diag(matrix).astype(np.float64)
        support = matrix.sum(axis=1)
        predicted = matrix.sum(axis=0)
        precision = _safe_divide(hits, predicted)
        recall = _safe_divide(hits, support)
        f1 = _safe_divide(2 * precision * recall, precision + recall)
        return [
            {
                "class": name,
                "support": int(support[k]),
                "accuracy": float(recall[k]),
                "precision": float(precision[k]),
                "recall": float(recall[k]),
                "f1": float(f1[k]),
            }
            for k, name in enumerate(self.class_names)
        ]

    def macro_averages(self) -> dict[str, float]:
        """Unweighted means over classes of precision, recall and F1."""
        rows = self.per_class()
        return {key: float(np.mean([row[key] for row in rows])) for key in ("precision", "recall", "f1")}

    def most_confused(self, k: int = 10, min_count: int = 1) -> list[tuple[str, str, int]]:
        """Off-diagonal (true, predicted, count) pairs, most frequent first;
        ties keep class order."""
        matrix = self.confusion()
        np.fill_diagonal(matrix, 0)
        true_index, pred_index = np.nonzero(matrix >= max(min_count, 1))
        counts = matrix[true_index, pred_index]
        order = np.argsort(-counts, kind="stable")[:k]
        return [
            (self.class_names[true_index[i]], self.class_names[pred_index[i]], int(counts[i]))
            for i in order
        ]

    def worst(self, n: int = 10) -> list[dict[str, Any]]:
        """The misclassified images whose TRUE class got the lowest probability,
        rank 1 = worst (not ranked by the predicted class's probability)."""
        wrong = np.flatnonzero(self.predictions != self.labels)
        order = wrong[np.lexsort((wrong, self.p_true[wrong]))]
        return self._rows(order[:n])

    def confident_errors(self, n: int = 10) -> list[dict[str, Any]]:
        """Misclassified images, highest probability of the (wrong) prediction first."""
        wrong = np.flatnonzero(self.predictions != self.labels)
        order = wrong[np.lexsort((wrong, -self.p_pred[wrong]))]
        return self._rows(order[:n])

    def least_confident_correct(self, n: int = 10) -> list[dict[str, Any]]:
        """Correctly classified images, lowest probability of the prediction first."""
        right = np.flatnonzero(self.predictions == self.labels)
        order = right[np.lexsort((right, self.p_pred[right]))]
        return self._rows(order[:n])

    def example_indices(self, n: int = 50) -> np.ndarray:
        """Sorted test indices whose images the report shows: the worst, most confident
        errors and least confident correct ``n`` each, and the first few test images."""
        chosen = [np.arange(min(N_PREDICTION_EXAMPLES, len(self.labels)))]
        for view in (self.worst, self.confident_errors, self.least_confident_correct):
            chosen.append(np.array([row["index"] for row in view(n)], dtype=np.int64))
        return np.unique(np.concatenate(chosen)).astype(np.int64)

    def _rows(self, indices: np.ndarray) -> list[dict[str, Any]]:
        return [
            {
                "rank": rank,
                "index": int(i),
                "predicted": self.class_names[self.predictions[i]],
                "true": self.class_names[self.labels[i]],
                "p_true": float(self.p_true[i]),
                "p_pred": float(self.p_pred[i]),
            }
            for rank, i in enumerate(indices, start=1)
        ]


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts (n_classes, n_classes), rows = true class, columns = predicted class."""
    flat = np.asarray(labels, dtype=np.int64) * n_classes + np.asarray(predictions, dtype=np.int64)
    return np.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def describe_confused(pair: tuple[str, str, int]) -> str:
    """Text form of a most-confused pair: ``"9 predicted as 4: 42"``."""
    true_name, pred_name, count = pair
    return f"{true_name} predicted as {pred_name}: {count}"


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    numerator = np.asarray(numerator, dtype=np.float64)
    return np.divide(numerator, denominator, out=np.zeros(numerator.shape), where=denominator > 0)


def diagnose_curves(history: list[dict[str, float]]) -> str:
    """One line reading of a training history: diverged, overfitting, still improving, converged, or
    no validation data. Epochs are 1-based. Epochs without a validation pass (``train.validate_every``
    above 1) are skipped, not read as a loss that became NaN."""
    if not history:
        return "no history recorded: the run stopped before its first epoch ended."
    epochs = [int(row.get("epoch", i + 1)) for i, row in enumerate(history)]
    train = _column(history, "train_loss")
    val = _column(history, "val_loss")
    validated = _validated_epochs(history)
    diverged_at = _first_divergence(train, val, validated)
    if diverged_at is not None:
        return f"diverged at epoch {epochs[diverged_at]} (loss became NaN/inf)."
    if not validated.any():
        trend = ("too few epochs to read a trend" if len(train) < MIN_TREND_EPOCHS
                 else "still falling" if _is_improving(train) else "flat")
        return (
            f"no validation data: training loss {train[-1]:.4g} at epoch {epochs[-1]} ({trend}); "
            "overfitting cannot be judged without a validation split."
        )
    epochs = [epoch for epoch, kept in zip(epochs, validated) if kept]
    train, val = train[validated], val[validated]
    best = int(np.argmin(val))
    last = len(val) - 1
    minimum, end = val[best], val[last]
    if len(val) < MIN_TREND_EPOCHS:
        count = f"{len(val)} epoch{'s' if len(val) > 1 else ''} with validation"
        return (f"too few epochs to read a trend ({count}; validation loss {end:.4g} at epoch {epochs[last]}): "
                f"train at least {MIN_TREND_EPOCHS} to tell improving, converged and overfitting apart.")
    if best < last and end > minimum + max(0.02, 0.05 * minimum) and train[last] < train[best]:
        return (
            f"overfitting from epoch {epochs[best]}: validation loss rising while training loss "
            f"falls (validation loss {minimum:.4g} at epoch {epochs[best]}, {end:.4g} at epoch "
            f"{epochs[last]})."
        )
    if _is_improving(val):
        return (
            f"still improving at the last epoch ({epochs[last]}, validation loss {end:.4g}): "
            "more epochs would likely help."
        )
    return (
        f"converged: validation loss flat over the last epochs (lowest {minimum:.4g} at epoch "
        f"{epochs[best]}, {end:.4g} at epoch {epochs[last]})."
    )


def _column(history: list[dict[str, float]], key: str) -> np.ndarray:
    return np.array([row.get(key, math.nan) for row in history], dtype=np.float64)


def _validated_epochs(history: list[dict[str, float]]) -> np.ndarray:
    """Which epochs had a validation pass. Without one, history.csv leaves both validation columns empty
    (NaN); a pass whose loss became NaN still has a finite accuracy. Histories without accuracies fall back
    to the loss: NaN after earlier finite values then reads as a pass that diverged."""
    val_loss, val_accuracy = _column(history, "val_loss"), _column(history, "val_accuracy")
    if np.isfinite(val_accuracy).any():
        return np.isfinite(val_accuracy) | np.isfinite(val_loss)
    return ~np.isnan(val_loss) | (np.cumsum(np.isfinite(val_loss)) > 0)


def _first_divergence(train: np.ndarray, val: np.ndarray, validated: np.ndarray) -> int | None:
    """Index of the first epoch whose training loss is NaN/inf, or that was validated with a NaN/inf loss."""
    bad = ~np.isfinite(train) | (validated & ~np.isfinite(val))
    hits = np.flatnonzero(bad)
    return int(hits[0]) if len(hits) else None


def _is_improving(losses: np.ndarray) -> bool:
    """True when the last epoch is (near) the best and the loss fell clearly over the
    last few epochs; fewer than MIN_TREND_EPOCHS say nothing either way (False)."""
    if len(losses) < MIN_TREND_EPOCHS:
        return False
    window = max(1, min(3, len(losses) // 3))
    before, end = losses[-1 - window], losses[-1]
    near_best = end <= np.nanmin(losses) + 0.01 * abs(np.nanmin(losses))
    return bool(near_best and before - end > 0.02 * abs(before))
