"""One run on several processes (training/distributed.py): torchrun with two CPU processes (gloo) trains
the same weights and history as one process with the same global batch, and only process 0 writes.

The model has neither batch normalisation nor dropout, the precision is float32 and nothing is augmented,
so the only difference between the two is the order of floating-point sums (DDP averages two half-batch
gradients where one process takes one mean): agreement to float tolerance, not bit for bit."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from torch import nn

from cnnlab import runs
from cnnlab.config import load_config
from cnnlab.errors import ConfigError, TrainingInterrupted
from cnnlab.experiment import run_experiment
from cnnlab.models import create_model
from cnnlab.training.distributed import Distributed, torchrun_process
from cnnlab.training.interrupt import StopRequest
from cnnlab.training.loop import _steps_per_epoch
from cnnlab.training.settings import TrainSection

# 1,293 training images = 20 batches of 64 and one of 13: the last is shared 7 + 6, so the loss weights
# (7 * 2 / 13 and 6 * 2 / 13) are what keeps its gradient the global batch's. Early stopping (patience 2,
# an improvement of 0.5 asked) stops after epoch 3 of 4: every process must decide it at the same epoch.
CONFIG = """\
name: digits-two-processes
dataset: digits
model:
  layers: ["Conv2D: 8, 3, 1, same", "MaxPooling: 2, 2", "Flatten", "Dense: 32, relu", "Dense: 10, softmax"]
train:
  epochs: 4
  batch_size: 64
  validation_split: 0.1
  seed: 0
  precision: fp32
  threads: 1
  device: cpu
  early_stopping: {monitor: val_accuracy, patience: 2, min_delta: 0.5, restore_best: false}
optimizer: {name: adam, lr: 0.003}
"""

# Runs `cnnlab` in each process; in processes other than 0, an audit hook reports every file opened for
# writing, and every folder made, renamed or removed, inside $AUDITED_FOLDER.
AUDITED_CNNLAB = textwrap.dedent("""\
    import os, runpy, sys
    WATCHED, WRITING = os.environ["AUDITED_FOLDER"], os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def audit(event, args):
        writes = (event == "open" and not isinstance(args[0], int)
                  and (any(letter in (args[1] or "") for letter in "wax+") or (args[2] or 0) & WRITING))
        changes = event in ("os.mkdir", "os.rename", "os.remove", "os.rmdir", "shutil.rmtree")
        if (writes or changes) and os.path.abspath(os.fsdecode(args[0])).startswith(WATCHED):
            sys.stderr.write(f"process {os.environ['RANK']} wrote {args[0]}\\n")

    if os.environ["RANK"] != "0":
        sys.addaudithook(audit)
    sys.argv = ["cnnlab", *sys.argv[1:]]
    runpy.run_module("cnnlab", run_name="__main__", alter_sys=True)
    """)


def torchrun(tmp_path, *arguments, processes=2):
    script = tmp_path / "audited_cnnlab.py"
    script.write_text(AUDITED_CNNLAB)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               str(script), *arguments]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "AUDITED_FOLDER": str(tmp_path)}
    return subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=600)


def weights_difference(first, second):
    a, b = load_file(str(first / runs.WEIGHTS_FILE)), load_file(str(second / runs.WEIGHTS_FILE))
    assert a.keys() == b.keys()
    return max(float(np.abs(a[key] - b[key]).max()) for key in a)


@pytest.mark.slow
def test_two_processes_train_what_one_process_trains_and_only_process_0_writes(tmp_path):
    (tmp_path / "config.yaml").write_text(CONFIG)
    alone = run_experiment(load_config(str(tmp_path / "config.yaml")), out=tmp_path / "alone", show_progress=False)
    job = torchrun(tmp_path, "train", "config.yaml", "--out", "together", "--quiet")
    assert job.returncode == 0, job.stderr[-3000:]
    together = tmp_path / "together"
    assert job.stdout.split() == ["together"]  # process 0 alone prints the published folder
    assert "wrote" not in job.stderr, job.stderr[-3000:]  # process 1 wrote nothing in the test's folder

    one, two = runs.read_history(alone), runs.read_history(together)
    assert len(one) == len(two) == 3  # early stopping after epoch 3, in both
    for column in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"):
        assert [row[column] for row in two] == pytest.approx([row[column] for row in one], rel=2e-5, abs=1e-6), column
    difference = weights_difference(alone, together)
    assert difference < 1e-5, difference
    metrics_one = json.loads((alone / runs.METRICS_FILE).read_text())
    metrics_two = json.loads((together / runs.METRICS_FILE).read_text())
    assert metrics_two["stop_reason"] == metrics_one["stop_reason"]
    assert metrics_two["test_accuracy"] == pytest.approx(metrics_one["test_accuracy"], abs=1 / 360)
    described = metrics_two["distributed"]
    assert (described["processes"], described["backend"], described["batch_per_process"]) == (2, "gloo", 32)
    assert described["batch_norm"].startswith("per process") and "distributed" not in metrics_one
    assert sorted(path.name for path in together.iterdir()) == sorted(path.name for path in alone.iterdir())


@pytest.mark.slow
def test_a_job_resumes_a_checkpoint_taken_within_an_epoch_by_one_process(tmp_path):
    (tmp_path / "config.yaml").write_text(CONFIG)
    config = load_config(str(tmp_path / "config.yaml"))
    straight = run_experiment(config, out=tmp_path / "straight", show_progress=False)
    with pytest.raises(TrainingInterrupted):  # one process stops after 5 of epoch 2's 21 steps
        run_experiment(config, out=tmp_path / "resumed", show_progress=False, stop=StopRequest(after_steps=26))
    job = torchrun(tmp_path, "train", "--resume", "resumed", "--quiet")
    assert job.returncode == 0, job.stderr[-3000:]
    assert "wrote" not in job.stderr, job.stderr[-3000:]
    one, two = runs.read_history(straight), runs.read_history(tmp_path / "resumed")
    for column in ("train_loss", "train_accuracy", "val_loss"):  # epoch 2's sums: 5 steps alone, 16 by the job
        assert [row[column] for row in two] == pytest.approx([row[column] for row in one], rel=2e-5), column
    assert weights_difference(straight, tmp_path / "resumed") < 1e-5


def test_the_global_batch_must_divide_among_the_processes(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(ConfigError, match="multiple of 4.*train.batch_size=96"):
        torchrun_process(TrainSection(batch_size=98))
    with pytest.raises(ConfigError, match="train.compile"):
        torchrun_process(TrainSection(batch_size=64, compile=True))
    assert torchrun_process(TrainSection(batch_size=64)) == Distributed(rank=1, world_size=4, local_rank=1)
    monkeypatch.setenv("WORLD_SIZE", "1")  # `torchrun --nproc-per-node=1`: one process, trained as always
    assert torchrun_process(TrainSection(batch_size=100)) is None
    monkeypatch.delenv("RANK")
    assert torchrun_process(TrainSection()) is None


@pytest.mark.parametrize("size", [12, 13, 14, 15, 64])
def test_shares_cover_the_batch_once_and_weigh_the_mean_loss_as_one_process(size):
    batch, losses, processes = torch.arange(100, 100 + size), torch.rand(size, dtype=torch.float64), 4
    shares = [Distributed(rank, processes, rank).share(batch) for rank in range(processes)]
    assert torch.equal(torch.cat([part for part, _ in shares]), batch)
    # DDP averages the processes' gradients: the mean over processes of weight * part's mean loss
    averaged = sum(weight * losses[part - 100].mean() for part, weight in shares) / processes
    assert float(averaged) == pytest.approx(float(losses.mean()), rel=1e-12)


def test_a_last_batch_is_kept_when_every_process_gets_two_images_of_it():
    assert _steps_per_epoch(1293, 64) == 21 and _steps_per_epoch(1281, 64) == 20  # one process: as before
    assert _steps_per_epoch(1283, 64, processes=2) == 20  # 3 images: one process would get a single image
    assert _steps_per_epoch(1284, 64, processes=2) == 21


def test_synchronised_batch_norm_keeps_the_model_its_weights_and_their_names():
    # on GPUs `Distributed.start` swaps the batch-norm layers inside the model the run saves and the
    # optimiser steps: the model must stay the same object, with the same parameters under the same names
    built = create_model(load_config("examples/digits.yaml").to_dict()["model"], (1, 8, 8), 10)
    names, parameters = list(built.module.state_dict()), list(built.module.parameters())
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(built.module)
    assert converted is built.module and list(converted.state_dict()) == names
    assert all(new is old for new, old in zip(converted.parameters(), parameters, strict=True))
    assert any(isinstance(layer, nn.SyncBatchNorm) for layer in converted.modules())
