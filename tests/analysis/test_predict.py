"""`cnnlab predict` and `Predictor`: a trained run's test images, written to image files, get the probabilities
of its predictions.npz back (with test-time views too); every input kind; the table, CSV and JSON read back;
unreadable inputs listed and skipped; a folder that is not a run is one paragraph and exit 2.

The fast tests use a run folder written by hand (an untrained network, its weights and normalisation), whose
right answers are computed here with the network itself; the slow ones train digits runs."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import save_file

from cnnlab import runs
from cnnlab.analysis.predict import Predictions, Predictor, inference_plan, user_images
from cnnlab.analysis.prediction_formats import CSV_COLUMNS, format_predictions
from cnnlab.analysis.trained_run import load_trained_model
from cnnlab.cli import main
from cnnlab.config import load_config
from cnnlab.data import load_dataset
from cnnlab.errors import CnnlabError, DataError
from cnnlab.experiment import run_experiment
from cnnlab.models import create_model
from cnnlab.output_folders import output_marker

CLASSES = ["cat", 'dog, "big"', "=1+1\nline", "caf\udce9"]  # data: a comma, quotes, a formula, a newline, a bad byte
LAYERS = ["Conv2D: 4, 3, 1, same", "MaxPooling: 2, 2", "Flatten", f"Dense: {len(CLASSES)}, softmax"]
MEAN, STD = 0.3, 0.2
DIGITS_CONFIG = str(Path(__file__).resolve().parents[2] / "examples" / "digits.yaml")
TINY_DIGITS = ["dataset.subset=300", "dataset.test_subset=80", "train.epochs=1", "train.batch_size=64"]


def write_run(run_dir: Path, test_time: str = "none", device: str = "cpu",
              test_time_below: float | None = None) -> Path:
    """A run folder as `cnnlab train` leaves it, with an untrained network: grey 8x8 inputs, four classes."""
    torch.manual_seed(0)
    module = create_model({"layers": LAYERS}, (1, 8, 8), len(CLASSES)).module
    run_dir.mkdir(parents=True)
    save_file({key: value.contiguous() for key, value in module.state_dict().items()}, str(run_dir / runs.WEIGHTS_FILE))
    runs.write_text_atomic(run_dir / runs.CONFIG_FILE, yaml.safe_dump(
        {"name": "tiny", "dataset": {"name": "digits"}, "model": {"layers": LAYERS},
         "augment": {"test_time": test_time, "test_time_below": test_time_below}}))
    runs.write_json_atomic(run_dir / runs.METRICS_FILE, {
        "cnnlab": output_marker("run"), "status": "complete", "device": device, "test_time_augmentation": test_time,
        "normalization": {"mode": "zscore", "mean": [MEAN], "std": [STD], "scale": 1 / 255},
        "fast_path": {"precision": "fp32", "channels_last": False, "compile": False, "reason": "test"}})
    runs.write_npz_atomic(run_dir / runs.PREDICTIONS_FILE, probabilities=np.full((2, len(CLASSES)), 0.25, np.float32),
                          labels=np.array([0, 1]), class_names=np.array(CLASSES))
    runs.write_npz_atomic(run_dir / runs.EXAMPLES_FILE, indices=np.array([0]), images=np.zeros((1, 1, 8, 8), np.uint8))
    return run_dir


def expected_probabilities(run_dir: Path, images: np.ndarray, flip: bool = False) -> np.ndarray:
    """The network's softmax on uint8 (N, 1, 8, 8) images, normalised by hand; with ``flip`` the mean with the
    mirror."""
    module = load_trained_model(run_dir).module
    inputs = (torch.from_numpy(np.array(images)).float() / 255 - MEAN) / STD
    with torch.no_grad():
        probabilities = module(inputs).softmax(1)
        if flip:
            probabilities = (probabilities + module(inputs.flip(3)).softmax(1)) / 2
    return probabilities.numpy()


@pytest.fixture
def tiny_run(tmp_path) -> Path:
    return write_run(tmp_path / "run")


@pytest.fixture
def pictures(tmp_path) -> tuple[list[Path], np.ndarray]:
    """Five grey 8x8 PNG files and their pixels (N, 1, 8, 8)."""
    pixels = np.random.default_rng(1).integers(0, 256, size=(5, 1, 8, 8), dtype=np.uint8)
    folder = tmp_path / "pictures"
    folder.mkdir()
    paths = []
    for index, image in enumerate(pixels):
        paths.append(folder / f"{index}.png")
        Image.fromarray(image[0]).save(paths[-1])
    return paths, pixels


def run_cli(capsys, *arguments) -> tuple[int, str, str]:
    code = main(["predict", *map(str, arguments)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- Predictor and Predictions -------------------------------------------------------------------------


def test_files_arrays_tensors_and_pillow_images_give_the_networks_probabilities(tiny_run, pictures):
    paths, pixels = pictures
    expected = expected_probabilities(tiny_run, pixels)
    predictor = Predictor.from_run(tiny_run, device="cpu")
    assert predictor.class_names == CLASSES and predictor.input_shape == (1, 8, 8)
    inputs = {"paths": paths, "one folder": paths[0].parent, "strings": [str(path) for path in paths],
              "array batch (N, H, W)": pixels[:, 0], "array batch (N, H, W, 1)": pixels.transpose(0, 2, 3, 1),
              "tensor batch": torch.from_numpy(pixels), "tensors": list(torch.from_numpy(pixels)),
              "arrays": list(pixels[:, 0]), "Pillow images": [Image.fromarray(image[0]) for image in pixels]}
    for kind, given in inputs.items():
        for batch_size in (256, 2):
            predictions = predictor.predict(given, batch_size=batch_size)
            assert predictions.probabilities.dtype == np.float32, kind
            np.testing.assert_allclose(predictions.probabilities, expected, atol=1e-6, err_msg=kind)
    single = predictor.predict(paths[3])
    np.testing.assert_allclose(single.probabilities, expected[3:4], atol=1e-6)
    assert single.sources == [str(paths[3])]
    assert predictor.predict(pixels[2, 0]).sources == ["<array 0>"]
    assert predictor.predict(torch.from_numpy(pixels)).sources[4] == "<tensor 4>"


def test_colour_and_larger_images_are_converted_and_resized_for_the_run(tiny_run, tmp_path):
    colour = np.random.default_rng(2).integers(0, 256, size=(24, 40, 3), dtype=np.uint8)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    grey_small = np.asarray(Image.fromarray(colour).convert("L").resize((8, 8), Image.Resampling.BILINEAR))
    predictions = Predictor.from_run(tiny_run, "cpu").predict([tmp_path / "colour.png", colour])
    expected = expected_probabilities(tiny_run, grey_small[np.newaxis, np.newaxis])
    np.testing.assert_allclose(predictions.probabilities, np.repeat(expected, 2, axis=0), atol=1e-6)


def test_test_time_views_of_the_run_are_used(tmp_path, pictures):
    paths, pixels = pictures
    run_dir = write_run(tmp_path / "flip-run", test_time="flip")
    predictor = Predictor.from_run(run_dir, "cpu")
    assert predictor.test_time == "flip"
    np.testing.assert_allclose(predictor.predict(paths).probabilities,
                               expected_probabilities(run_dir, pixels, flip=True), atol=1e-6)


def test_views_only_for_the_unsure_images_when_the_run_says_so(tmp_path, pictures):
    """A run with augment.test_time_below: 1e-6 (no image is that unsure) predicts with one view."""
    paths, pixels = pictures
    run_dir = write_run(tmp_path / "sure-run", test_time="flip", test_time_below=1e-6)
    predictor = Predictor.from_run(run_dir, "cpu")
    assert (predictor.test_time, predictor.test_time_below) == ("flip", 1e-6)
    np.testing.assert_allclose(predictor.predict(paths).probabilities, expected_probabilities(run_dir, pixels),
                               atol=1e-6)


def test_top_k_and_labels():
    predictions = Predictions(np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]], np.float32), ["a", "b", "c"],
                              ["x.png", "y.png"])
    assert predictions.labels() == ["b", "a"]
    assert predictions.top_k(2) == [[("b", pytest.approx(0.6)), ("c", pytest.approx(0.3))],
                                    [("a", pytest.approx(0.5)), ("c", pytest.approx(0.3))]]
    assert [len(row) for row in predictions.top_k(10)] == [3, 3], "at most every class"
    with pytest.raises(CnnlabError, match="at least 1"):
        predictions.top_k(0)
    empty = Predictions(np.zeros((0, 3), np.float32), ["a", "b", "c"], [], [("bad.png", "damaged")])
    assert empty.labels() == [] and empty.top_k(2) == [] and len(empty) == 0


def test_unreadable_files_are_skipped_with_the_reason_and_wrong_inputs_refused(tiny_run, pictures, tmp_path):
    paths, pixels = pictures
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    predictor = Predictor.from_run(tiny_run, "cpu")
    given = [paths[0], tmp_path / "broken.png", tmp_path / "absent.jpg", paths[1]]
    predictions = predictor.predict(given, batch_size=2)
    assert predictions.sources == [str(paths[0]), str(paths[1])]
    np.testing.assert_allclose(predictions.probabilities, expected_probabilities(tiny_run, pixels[:2]), atol=1e-6)
    assert [path for path, _ in predictions.skipped] == [str(tmp_path / "broken.png"), str(tmp_path / "absent.jpg")]
    assert predictions.skipped[1][1] == "does not exist"
    with pytest.raises(DataError, match="uint8"):
        predictor.predict(pixels.astype(np.float32))
    with pytest.raises(DataError, match="Item 1"):
        predictor.predict([paths[0], 3.5])
    with pytest.raises(CnnlabError, match="batch_size"):
        predictor.predict(paths, batch_size=0)


def test_a_batch_array_and_a_single_colour_image_are_told_apart():
    batch = np.zeros((6, 8, 8), np.uint8)
    single = np.zeros((8, 8, 3), np.uint8)
    assert [entry.label for entry in user_images(batch)] == [f"<array {row}>" for row in range(6)]
    assert [entry.label for entry in user_images(single)] == ["<array 0>"]
    assert [entry.label for entry in user_images(torch.zeros(3, 8, 8, dtype=torch.uint8))] == ["<tensor 0>"]


def test_the_recorded_precision_is_used_only_on_the_kind_of_device_the_run_used(tiny_run):
    trained = load_trained_model(tiny_run)
    recorded = {"device": "cpu", "fast_path": {"precision": "bf16", "channels_last": True}}
    plan = inference_plan(recorded, torch.device("cpu"), trained)
    assert (plan.precision, plan.channels_last) == ("bf16", True)
    elsewhere = inference_plan({**recorded, "device": "cuda:0"}, torch.device("cpu"), trained)
    assert elsewhere.reason != "the run's own evaluation", "another device: its automatic choice"


# --- the command line -----------------------------------------------------------------------------------


def test_csv_json_and_table_read_back(tiny_run, pictures, capsys):
    paths, pixels = pictures
    expected = expected_probabilities(tiny_run, pixels)
    order = np.argsort(-expected, axis=1, kind="stable")
    code, out, _ = run_cli(capsys, tiny_run, *paths, "--format", "csv", "--top-k", "2", "--device", "cpu")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == CSV_COLUMNS and len(rows) == 2 * len(paths)
    for row_number, row in enumerate(rows):
        image, rank = divmod(row_number, 2)
        assert row["image"] == str(paths[image]) and int(row["rank"]) == rank + 1
        assert row["class"] == CLASSES[order[image, rank]].replace("\udce9", "\\udce9")
        assert float(row["probability"]) == pytest.approx(expected[image, order[image, rank]], abs=1e-6)

    code, out, _ = run_cli(capsys, tiny_run, paths[0].parent, "--format", "json", "--top-k", "9")
    objects = json.loads(out)
    assert [item["image"] for item in objects] == [str(path) for path in paths]
    for image, item in enumerate(objects):
        assert [entry["class"] for entry in item["predictions"]] == [
            CLASSES[index].replace("\udce9", "\\udce9") for index in order[image]]
        np.testing.assert_allclose([entry["probability"] for entry in item["predictions"]],
                                   expected[image, order[image]], atol=1e-6)

    code, out, _ = run_cli(capsys, tiny_run, *paths, "--top-k", "1")
    lines = out.splitlines()
    assert lines[0].split() == ["image", "top-1"] and len(lines) == 1 + len(paths)
    for image, line in enumerate(lines[1:]):
        name = CLASSES[order[image, 0]].replace("\n", "\\n").replace("\udce9", "\\udce9")
        assert line == f"{str(paths[image]).ljust(len(str(paths[0])))}  {name} ({expected[image, order[image, 0]]:.1%})"


def test_out_writes_the_file_and_prints_its_path(tiny_run, pictures, capsys, tmp_path):
    paths, _ = pictures
    _, shown, _ = run_cli(capsys, tiny_run, *paths, "--format", "json")
    code, out, _ = run_cli(capsys, tiny_run, *paths, "--format", "json", "--out", tmp_path / "out" / "p.json")
    assert code == 0 and out.strip() == str(tmp_path / "out" / "p.json")
    assert (tmp_path / "out" / "p.json").read_text(encoding="utf-8") == shown
    assert [path.name for path in (tmp_path / "out").iterdir()] == ["p.json"], "no temporary file left"
    code, _, err = run_cli(capsys, tiny_run, *paths, "--out", tmp_path)
    assert code == 2 and "is a folder" in err


def test_unreadable_files_are_listed_on_stderr_and_the_rest_predicted(tiny_run, pictures, capsys, tmp_path):
    paths, _ = pictures
    Image.new("L", (4, 4)).save(tmp_path / "scan.tiff")
    code, out, err = run_cli(capsys, tiny_run, paths[0], tmp_path / "scan.tiff", tmp_path / "gone.png")
    assert code == 0 and len(out.splitlines()) == 2
    assert f"skipped {tmp_path / 'scan.tiff'}: not a PNG, JPEG, BMP, WebP or GIF image" in err
    assert f"skipped {tmp_path / 'gone.png'}: does not exist" in err
    code, out, err = run_cli(capsys, tiny_run, tmp_path / "scan.tiff")
    assert code == 2 and out == "" and "No image could be read" in err and "Traceback" not in err


@pytest.mark.parametrize("problem", ["not a run", "seeds folder", "bad top-k", "no weights"])
def test_wrong_run_folders_and_options_are_one_paragraph_and_exit_2(tiny_run, pictures, capsys, tmp_path, problem):
    paths, _ = pictures
    run_dir, options, message = tiny_run, [], ""
    if problem == "not a run":
        run_dir, message = tmp_path, "is not a cnnlab run directory"
    elif problem == "seeds folder":
        run_dir = tmp_path / "seeds"
        runs.write_json_atomic(run_dir / runs.METRICS_FILE, {"cnnlab": output_marker("seeds")})
        (run_dir / "seed-0").mkdir()
        message = "is a multi-seed folder"
    elif problem == "bad top-k":
        options, message = ["--top-k", "0"], "--top-k must be at least 1"
    else:
        (tiny_run / runs.WEIGHTS_FILE).unlink()
        message = "saved no weights"
    code, out, err = run_cli(capsys, run_dir, *paths, *options)
    assert code == 2 and out == "" and message in " ".join(err.split())
    assert err.startswith("error: ") and "Traceback" not in err and "\n\n" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")
def test_asking_for_a_missing_gpu_is_an_error(tiny_run, pictures, capsys):
    code, _, err = run_cli(capsys, tiny_run, pictures[0][0], "--device", "cuda")
    assert code == 2 and "no CUDA GPU is visible" in err


def test_format_predictions_rejects_unknown_formats():
    with pytest.raises(ValueError):
        format_predictions(Predictions(np.ones((1, 1), np.float32), ["a"], ["x"]), 1, "xml")


# --- trained runs: predictions.npz comes back --------------------------------------------------------------


def write_test_images(images: np.ndarray, folder: Path) -> list[Path]:
    """uint8 (N, 1, H, W) test images as PNG files, named so that their order is kept."""
    folder.mkdir(parents=True)
    paths = [folder / f"{index:03d}.png" for index in range(len(images))]
    for path, image in zip(paths, images):
        Image.fromarray(image[0]).save(path)
    return paths


@pytest.mark.slow
@pytest.mark.parametrize("test_time", ["none", "flip_shift"])
def test_test_images_written_to_files_give_the_runs_own_predictions(tmp_path, capsys, test_time):
    """The first 30 test images (of a random test subset) and the example images the run saved, through
    the command line and through Predictor: the rows of predictions.npz, bfloat16 included where the run used it."""
    config = load_config(DIGITS_CONFIG, [*TINY_DIGITS, f"augment.test_time={test_time}"])
    run_dir = run_experiment(config, out=tmp_path / "run", show_progress=False)
    saved = runs.load_npz(run_dir / runs.PREDICTIONS_FILE)
    examples = runs.load_npz(run_dir / runs.EXAMPLES_FILE)
    test = load_dataset(config.dataset)  # the test images in the order predictions.npz holds them
    assert np.array_equal(test.test_labels, saved["labels"])
    assert np.array_equal(test.test_images[examples["indices"]], examples["images"])
    first = write_test_images(test.test_images[:30], tmp_path / "first")
    shown = write_test_images(examples["images"], tmp_path / "examples")

    code, out, _ = run_cli(capsys, run_dir, tmp_path / "first", "--format", "json", "--top-k", "10")
    assert code == 0
    for item, row in zip(json.loads(out), saved["probabilities"][:30]):
        by_class = {entry["class"]: entry["probability"] for entry in item["predictions"]}
        np.testing.assert_allclose([by_class[name] for name in saved["class_names"]], row, atol=1e-5)

    predictions = Predictor.from_run(run_dir).predict(shown, batch_size=16)
    assert predictions.sources == [str(path) for path in shown]
    np.testing.assert_allclose(predictions.probabilities, saved["probabilities"][examples["indices"]], atol=1e-5)
    assert predictions.labels() == [str(saved["class_names"][index])
                                    for index in saved["probabilities"][examples["indices"]].argmax(1)]


@pytest.mark.slow
def test_an_image_folder_runs_test_folder_gives_its_predictions(tmp_path, capsys):
    """Images of mixed sizes and modes (RGBA, grey, a large JPEG decoded at reduced scale): the run's own
    test folder, predicted, gives predictions.npz in its order: they were prepared as in training."""
    rng = np.random.default_rng(3)
    for split, count in (("train", 10), ("test", 4)):
        for label, name in enumerate(("dark", "light")):
            folder = tmp_path / "images" / split / name
            folder.mkdir(parents=True)
            for index in range(count):
                level = 120 if label == 0 else 135  # overlapping classes: probabilities far from 0 and 1
                height, width = rng.integers(9, 30, size=2)
                pixels = np.clip(rng.normal(level, 50, size=(height, width, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{index}.png")
    Image.new("RGBA", (12, 20), (200, 200, 200, 90)).save(tmp_path / "images/test/light/rgba.png")
    Image.new("L", (15, 11), 40).save(tmp_path / "images/test/dark/grey.png")
    Image.fromarray(rng.integers(40, 200, (64, 48, 3), dtype=np.uint8)).save(tmp_path / "images/test/dark/big.jpg")
    config = load_config("mlp", [f"dataset.name=imagefolder:{tmp_path / 'images'}", "dataset.image_size=8",
                                 "dataset.normalize=zscore", "train.epochs=1", "train.batch_size=4",
                                 "train.validation_split=0", "optimizer.lr=0.0001"])
    run_dir = run_experiment(config, out=tmp_path / "run", show_progress=False)
    saved = runs.load_npz(run_dir / runs.PREDICTIONS_FILE)
    predictions = Predictor.from_run(run_dir).predict(tmp_path / "images" / "test")
    assert len(predictions) == len(saved["labels"]) == 11
    assert saved["probabilities"].max() < 0.999, "unsaturated, so that a pixel prepared differently shows"
    np.testing.assert_allclose(predictions.probabilities, saved["probabilities"], atol=1e-5)
