"""Looking inside a trained network: its first-layer kernels, the feature maps of a layer,
and Grad-CAM maps of where it looked for a class (Selvaraju et al., 2017).

Everything takes an ``nn.Module`` and normalised image tensors and returns arrays; the
figures are drawn by ``cnnlab.report.plots`` and placed in the report by ``cnnlab.report.network_section``."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.ReLU6, nn.Hardswish)
# Layers that act on each position alone: between a convolution and a Flatten they keep it "directly" feeding it.
PER_POSITION = (*ACTIVATIONS, nn.Dropout, nn.Dropout2d, nn.BatchNorm2d, nn.Identity)
# A Grad-CAM map this small (each side, in cells) is a few blobs once stretched over a larger image.
COARSE_MAP_SIDE = 8


def first_layer_kernels(model: nn.Module) -> np.ndarray | None:
    """The weights (out, in, kh, kw) of the network's first layer with weights, or None when
    that layer is not a Conv2d (an MLP's first Dense layer has no kernels to show)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module.weight.detach().cpu().float().numpy()
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv3d, nn.ConvTranspose2d)):
            return None
    return None


def kernel_images(kernels: np.ndarray) -> np.ndarray:
    """Kernels (out, in, kh, kw) as pictures in [0, 1], each scaled by its own range: colour
    (out, kh, kw, 3) when they read three input channels, grey (out, kh, kw) otherwise (the
    mean over input channels)."""
    kernels = np.asarray(kernels, dtype=np.float64)
    pictures = np.transpose(kernels, (0, 2, 3, 1)) if kernels.shape[1] == 3 else kernels.mean(axis=1)
    axes = tuple(range(1, pictures.ndim))
    low = pictures.min(axis=axes, keepdims=True)
    span = pictures.max(axis=axes, keepdims=True) - low
    scaled = np.divide(pictures - low, span, out=np.full(pictures.shape, 0.5), where=span > 0)
    return scaled.astype(np.float32)


def conv_layer_names(model: nn.Module) -> list[str]:
    """Names (as in ``named_modules``) of the Conv2d layers, in order; when an activation follows a
    convolution directly, its name is used instead, so maps are the rectified responses."""
    modules = list(model.named_modules())
    names = []
    for position, (name, module) in enumerate(modules):
        if isinstance(module, nn.Conv2d):
            following = modules[position + 1] if position + 1 < len(modules) else None
            names.append(following[0] if following and isinstance(following[1], ACTIVATIONS) else name)
    return names


def feature_maps(model: nn.Module, images: torch.Tensor, layer_name: str) -> torch.Tensor:
    """The output (N, C, h, w) of the layer called ``layer_name`` for normalised ``images``."""
    layer = _find_layer(model, layer_name)
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda module, inputs, output: captured.append(output.detach()))
    try:
        model.eval()
        with torch.no_grad():
            model(images)
    finally:
        handle.remove()
    return captured[-1]


def grad_cam(model: nn.Module, images: torch.Tensor, target_classes: Sequence[int] | torch.Tensor,
             layer: str | None = None) -> np.ndarray:
    """Grad-CAM maps (N, H, W) in [0, 1] at the images' own size: where the layer's activations
    (by default the last convolution's) raised the score of each image's target class.

    The activations are weighted by the spatial mean of the class score's gradient, summed over
    channels, rectified, upsampled bilinearly and scaled to [0, 1] per image (a map with no
    positive evidence stays 0)."""
    if layer is None:
        names = conv_layer_names(model)
        if not names:
            raise ValueError("Grad-CAM needs a convolutional layer, and this model has none.")
        layer = names[-1]
    module = _find_layer(model, layer)
    captured: list[torch.Tensor] = []

    def keep_output(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        captured.append(output)
        return output.clone()  # an in-place activation after this layer must not overwrite what we keep

    handle = module.register_forward_hook(keep_output)
    model.eval()
    targets = torch.as_tensor(np.asarray(target_classes), dtype=torch.long, device=images.device)
    try:
        with torch.enable_grad():
            inputs = images.detach().clone().requires_grad_(True)  # gradients flow even through frozen layers
            logits = model(inputs)
            score = logits.gather(1, targets.view(-1, 1)).sum()
            activations = captured[-1]
            (gradients,) = torch.autograd.grad(score, activations)
    finally:
        handle.remove()
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    cams = F.relu((weights * activations.detach()).sum(dim=1, keepdim=True))
    cams = F.interpolate(cams, size=tuple(images.shape[-2:]), mode="bilinear", align_corners=False)[:, 0]
    peak = cams.flatten(1).max(dim=1).values.view(-1, 1, 1)
    cams = torch.where(peak > 0, cams / peak.clamp_min(1e-12), torch.zeros_like(cams))
    return cams.clamp(0, 1).cpu().numpy().astype(np.float32)


def grad_cam_caveat(model: nn.Module, images: torch.Tensor, layer: str) -> str | None:
    """Why Grad-CAM of ``layer`` cannot mean much for this network, in a sentence for the report, or None.

    Two cases: the layer's map is at most 8x8 cells on a larger image (stretched to the image, it can only
    say which part, never which object), or the layer feeds Flatten directly. Grad-CAM weighs each channel
    by its gradient averaged over positions, which is what global pooling does to the gradient; after Flatten
    every position has its own weights in the next Dense layer, and their average can have the opposite sign
    of the weights where the object is, so the map lights up the background as readily as the object."""
    reasons = []
    height, width = feature_maps(model, images[:1], layer).shape[-2:]
    if max(height, width) <= COARSE_MAP_SIDE and height * width < images.shape[-2] * images.shape[-1]:
        reasons.append(f"its feature map is only {height}x{width} cells for {images.shape[-2]}x{images.shape[-1]}-"
                       "pixel images, so the map shows at best which part of the image, not which object")
    if feeds_flatten(model, layer):
        reasons.append("the last convolution feeds Flatten directly: each position has its own weights in the Dense "
                       "layer after it, and Grad-CAM's average gradient over positions can point away from the object")
    if not reasons:
        return None
    return (f"Grad-CAM cannot mean much for this network (layer {layer}): " + "; and ".join(reasons) + ". Read "
            "these maps as a rough hint, not as where the network looked; a network with global average pooling "
            "before its classifier gives maps that can be read.")


def feeds_flatten(model: nn.Module, layer: str) -> bool:
    """True when the first module after ``layer`` that mixes positions is an ``nn.Flatten`` (activations,
    dropout and batch norm in between act on each position alone)."""
    modules = list(model.named_modules())
    names = [name for name, _ in modules]
    if layer not in names:
        raise ValueError(f'No layer called "{layer}".')
    inside = {name for name, _ in modules if name.startswith(layer + ".")}
    for name, module in modules[names.index(layer) + 1:]:
        if name in inside or list(module.children()):  # the layer's own parts, and containers: look inside
            continue
        if isinstance(module, nn.Flatten):
            return True
        if not isinstance(module, PER_POSITION):
            return False
    return False


def _find_layer(model: nn.Module, layer_name: str) -> nn.Module:
    layers = dict(model.named_modules())
    if layer_name not in layers:
        known = ", ".join(name for name in layers if name)
        raise ValueError(f'No layer called "{layer_name}"; the layers are: {known}.')
    return layers[layer_name]
