"""Analysis views checked on hand-built predictions and against scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, f1_score, log_loss, precision_recall_fscore_support

from cnnlab import runs
from cnnlab.analysis.interpretation import Interpretation, describe_confused, diagnose_curves
from cnnlab.errors import CnnlabError

NAMES = ["cat", "dog", "bird"]
# index: probabilities, true label. Errors are 1, 2, 3, 4; ranked by P(true) the worst
# are 2 (0.02), 3 (0.10), 4 (0.33), 1 (0.45); ranked by P(predicted) they would be
# 3 (0.85), 2 (0.58), 1 (0.50), 4 (0.34), so the two rankings differ.
HAND_PROBABILITIES = [
    [0.70, 0.20, 0.10],  # 0: cat, right
    [0.50, 0.45, 0.05],  # 1: dog predicted cat
    [0.40, 0.02, 0.58],  # 2: dog predicted bird
    [0.10, 0.85, 0.05],  # 3: cat predicted dog
    [0.34, 0.33, 0.33],  # 4: bird predicted cat
    [0.05, 0.15, 0.80],  # 5: bird, right
    [0.20, 0.55, 0.25],  # 6: dog, right
]
HAND_LABELS = [0, 1, 1, 0, 2, 2, 1]


@pytest.fixture
def hand() -> Interpretation:
    return Interpretation.from_arrays(HAND_PROBABILITIES, HAND_LABELS, NAMES)


def random_predictions(n: int = 400, n_classes: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    probabilities = rng.dirichlet(np.ones(n_classes), size=n)
    labels = rng.integers(0, n_classes - 1, size=n)  # the last class never occurs
    return probabilities, labels, [f"class{k}" for k in range(n_classes)]


def test_worst_ranks_by_probability_of_true_class(hand):
    worst = hand.worst(10)
    assert [row["index"] for row in worst] == [2, 3, 4, 1]
    assert [row["rank"] for row in worst] == [1, 2, 3, 4]
    assert worst[0] == {"rank": 1, "index": 2, "predicted": "bird", "true": "dog",
                        "p_true": pytest.approx(0.02), "p_pred": pytest.approx(0.58)}
    assert [row["index"] for row in hand.worst(2)] == [2, 3]


def test_confident_errors_and_least_confident_correct(hand):
    assert [row["index"] for row in hand.confident_errors(10)] == [3, 2, 1, 4]
    assert [row["index"] for row in hand.least_confident_correct(10)] == [6, 0, 5]


def test_accuracy_predictions_and_example_indices(hand):
    assert hand.predictions.tolist() == [0, 0, 2, 1, 0, 2, 1]
    assert hand.accuracy == pytest.approx(3 / 7)
    # The first 6 test images, plus worst (2), most confident error (3), least confident right (6).
    assert hand.example_indices(1).tolist() == [0, 1, 2, 3, 4, 5, 6]


def test_confusion_matches_sklearn():
    probabilities, labels, names = random_predictions()
    interpretation = Interpretation.from_arrays(probabilities, labels, names)
    expected = confusion_matrix(labels, probabilities.argmax(1), labels=range(len(names)))
    np.testing.assert_array_equal(interpretation.confusion(), expected)


def test_normalised_confusion_rows_sum_to_one_or_zero():
    probabilities, labels, names = random_predictions()
    normalised = Interpretation.from_arrays(probabilities, labels, names).confusion(normalize=True)
    np.testing.assert_allclose(normalised.sum(axis=1), [1, 1, 1, 1, 1, 0])


def test_per_class_matches_sklearn():
    probabilities, labels, names = random_predictions()
    interpretation = Interpretation.from_arrays(probabilities, labels, names)
    predictions = probabilities.argmax(1)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predictions, labels=range(len(names)), zero_division=0)
    rows = interpretation.per_class()
    np.testing.assert_allclose([row["precision"] for row in rows], precision)
    np.testing.assert_allclose([row["recall"] for row in rows], recall)
    np.testing.assert_allclose([row["accuracy"] for row in rows], recall)
    np.testing.assert_allclose([row["f1"] for row in rows], f1)
    assert [row["support"] for row in rows] == support.tolist()
    macro = f1_score(labels, predictions, labels=range(len(names)), average="macro", zero_division=0)
    assert interpretation.macro_averages()["f1"] == pytest.approx(macro)


def test_loss_matches_sklearn_log_loss():
    probabilities, labels, names = random_predictions()
    interpretation = Interpretation.from_arrays(probabilities, labels, names)
    assert interpretation.loss == pytest.approx(log_loss(labels, probabilities, labels=range(len(names))), rel=1e-6)


def test_most_confused_order_and_text():
    names = ["zero", "one", "two"]
    # (true, predicted) pairs: 2→1 three times, 0→2 and 1→0 twice, 0→1 once, plus hits.
    pairs = [(2, 1)] * 3 + [(0, 2)] * 2 + [(1, 0)] * 2 + [(0, 1)] + [(0, 0), (1, 1), (2, 2)]
    labels = [true for true, _ in pairs]
    probabilities = np.eye(3)[[predicted for _, predicted in pairs]]
    interpretation = Interpretation.from_arrays(probabilities, labels, names)
    assert interpretation.most_confused() == [
        ("two", "one", 3), ("zero", "two", 2), ("one", "zero", 2), ("zero", "one", 1)]
    assert interpretation.most_confused(min_count=2) == [("two", "one", 3), ("zero", "two", 2), ("one", "zero", 2)]
    assert interpretation.most_confused(k=1) == [("two", "one", 3)]
    assert describe_confused(("9", "4", 42)) == "9 predicted as 4: 42"


def test_from_run_reads_predictions(tmp_path):
    runs.write_npz_atomic(tmp_path / runs.PREDICTIONS_FILE, probabilities=np.array(HAND_PROBABILITIES, np.float32),
                          labels=np.array(HAND_LABELS, np.int64), class_names=np.array(NAMES))
    interpretation = Interpretation.from_run(tmp_path)
    assert interpretation.class_names == NAMES
    assert [row["index"] for row in interpretation.worst(2)] == [2, 3]


def test_bad_inputs_raise_user_errors(tmp_path):
    with pytest.raises(CnnlabError, match="class names"):
        Interpretation.from_arrays(HAND_PROBABILITIES, HAND_LABELS, NAMES[:2])
    with pytest.raises(CnnlabError, match="Labels"):
        Interpretation.from_arrays(HAND_PROBABILITIES, [5] * 7, NAMES)
    with pytest.raises(CnnlabError, match="predictions.npz"):
        Interpretation.from_run(tmp_path)


def history(train_losses, val_losses):
    return [
        {"epoch": float(epoch), "train_loss": train, "train_accuracy": math.nan, "val_loss": val,
         "val_accuracy": math.nan, "lr": 0.001, "epoch_time_s": 1.0}
        for epoch, (train, val) in enumerate(zip(train_losses, val_losses), start=1)
    ]


FALLING = [1.0, 0.7, 0.5, 0.4, 0.32, 0.26, 0.21]


def test_diagnose_overfitting_names_the_epoch():
    text = diagnose_curves(history(FALLING, [1.0, 0.8, 0.6, 0.5, 0.55, 0.65, 0.8]))
    assert text.startswith("overfitting from epoch 4:")


def test_diagnose_small_bump_is_not_overfitting():
    text = diagnose_curves(history(FALLING[:5], [1.0, 0.6, 0.5, 0.505, 0.51]))
    assert text.startswith("converged")


def test_diagnose_still_improving():
    text = diagnose_curves(history(FALLING[:6], [1.0, 0.8, 0.6, 0.5, 0.42, 0.36]))
    assert text.startswith("still improving at the last epoch")


def test_diagnose_converged():
    text = diagnose_curves(history(FALLING, [1.0, 0.6, 0.5, 0.49, 0.49, 0.489, 0.49]))
    assert text.startswith("converged")


def test_diagnose_diverged():
    text = diagnose_curves(history([1.0, 0.8, math.nan], [0.9, 0.7, math.nan]))
    assert text.startswith("diverged at epoch 3")
    assert diagnose_curves(history([1.0, math.inf], [math.nan, math.nan])).startswith("diverged at epoch 2")


def test_diagnose_without_validation():
    text = diagnose_curves(history(FALLING, [math.nan] * len(FALLING)))
    assert text.startswith("no validation data")
    assert diagnose_curves([]).startswith("no history")


def validated_every(every: int, train_losses, val_losses):
    """A history as train.validate_every writes it: epochs without a validation pass are empty (NaN)."""
    rows = history(train_losses, val_losses)
    for row in rows:
        if row["epoch"] % every and row["epoch"] != len(rows):
            row["val_loss"] = row["val_accuracy"] = math.nan
        else:
            row["val_accuracy"] = 0.5
    return rows


def test_diagnose_skips_epochs_without_validation():
    still = diagnose_curves(validated_every(2, FALLING, [1.0, 0.8, 0.7, 0.6, 0.5, 0.45, 0.38]))
    assert still.startswith("still improving at the last epoch (7")
    overfit = diagnose_curves(validated_every(2, FALLING, [1.0, 0.8, 0.6, 0.5, 0.55, 0.7, 0.8]))
    assert overfit.startswith("overfitting from epoch 4:")
    converged = diagnose_curves(validated_every(3, FALLING, [1.0, 0.6, 0.5, 0.49, 0.49, 0.489, 0.49]))
    assert converged.startswith("converged")


def test_diagnose_a_validation_pass_with_nan_loss_is_divergence():
    rows = validated_every(2, FALLING[:4], [1.0, 0.8, 0.7, math.nan])
    assert diagnose_curves(rows).startswith("diverged at epoch 4")
