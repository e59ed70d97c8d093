"""The run report's train/test duplicate section, read from the run folder, and the texts that must not mislead
(a worst-images heading with the real count)."""

import numpy as np

from cnnlab import runs
from cnnlab.analysis import leakage
from cnnlab.report.run_report import write_report


def tiny_run(run_dir, n: int = 40, wrong: int = 3):
    """A run folder with predictions where exactly ``wrong`` test images are misclassified."""
    labels = np.arange(n) % 2
    probabilities = np.full((n, 2), 0.1)
    probabilities[np.arange(n), labels] = 0.9
    probabilities[:wrong] = probabilities[:wrong, ::-1]
    run_dir.mkdir()
    runs.write_npz_atomic(run_dir / runs.PREDICTIONS_FILE, probabilities=probabilities.astype(np.float32),
                          labels=labels.astype(np.int64), class_names=np.array(["cat", "dog"]))
    runs.write_json_atomic(run_dir / runs.METRICS_FILE, {"name": "tiny", "status": "complete", "epochs": 1,
                                                         "stop_reason": "completed 1 epoch"})
    runs.write_csv_atomic(run_dir / runs.HISTORY_FILE, [{"epoch": 1, "train_loss": 0.5, "val_loss": 0.6, "lr": 0.1}],
                          runs.HISTORY_COLUMNS)
    return run_dir, labels


def save_check(run_dir, labels, test_indices):
    """leakage.json as training writes it, with ``test_indices`` duplicated (near) in a 100-image training set."""
    rng = np.random.default_rng(0)
    train_images = rng.integers(0, 256, (100, 1, 8, 8), dtype=np.uint8)
    test_images = rng.integers(0, 256, (len(labels), 1, 8, 8), dtype=np.uint8)
    near = np.array([[index, index] for index in test_indices], dtype=np.int64).reshape(-1, 2)
    found = leakage.Duplicates(100, len(labels), np.zeros((0, 2), np.int64), near, np.ones(len(near), np.int64),
                               np.full(len(near), 0.97), 0, 0.01, leakage.check_settings((8, 8)))
    leakage.save_duplicates(run_dir, found, train_images, test_images, np.arange(100) % 2, labels)


def test_duplicates_scored_better_than_the_rest_raise_a_warning(tmp_path):
    run_dir, labels = tiny_run(tmp_path / "run")
    save_check(run_dir, labels, [10, 11, 12, 13])  # all correct, while 3 of the other 36 are wrong
    markdown = write_report(run_dir)[0].read_text()
    section = markdown[markdown.index("## Train/test duplicates"):]
    assert "Warning:** The test accuracy may be inflated by train/test duplicates" in section
    assert "on the 4 test images with a duplicate: 100.00%" in section and "on the other 36: 91.67%" in section
    assert "| near | #10 | #10 | cat | cat | 1 | 0.97 |" in section
    assert (run_dir / runs.FIGURES_DIR / "duplicates.png").stat().st_size > 1000


def test_no_duplicates_and_no_check_are_said_plainly(tmp_path):
    run_dir, labels = tiny_run(tmp_path / "clean")
    save_check(run_dir, labels, [])
    markdown = write_report(run_dir)[0].read_text()
    assert "No test image has a duplicate in the training set" in markdown and "may be inflated" not in markdown
    old, _ = tiny_run(tmp_path / "old")
    assert "Not checked: the run folder has no leakage.json" in write_report(old)[0].read_text()


def test_the_worst_images_heading_counts_what_it_lists(tmp_path):
    run_dir, _ = tiny_run(tmp_path / "run", wrong=3)
    markdown = write_report(run_dir, worst_n=10)[0].read_text()
    assert "## 3 worst classified images" in markdown and "10 worst" not in markdown
