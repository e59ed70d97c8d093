"""Per-image affine resampling in one batched call: the geometry behind cnnlab's augmentation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

PADDING_MODES = {"nearest": "border", "reflect": "reflection", "constant": "zeros"}  # fill_mode -> grid_sample


def compose_matrices(angle_deg: torch.Tensor, shear_deg: torch.Tensor, scale_x: torch.Tensor,
                     scale_y: torch.Tensor, shift_x: torch.Tensor, shift_y: torch.Tensor) -> torch.Tensor:
    """Per-image (N, 2, 3) output-to-input maps for `apply_affine`.

    The content is scaled per axis (a negative scale mirrors it), sheared along x, rotated
    counter-clockwise by ``angle_deg`` about the centre and shifted by (shift_x, shift_y) pixels
    (right, down). Shear and shift follow torchvision's `affine`, the direction of turn its `rotate`."""
    angle, shear = torch.deg2rad(angle_deg), torch.deg2rad(shear_deg)
    cos, sin, tan = torch.cos(angle), torch.sin(angle), torch.tan(shear)
    # inverse of  shift . rotate . shear . scale,  i.e.  scale^-1 . shear^-1 . rotate^-1 . shift^-1
    row_x = torch.stack([cos + tan * sin, -sin + tan * cos], dim=1) / scale_x[:, None]
    row_y = torch.stack([sin, cos], dim=1) / scale_y[:, None]
    linear = torch.stack([row_x, row_y], dim=1)
    offset = -(linear @ torch.stack([shift_x, shift_y], dim=1)[..., None])
    return torch.cat([linear, offset], dim=2)


def apply_affine(images: torch.Tensor, matrices: torch.Tensor, fill_mode: str = "nearest",
                 constant: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Resample every image through its own matrix in one batched `grid_sample` (bilinear).

    ``matrices`` (N, 2, 3) map output pixel positions to input positions, both measured in
    pixels from the image centre (x right, y down). Outside the image: ``fill_mode`` nearest
    repeats the edge, reflect mirrors, constant gives ``constant`` (per channel or a number)."""
    _, _, height, width = images.shape
    # pixels-from-centre -> grid_sample's [-1, 1] coordinates (align_corners=False): divide by half the size
    half = torch.tensor([width / 2, height / 2], dtype=matrices.dtype, device=matrices.device)
    theta = torch.cat([matrices[..., :2] * half[None, None, :] / half[None, :, None],
                       matrices[..., 2:] / half[None, :, None]], dim=2)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    if fill_mode == "constant":
        resampled = F.grid_sample(images - constant, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return resampled + constant
    return F.grid_sample(images, grid, mode="bilinear", padding_mode=PADDING_MODES[fill_mode], align_corners=False)
