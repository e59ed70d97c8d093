import pytest
import json

from cnnlab.cli import main
from cnnlab.data import load_dataset
from cnnlab.studies.explore import describe_dataset


def test_explore_digits_writes_figures_and_counts(tmp_path, capsys):
    assert main(["explore", "digits", "--out", str(tmp_path / "x"), "--per-class", "3"]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "image shape    8x8, 1 channel" in out
    stats = json.loads((tmp_path / "x" / "explore.json").read_text())
    dataset = load_dataset("digits")
    assert sum(stats["train_counts"]) == len(dataset.train_labels)
    assert stats["value_range"] == [0, 255]
    for name in ("class_balance.png", "samples.png"):
        assert (tmp_path / "x" / "figures" / name).stat().st_size > 1000
    assert (tmp_path / "x" / "explore.html").exists()
    # the train/test duplicate check: 8x8 digits count only nearly identical copies, and there are none
    leakage = json.loads((tmp_path / "x" / "leakage.json").read_text())
    assert leakage["n_test"] == sum(stats["test_counts"]) and leakage["settings"]["min_correlation"] == 0.995
    assert stats["duplicates"]["test_images"] == len(leakage["test_indices"]) == 0
    assert "## Train/test duplicates" in (tmp_path / "x" / "explore.md").read_text()
    assert "duplicates     0 test images have a copy" in captured.err


@pytest.mark.slow
def test_explore_cifar10_jpeg_counts(datasets_dir):
    if not (datasets_dir / "cifar10-jpeg.tar.gz").exists():
        import pytest
        pytest.skip("cifar10-jpeg.tar.gz not present")
    stats = describe_dataset(load_dataset("cifar10-jpeg", datasets_dir))
    assert stats["dataset"] == "cifar10-jpeg"
    assert stats["image_shape"] == [3, 32, 32]
    assert stats["train_counts"] == [5000] * 10
    assert stats["test_counts"] == [1000] * 10
    assert stats["classes"][0] == "airplane" and stats["classes"][-1] == "truck"
