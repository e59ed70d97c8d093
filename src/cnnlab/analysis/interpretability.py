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


def _find_layer(model: nn.Module, layer_name: str) -> nn.Module:
    layers = dict(model.named_modules())
    if layer_name not in layers:
        known = ", ".join(name for name in layers if name)
        raise ValueError(f'No layer called "{layer_name}"; the layers are: {known}.')
    return layers[layer_name]
