"""Progress: a bar on a terminal and in a notebook (tqdm.auto), lines in a log (stderr a file or a pipe):
one per epoch as always, plus one at each tenth of long work, none for short work, nothing when quiet."""

import io
import itertools
import sys

import pytest
import torch

from cnnlab import runs
from cnnlab.config import load_config
from cnnlab.data import DatasetConfig, load_dataset
from cnnlab.data.device_images import DeviceImages
from cnnlab.data.normalization import fit_normalization
from cnnlab.models import create_model
from cnnlab.training.loop import fit
from cnnlab.training.precision import ComputePlan


class Terminal(io.StringIO):
    def isatty(self):
        return True


def fake_clock(monkeypatch, seconds_per_call):
    ticks = itertools.count(0.0, seconds_per_call)
    monkeypatch.setattr(runs.LogProgress, "clock", staticmethod(lambda: next(ticks)))


def test_the_bar_is_drawn_where_it_can_be_and_logged_elsewhere(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a log file or a pipe
    monkeypatch.delitem(sys.modules, "ipykernel.zmqshell", raising=False)
    assert isinstance(runs.progress_bar(100, "work"), runs.LogProgress)
    assert runs.progress_bar(100, "work", enabled=False).disable
    assert runs.progress_bar(10, "work", minimum=50).disable
    monkeypatch.setattr(sys, "stderr", Terminal())
    bar = runs.progress_bar(100, "work")
    assert not isinstance(bar, runs.LogProgress) and not bar.disable
    bar.close()
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    monkeypatch.setitem(sys.modules, "ipykernel.zmqshell", object())  # inside a Jupyter kernel
    assert runs.in_notebook()
    bar = runs.progress_bar(100, "work")
    assert not isinstance(bar, runs.LogProgress) and not bar.disable
    bar.close()


def test_long_work_gets_a_line_at_each_tenth_short_work_none(monkeypatch, capsys):
    fake_clock(monkeypatch, 5.0)  # a tenth every five seconds: a line at every other tenth (ten seconds apart)
    with runs.LogProgress(100, "epoch 1/3", "batch") as progress:
        for step in range(100):
            progress.set_postfix(loss=f"{1 / (step + 1):.4f}", refresh=False)
            progress.update(1)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "epoch 1/3: 20% (20/100 batch) 10s  loss=0.0500"
    assert [line.split(":")[1].split("%")[0].strip() for line in lines] == ["20", "40", "60", "80"]
    fake_clock(monkeypatch, 20.0)
    with runs.LogProgress(100, "epoch 2/3", "batch") as progress:
        for _ in range(100):
            progress.update(1)
    assert len(capsys.readouterr().err.splitlines()) == 9, "a tenth every 20 s: every tenth but the end"
    fake_clock(monkeypatch, 0.1)
    with runs.LogProgress(1000, "quick", "img") as progress:
        for _ in range(1000):
            progress.update(1)
    assert capsys.readouterr().err == ""
    with runs.LogProgress(0, "download of unknown size", "B") as progress:
        progress.update(4096)
    assert capsys.readouterr().err == ""


@pytest.fixture(scope="module")
def digits():
    dataset = load_dataset(DatasetConfig(name="digits"))
    return DeviceImages(dataset.train_images, dataset.train_labels, fit_normalization("scale", dataset.train_images),
                        torch.device("cpu"))


def test_training_in_a_log_prints_epoch_lines_and_lines_within_long_epochs(digits, monkeypatch, capsys):
    fake_clock(monkeypatch, 30.0)  # each epoch "lasts" minutes
    config = load_config("mlp", ["train.epochs=2", "train.precision=fp32"])
    model = create_model("mlp", (1, 8, 8), 10).module
    fit(model, digits, torch.arange(0, 640), torch.arange(640, 800), config, plan=ComputePlan(torch.device("cpu")))
    lines = capsys.readouterr().err.splitlines()
    assert [line.split()[1] for line in lines if line.startswith("epoch  ")] == ["1/2", "2/2"]
    within = [line for line in lines if line.startswith("epoch 1/2: ")]
    assert len(within) == 9 and "(2/20 batch)" in within[0] and "loss=" in within[0] and "lr=" in within[0]
    fit(model, digits, torch.arange(0, 640), torch.arange(640, 800), config, show_progress=False,
        plan=ComputePlan(torch.device("cpu")))
    assert capsys.readouterr().err == "", "quiet: nothing"
