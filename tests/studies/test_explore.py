import pytest
import json

from cnnlab.cli import main
from cnnlab.data import load_dataset
from cnnlab.studies.explore import describe_dataset


def test_explore_digits_writes_figures_and_counts(tmp_path, capsys):
    assert main(["explore", "digits", "--out", str(tmp_path / "x"), "--per-class", "3"]) == 0
    out = capsys.readouterr().out
    assert "image shape    8x8, 1 channel" in out
    stats = json.loads((tmp_path / "x" / "explore.json").read_text())
    dataset = load_dataset("digits")
    assert sum(stats["train_counts"]) == len(dataset.train_labels)
    assert stats["value_range"] == [0, 255]
    for name in ("class_balance.png", "samples.png"):
        assert (tmp_path / "x" / "figures" / name).stat().st_size > 1000
    assert (tmp_path / "x" / "explore.html").exists()


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
