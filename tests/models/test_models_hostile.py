"""Networks too large or windows too wide: refused with a message naming the layer and what to change,
before any weight is allocated; huge inputs never flood a message."""

from __future__ import annotations

import pytest
import torch

from cnnlab import errors
from cnnlab.cli import main
from cnnlab.errors import ConfigError, ShapeError
from cnnlab.models import build_model, parse_layers
from cnnlab.models.build import MAX_PARAMETERS
from cnnlab.models.layers import MAX_WIDTH, MAX_WINDOW


def cli_refuses(capsys, tmp_path, layers: str, *fragments: str) -> str:
    path = tmp_path / "exp.yaml"
    path.write_text(f"dataset: digits\nmodel:\n  layers: {layers}\n")
    code = main(["summary", str(path)])
    err = capsys.readouterr().err
    message = " ".join(err.split())
    assert code == 2, err
    assert "Traceback" not in err and err.startswith("error:") and len(err) < 1500, err
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


@pytest.mark.parametrize("layer, problem", [
    (f"Dense: {MAX_WIDTH + 1}", f"units must be a whole number of at least 1 and at most {MAX_WIDTH:,}"),
    ("Dense: 1000000000", "units must be a whole number"),
    (f"Conv2D: {MAX_WIDTH + 1}, 3", "filters must be a whole number"),
    (f"Conv2D: 8, {MAX_WINDOW + 1}", f"kernel must be a whole number of at least 1 and at most {MAX_WINDOW:,}"),
    (f"MaxPooling: 2, {10**30}", "stride must be a whole number"),
    (f"Conv2D: 8, 3, 1, {MAX_WINDOW + 1}", "padding must be"),
    ("Scale: inf", "positive finite number"),
    ("Dropout: nan", "dropout rate"),
])
def test_widths_windows_and_factors_are_bounded(layer, problem):
    with pytest.raises(ConfigError, match=problem):
        parse_layers([layer, "Flatten", "Dense: classes"])


def test_a_huge_kernel_with_same_padding_is_refused(capsys, tmp_path):
    with pytest.raises(ShapeError, match=r"kernel 9 \(9x9\) is larger than the 8x8 input: with padding 'same'"):
        build_model(["Conv2D: 4, 9, 1, same", "Flatten", "Dense: classes"], (1, 8, 8), 10)
    with pytest.raises(ShapeError, match="pool 4"):
        build_model(["Conv2D: 4, 3, 1, valid", "MaxPooling: 4, 1, same", "Flatten", "Dense: classes"], (1, 5, 5), 10)
    built = build_model(["Conv2D: 4, 8, 1, same", "Flatten", "Dense: classes"], (1, 8, 8), 10)  # = the input: fine
    assert built.module(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    cli_refuses(capsys, tmp_path, '["Conv2D: 64, 4000, 1, same", "Flatten", "Dense: classes"]',
                'Layer 1 "Conv2D: 64, 4000, 1, same"', "kernel 4000", "at most 8")


def test_too_many_parameters_are_refused_before_allocating(capsys, tmp_path, monkeypatch):
    allocated = []
    original = torch.nn.Linear.__init__
    monkeypatch.setattr(torch.nn.Linear, "__init__",
                        lambda self, n_in, n_out, *args, **kwargs: allocated.append(n_in * n_out) or
                        original(self, n_in, n_out, *args, **kwargs))
    layers = ["Flatten", "Dense: 65536", "Dense: 65536", "Dense: classes"]
    with pytest.raises(ConfigError, match=r'Up to layer 3 "Dense: 65536" the network has [\d,]+ parameters, more '
                                          f"than the {MAX_PARAMETERS:,}"):
        build_model(layers, (3, 32, 32), 10)
    assert max(allocated) < MAX_PARAMETERS, "the refused layer was allocated"
    message = cli_refuses(capsys, tmp_path, '["Conv2D: 65536, 3", "Flatten", "Dense: 65536", "Dense: classes"]',
                          'layer 3 "Dense: 65536"', "GlobalAvgPool")
    assert "GiB" in message


def test_a_layer_output_too_large_per_image_is_refused():
    with pytest.raises(ConfigError, match=r'Layer 1 "Conv2D: 64, 3, 1, same" outputs \(None, 64, 4096, 4096\)'):
        build_model(["Conv2D: 64, 3, 1, same", "GlobalAvgPool", "Dense: classes"], (3, 4096, 4096), 10)


def test_the_memory_estimate_says_what_to_change(monkeypatch):
    monkeypatch.setattr(errors, "physical_memory_bytes", lambda: 1 << 20)  # a machine of 1 MiB
    with pytest.raises(ConfigError, match=r"Training the network up to layer 2 .* needs about [\d.]+ MiB of memory, "
                                          r"more than this machine's 1.0 MiB\. Make the layer narrower"):
        build_model(["Flatten", "Dense: 1000", "Dense: classes"], (1, 28, 28), 10)


def test_huge_layer_texts_are_shortened(capsys, tmp_path):
    huge = "y" * 100_000
    for layers in ([f"Conv2D: {huge}"], [f"{huge}: 3"], [{"type": "Dense", "units": huge}],
                   [{"type": "Dense", huge: 3}], [f"Dense: 10, {huge}"]):
        with pytest.raises(ConfigError) as caught:
            parse_layers([*layers, "Flatten", "Dense: classes"])
        assert len(str(caught.value)) < 1000, str(caught.value)[:200]
    cli_refuses(capsys, tmp_path, f'["Dense: 10, {huge}"]', "unknown activation", "...")
