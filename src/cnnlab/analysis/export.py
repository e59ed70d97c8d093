"""`cnnlab export`: a trained run as one file that takes uint8 images and returns class probabilities,
checked against PyTorch on the run's test images before it is written.

The exported graph is `ProbabilityModel`: uint8 (N, C, H, W) → float32 → the run's normalisation
``(x * scale - mean) / std`` per channel, the same multiply-add training used) → the network in eval
mode → softmax. The batch size is dynamic. Two formats:

- ``onnx``: through `torch.onnx.export`'s torch.export-based ("dynamo") exporter, the one PyTorch
  maintains (it needs onnxscript matching the installed torch); when that exporter cannot run (an
  onnxscript too old for this torch, or a graph it cannot capture) the TorchScript-based exporter is used
  while torch still ships it, and the file's metadata says which one wrote it. The run's description
  (class names as JSON, input shape, normalisation, dataset, cnnlab version, SHA-256 of config.yaml) is
  in the model's ``metadata_props``; onnxruntime runs the check.
- ``pt2``: a `torch.export` ExportedProgram (``torch.export.load(path).module()``), the description in
  its extra file ``cnnlab.json``. (`torch.jit.trace`/TorchScript is deprecated in current PyTorch.)

The check runs every test image predictions.npz covers through the exported model and through PyTorch:
the images come from the dataset as the run's config names it, used only when its test labels are
predictions.npz's; otherwise the test images saved in examples.npz. It fails (and nothing is written)
unless the top-1 class is the same on every image (but near-ties: top two within the tolerance) and no
probability differs by more than the tolerance. The output is written atomically and replaces only a
model cnnlab exported, or the default file in the run folder (model.onnx, model.pt2)."""

from __future__ import annotations

import importlib.util
import io
import json
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from cnnlab import runs
from cnnlab.analysis.run_files import read_examples, read_metrics
from cnnlab.analysis.trained_run import TrainedModel, load_trained_model
from cnnlab.data import DatasetConfig, load_dataset
from cnnlab.data.normalization import Normalization
from cnnlab.errors import CnnlabError
from cnnlab.output_folders import output_kind
from cnnlab.training.weights_file import config_digest, describe_run

FORMATS = {"onnx": "model.onnx", "pt2": "model.pt2"}  # format -> default file name in the run folder
TOLERANCE = 1e-4  # largest probability difference the check accepts (float32 reorderings give ~1e-7)
CHECK_BATCH = 256
DESCRIPTION_FILE = "cnnlab.json"  # the pt2 archive's extra file holding the description
EXPORT_INPUT = "uint8 images (N, C, H, W), any N; the normalisation is inside the model"
EXPORT_OUTPUT = "probabilities (N, classes): softmax of the network's logits, in class_names order"
EXTRA_HINT = "pip install cnnlab[export]"


class ProbabilityModel(nn.Module):
    """uint8 images (N, C, H, W) → the run's normalisation → ``network`` → class probabilities (N, K)."""

    def __init__(self, network: nn.Module, normalization: Normalization):
        super().__init__()
        self.network = network
        std = torch.tensor(normalization.std, dtype=torch.float32).view(1, -1, 1, 1)
        mean = torch.tensor(normalization.mean, dtype=torch.float32).view(1, -1, 1, 1)
        # (x * scale - mean) / std == x * multiplier + offset, as training normalised (data/device_images.py)
        self.register_buffer("multiplier", normalization.scale / std)
        self.register_buffer("offset", -mean / std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        inputs = torch.addcmul(self.offset, images.float(), self.multiplier)
        return torch.softmax(self.network(inputs), dim=1)


@dataclass
class ExportCheck:
    """The exported model against PyTorch on the same images."""

    n_images: int
    source: str  # which images, in words
    runtime: str  # what ran the exported model
    same_top1: int  # images whose top-1 class agrees
    near_ties: int  # disagreements where PyTorch's top two probabilities are within TOLERANCE
    max_difference: float  # largest absolute probability difference
    saved_same_top1: int | None = None  # PyTorch against the run's predictions.npz (None: images unknown)
    saved_max_difference: float | None = None
    saved_note: str = ""  # why the run's own evaluation may differ a little (its precision, test-time views)

    @property
    def passed(self) -> bool:
        return self.same_top1 + self.near_ties == self.n_images and self.max_difference <= TOLERANCE


@dataclass
class ExportResult:
    path: Path
    export_format: str
    exporter: str
    metadata: dict[str, str]
    check: ExportCheck | None  # None with --no-check


def export_run(run_dir: Path | str, export_format: str = "onnx", out: Path | str | None = None, check: bool = True,
               data_dir: Path | None = None) -> ExportResult:
    """Export the run's network as ``export_format`` ("onnx" or "pt2") to ``out`` (default: the run folder's
    model.onnx / model.pt2; a folder: that name inside it), checked first unless ``check`` is False.
    Raises CnnlabError for a missing run, a missing extra, a file it must not replace or a failed check."""
    run_dir = runs.require_run_dir(Path(run_dir))
    if output_kind(run_dir) == "seeds":
        runs_of_seeds = read_metrics(run_dir).get("runs") or ["seed-0"]
        raise CnnlabError(f"{run_dir} is a multi-seed folder, which holds no network of its own: export one of its "
                          f"runs, e.g. cnnlab export {run_dir / str(runs_of_seeds[0])}.")
    if export_format not in FORMATS:
        raise CnnlabError(f"cnnlab export writes {' or '.join(FORMATS)}, not {export_format!r}. "
                          "(TorchScript is deprecated in PyTorch: use --format pt2 for a torch.export program.)")
    if export_format == "onnx":
        require_onnx(check)
    path = output_path(run_dir, export_format, out)
    trained = load_trained_model(run_dir)
    model = ProbabilityModel(trained.module, trained.normalization).eval()
    metadata = export_description(run_dir, trained)
    export = export_onnx if export_format == "onnx" else export_pt2
    data, exporter = export(model, trained.input_shape, metadata)
    metadata = {**metadata, "exporter": exporter}
    result = ExportResult(path, export_format, exporter, metadata, None)
    if check:
        run_exported = onnx_runner(data) if export_format == "onnx" else pt2_runner(data)
        result.check = check_export(model, run_exported, *check_images(run_dir, trained, data_dir))
        result.check.saved_note = evaluation_note(read_metrics(run_dir))
        if not result.check.passed:
            raise CnnlabError(failure_message(result.check, path))
    runs.write_bytes_atomic(path, data)
    return result


def output_path(run_dir: Path, export_format: str, out: Path | str | None) -> Path:
    """Where the export goes; CnnlabError when that would replace a file cnnlab export did not write
    (the default file in the run folder is cnnlab's by name and always replaced)."""
    name = FORMATS[export_format]
    path = Path(out).expanduser() if out is not None else run_dir / name
    if path.is_dir() and not runs.is_link(path):
        path = path / name
    default = path.name == name and path.parent.resolve() == run_dir.resolve()
    if (path.exists() or runs.is_link(path)) and not default and not is_cnnlab_export(path, export_format):
        what = "a link" if runs.is_link(path) else ("a folder" if path.is_dir() else "a file")
        raise CnnlabError(f"{path} exists and is {what} that cnnlab export did not write; it is never replaced. "
                          "Choose another --out, or move that file away first.")
    return path


def is_cnnlab_export(path: Path, export_format: str) -> bool:
    """Whether ``path`` (not a link) is a model cnnlab export wrote: its description names a cnnlab version."""
    if runs.is_link(path) or not path.is_file():
        return False
    try:
        if export_format == "pt2":
            with zipfile.ZipFile(path) as archive:
                names = [name for name in archive.namelist() if name.endswith(f"/extra/{DESCRIPTION_FILE}")]
                return bool(names) and "cnnlab_version" in json.loads(archive.read(names[0]))
        return "cnnlab_version" in onnx_metadata(path)
    except (OSError, ValueError, zipfile.BadZipFile, CnnlabError):
        return False


def export_description(run_dir: Path, trained: TrainedModel) -> dict[str, str]:
    """The run's description (as in model.safetensors) with what the exported model takes and returns."""
    metrics = read_metrics(run_dir)
    description = describe_run(trained.class_names, trained.input_shape, trained.normalization.to_dict(),
                               str(metrics.get("dataset") or ""), str(metrics.get("model") or ""),
                               config_digest(run_dir))
    return {**description, "input": EXPORT_INPUT, "output": EXPORT_OUTPUT}


def require_onnx(check: bool) -> None:
    """CnnlabError saying how to install the export extra when onnx (or, for the check, onnxruntime) is missing."""
    missing = [name for name in (["onnx", "onnxruntime"] if check else ["onnx"]) if not _installed(name)]
    if missing:
        raise CnnlabError(f"cnnlab export --format onnx needs {' and '.join(missing)}, which "
                          f"{'is' if len(missing) == 1 else 'are'} not installed: run `{EXTRA_HINT}` (onnx, "
                          "onnxruntime and onnxscript), or use --format pt2, which needs only PyTorch.")


def _installed(module: str) -> bool:
    """Whether ``module`` can be imported (by module name: onnxruntime-gpu provides onnxruntime too)."""
    return importlib.util.find_spec(module) is not None


def export_onnx(model: ProbabilityModel, input_shape: tuple[int, int, int],
                metadata: dict[str, str]) -> tuple[bytes, str]:
    """The ONNX file's bytes and the exporter that wrote them (see the module's docstring)."""
    import onnx

    example = torch.zeros((2, *input_shape), dtype=torch.uint8)  # 2: a batch of 1 would be fixed as a constant
    try:
        proto, exporter = _dynamo_export(model, example), "torch.onnx dynamo exporter (torch.export)"
    except Exception as dynamo_error:  # noqa: BLE001 - any failure of the new exporter: try the other one
        try:
            proto = _torchscript_export(model, example, onnx)
        except Exception as error:  # noqa: BLE001 - both failed: say why, in one paragraph
            raise CnnlabError(f"This network could not be exported to ONNX: the dynamo exporter failed "
                              f"({_first_line(dynamo_error)}) and so did the TorchScript-based one "
                              f"({_first_line(error)}). Try --format pt2, or `{EXTRA_HINT}` to get an onnxscript "
                              "that matches your PyTorch.") from None
        exporter = f"torch.onnx TorchScript-based exporter (the dynamo exporter failed: {_first_line(dynamo_error)})"
    del proto.metadata_props[:]
    for key, value in {**metadata, "exporter": exporter}.items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = f"cnnlab {metadata['model']} on {metadata['dataset']}: {EXPORT_INPUT}; returns {EXPORT_OUTPUT}."
    return proto.SerializeToString(), exporter


def _dynamo_export(model: nn.Module, example: torch.Tensor) -> Any:
    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(model, (example,), dynamo=True, input_names=["images"],
                                output_names=["probabilities"], dynamic_shapes=({0: batch},), verbose=False)
    return program.model_proto


def _torchscript_export(model: nn.Module, example: torch.Tensor, onnx: Any) -> Any:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # chosen knowingly, and recorded in the metadata
        torch.onnx.export(model, (example,), buffer, dynamo=False, input_names=["images"],
                          output_names=["probabilities"],
                          dynamic_axes={"images": {0: "batch"}, "probabilities": {0: "batch"}})
    return onnx.load_model_from_string(buffer.getvalue())


def export_pt2(model: ProbabilityModel, input_shape: tuple[int, int, int],
               metadata: dict[str, str]) -> tuple[bytes, str]:
    """A torch.export ExportedProgram archive's bytes, the description in its extra file cnnlab.json."""
    exporter = f"torch.export (torch {torch.__version__})"
    example = torch.zeros((2, *input_shape), dtype=torch.uint8)
    try:
        program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    except Exception as error:  # noqa: BLE001 - torch.export's many error types: one paragraph for the user
        raise CnnlabError(f"torch.export could not capture this network ({_first_line(error)}). "
                          "Try --format onnx.") from None
    buffer = io.BytesIO()
    torch.export.save(program, buffer, extra_files={DESCRIPTION_FILE: json.dumps({**metadata, "exporter": exporter})})
    return buffer.getvalue(), exporter


def onnx_metadata(path: Path) -> dict[str, str]:
    """The metadata_props of an ONNX file (external data is not read)."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # noqa: BLE001 - protobuf's DecodeError and friends
        raise CnnlabError(f"{path} is not an ONNX model ({_first_line(error)}).") from None
    return {entry.key: entry.value for entry in proto.metadata_props}


def onnx_runner(data: bytes) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    """A function running the ONNX model in ``data`` with onnxruntime on the CPU, and its name."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # the threads PyTorch was given, no more
    session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    return (lambda images: session.run(None, {"images": images})[0]), f"onnxruntime {onnxruntime.__version__}"


def pt2_runner(data: bytes) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    """A function running the ExportedProgram in ``data`` (loaded back from its bytes), and its name."""
    module = torch.export.load(io.BytesIO(data)).module()

    def run(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(images)).numpy()

    return run, "the reloaded torch.export program"


def check_images(run_dir: Path, trained: TrainedModel,
                 data_dir: Path | None) -> tuple[np.ndarray, np.ndarray | None, str]:
    """The test images to check on, the run's saved probabilities of those images, and where they came from:
    every test image predictions.npz covers when the dataset loads with the run's test labels, else the ones
    examples.npz holds."""
    saved = runs.load_npz(run_dir / runs.PREDICTIONS_FILE)
    probabilities, labels = saved.get("probabilities"), saved.get("labels")
    section = (trained.config or {}).get("dataset")
    try:
        dataset = load_dataset(DatasetConfig.model_validate(section), data_dir)
        images = dataset.test_images
        if labels is not None and images.shape == (len(labels), *trained.input_shape) \
                and np.array_equal(dataset.test_labels, labels):
            return images, probabilities, f"the {len(images):,} test images of {dataset.name}"
        reason = f"{dataset.name}'s test images are not the ones predictions.npz covers"
    except (CnnlabError, ValueError, TypeError, OSError) as error:
        reason = f"the dataset did not load: {_first_line(error)}"
    examples_path = run_dir / runs.EXAMPLES_FILE
    if not examples_path.is_file():
        raise CnnlabError(f"There are no test images to check the export on ({reason}; {examples_path} is missing). "
                          "Give --data-dir, or --no-check to export without the check.")
    examples = read_examples(examples_path)
    indices = examples["indices"]
    known = probabilities is not None and len(indices) > 0 and 0 <= int(indices.min()) \
        and int(indices.max()) < len(probabilities)
    return (examples["images"], probabilities[indices] if known else None,
            f"the {len(indices)} test images saved in {runs.EXAMPLES_FILE} ({reason})")


def check_export(model: ProbabilityModel, runner: tuple[Callable[[np.ndarray], np.ndarray], str],
                 images: np.ndarray, saved: np.ndarray | None, source: str) -> ExportCheck:
    """Run ``images`` through ``model`` (PyTorch, float32) and the exported model and compare."""
    run_exported, runtime = runner
    reference, exported = [], []
    for start in range(0, len(images), CHECK_BATCH):
        batch = np.ascontiguousarray(images[start:start + CHECK_BATCH])
        with torch.no_grad():
            reference.append(model(torch.from_numpy(batch)).numpy())
        exported.append(np.asarray(run_exported(batch), dtype=np.float32))
    reference, exported = np.concatenate(reference), np.concatenate(exported)
    agree = reference.argmax(1) == exported.argmax(1)
    top_two = np.sort(reference, axis=1)[:, -2:] if reference.shape[1] > 1 else np.zeros((len(reference), 2))
    near_tie = (top_two[:, 1] - top_two[:, 0]) <= TOLERANCE
    result = ExportCheck(len(images), source, runtime, int(agree.sum()), int((~agree & near_tie).sum()),
                         float(np.abs(reference - exported).max()) if len(images) else 0.0)
    if saved is not None and saved.shape == reference.shape:
        result.saved_same_top1 = int((saved.argmax(1) == reference.argmax(1)).sum())
        result.saved_max_difference = float(np.abs(saved - reference).max()) if len(images) else 0.0
    return result


def failure_message(check: ExportCheck, path: Path) -> str:
    return (f"The exported model disagrees with PyTorch on {check.source}: the top-1 class differs on "
            f"{check.n_images - check.same_top1 - check.near_ties} of {check.n_images} images beyond near-ties and "
            f"probabilities differ by up to {check.max_difference:.2g} (tolerance {TOLERANCE:g}), run by "
            f"{check.runtime}. Nothing was written to {path}. Update PyTorch and the export extra "
            f"(`{EXTRA_HINT}`), or write it unchecked with --no-check and test it yourself.")


def format_export(result: ExportResult) -> str:
    """What `cnnlab export` prints: the check's result, then the file written (last)."""
    lines = [f"exporter: {result.exporter}"]
    check = result.check
    if check is None:
        lines.append("check: skipped (--no-check)")
    else:
        ties = f" and {check.near_ties} near-ties" if check.near_ties else ""
        lines.append(f"check: {check.runtime} against PyTorch on {check.source}: same top-1 on {check.same_top1:,} "
                     f"of {check.n_images:,}{ties}, largest probability difference {check.max_difference:.1e} "
                     f"(tolerance {TOLERANCE:g}): passed")
        if check.saved_same_top1 is not None:
            lines.append(f"against the run's own {runs.PREDICTIONS_FILE}: same top-1 on {check.saved_same_top1:,} of "
                         f"{check.n_images:,}, largest difference {check.saved_max_difference:.1e}{check.saved_note}")
    lines.append(str(result.path))
    return "\n".join(lines)


def evaluation_note(metrics: dict[str, Any]) -> str:
    """Why the run's own evaluation may differ slightly from a float32 one: its precision and test-time views."""
    notes, fast_path = [], metrics.get("fast_path")
    precision = fast_path.get("precision") if isinstance(fast_path, dict) else None
    if precision and precision != "fp32":
        notes.append(f"it evaluated in {precision}")
    if metrics.get("test_time_augmentation") not in (None, "", "none"):
        notes.append(f"with test-time views ({metrics['test_time_augmentation']})")
    return f" ({', '.join(notes)})" if notes else ""


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__
