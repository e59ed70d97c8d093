"""`cnnlab features`: penultimate features, the kNN and linear probes, metrics.json and the report."""

import json

import numpy as np
import pytest
from torch import nn

from cnnlab.cli import main
from cnnlab.config import load_config
from cnnlab.experiment import run_experiment
from cnnlab.studies.features import run_features
from cnnlab.analysis.interpretation import confusion_matrix
from cnnlab.analysis.probes import C_CHOICES, knn_predict, knn_probe, linear_probe

REQUIRED = ("knn_accuracy", "linear_accuracy", "feature_dim", "time_s", "k", "dataset", "extraction_time_s",
            "knn_fit_time_s", "linear_fit_time_s", "train_size", "test_size")


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("features") / "digits"
    return run_experiment(load_config("examples/digits.yaml", ["train.epochs=1"]), out=out, show_progress=False)


def test_knn_matches_scikit_learn():
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(0)
    train, labels, query = rng.normal(size=(200, 16)), rng.integers(0, 4, 200), rng.normal(size=(50, 16))
    ours = knn_predict(train, labels, query, (1, 5, 9), n_classes=4)
    for k in (1, 5, 9):
        reference = KNeighborsClassifier(k, metric="cosine", algorithm="brute").fit(train, labels).predict(query)
        assert np.mean(ours[k] == reference) >= 0.96  # only exact vote ties may break differently


def test_probes_separate_clusters():
    rng = np.random.default_rng(1)
    centres = rng.normal(scale=5, size=(3, 8))
    labels = rng.integers(0, 3, 300)
    features = centres[labels] + rng.normal(size=(300, 8))
    knn = knn_probe(features[:200], labels[:200], features[200:], labels[200:], n_classes=3)
    linear = linear_probe(features[:200], labels[:200], features[200:], labels[200:])
    assert knn.accuracy > 0.9 and linear.accuracy > 0.9
    assert knn.details["k"] in (1, 3, 5, 9, 15, 25)
    by_c = linear.details["validation_accuracy_by_C"]
    assert len(by_c) == len(C_CHOICES) and by_c[str(linear.details["C"])] == max(by_c.values())
    assert confusion_matrix(labels[200:], linear.predictions, 3).sum() == 100


def test_linear_probe_chooses_its_regularisation_on_validation():
    # the class is the difference of two features that share a large common term: a strongly
    # regularised probe leans on each feature's own correlation with the class (chance here), a weakly
    # regularised one finds the difference
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 1000)
    shared = 3 * rng.normal(size=1000)
    features = np.stack([shared + (2 * labels - 1) * 0.5, shared + 0.1 * rng.normal(size=1000)], 1)
    chosen = linear_probe(features[:500], labels[:500], features[500:], labels[500:], c_values=(0.0001, 1000.0))
    fixed = linear_probe(features[:500], labels[:500], features[500:], labels[500:], c_values=(0.0001,))
    assert chosen.details["C"] == 1000.0 and fixed.details["C"] == 0.0001
    assert chosen.accuracy > 0.95 and fixed.accuracy < 0.6


@pytest.mark.slow
def test_features_of_a_run_write_metrics_and_report(digits_run, tmp_path):
    out = run_features(str(digits_run), "digits", out=tmp_path / "features", show_progress=False)
    metrics = json.loads((out / "metrics.json").read_text())
    assert all(key in metrics for key in REQUIRED)
    assert metrics["dataset"] == "digits" and metrics["feature_dim"] == 128  # the input of the last Dense layer
    for key in ("knn_accuracy", "linear_accuracy"):
        assert 0.3 < metrics[key] <= 1  # chance is 0.1 on ten digits
    html = (out / "report.html").read_text()
    assert "kNN" in html and html.count("data:image/png;base64") == 2
    assert (out / "report.md").exists()


@pytest.mark.slow
def test_cli_features_errors_are_one_paragraph(digits_run, tmp_path, capsys):
    assert main(["features", str(tmp_path / "no-such-run"), "--dataset", "digits"]) == 2
    assert "not a backbone name" in capsys.readouterr().err
    assert main(["features", str(digits_run), "--dataset", "no-such-dataset"]) == 2
    assert "Unknown dataset" in capsys.readouterr().err
    assert main(["features", str(tmp_path), "--dataset", "digits"]) == 2  # a folder, but no run
    assert "not a cnnlab run directory" in capsys.readouterr().err


def test_backbone_features_get_three_channels_at_its_size(monkeypatch, tmp_path):
    from cnnlab.models import pretrained

    seen = []

    class TinyBackbone(nn.Module):
        def forward(self, images):
            seen.append(tuple(images.shape[1:]))
            return images.mean(dim=(2, 3)).repeat(1, 4)  # (N, 12) features

    def fake_load_backbone(name, weights=None):
        return pretrained.Backbone(pretrained.BackboneFeatures([TinyBackbone()]), 16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 12, name, "test")

    monkeypatch.setattr(pretrained, "load_backbone", fake_load_backbone)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the feature cache, away from the user's
    out = run_features("efficientnet-lite0", "digits", out=tmp_path / "backbone", subset=300, test_subset=100,
                       batch_size=64, show_progress=False)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(seen) == {(3, 16, 16)}
    assert metrics["feature_dim"] == 12 and metrics["train_size"] == 300 and metrics["test_size"] == 100
    assert metrics["kind"] == "backbone" and 0 <= metrics["linear_accuracy"] <= 1
