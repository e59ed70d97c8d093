"""A user's own image folder — with one corrupt file, one grey and one RGBA image — trains end to end."""

import json

import numpy as np
import pytest
from PIL import Image

from cnnlab.config import load_config
from cnnlab.experiment import run_experiment


def make_folder(root, per_class=12, size=16):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label, name in enumerate(("dark", "bright")):
            folder = root / split / name
            folder.mkdir(parents=True)
            count = per_class if split == "train" else per_class // 2
            for index in range(count):
                level = 40 if label == 0 else 210
                pixels = np.clip(rng.normal(level, 20, size=(size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{index}.png")
    grey = np.full((size + 5, size + 3), 200, dtype=np.uint8)
    Image.fromarray(grey, mode="L").save(root / "train" / "bright" / "grey.png")
    rgba = np.zeros((size, size, 4), dtype=np.uint8)
    rgba[..., :3], rgba[..., 3] = 30, 255
    Image.fromarray(rgba, mode="RGBA").save(root / "train" / "dark" / "rgba.png")
    (root / "train" / "dark" / "corrupt.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")


@pytest.mark.slow
def test_image_folder_with_corrupt_grey_and_rgba_trains(tmp_path, capsys):
    make_folder(tmp_path / "images")
    config = load_config("mlp", [
        f"dataset.name=imagefolder:{tmp_path / 'images'}", "dataset.image_size=16", "dataset.normalize=zscore",
        "train.epochs=15", "train.batch_size=4", "train.validation_split=0"])
    run_dir = run_experiment(config, out=tmp_path / "run", show_progress=False)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "complete"
    assert metrics["dataset"].startswith("imagefolder")
    assert metrics["train_size"] == 2 * 12 + 2, "the grey and RGBA images are kept, the corrupt one skipped"
    assert metrics["test_accuracy"] >= 0.9, "dark against bright is trivially separable"
    assert "corrupt.jpg" in capsys.readouterr().err
