"""Batched data augmentation on the training device.

Every image gets its own random parameters and there is no per-image Python loop: all geometry
(flips, rotation, shift, zoom/scale, shear) is one 2x3 matrix per image applied by a single
`affine_grid` + `grid_sample`; pad-and-crop is two gathers; colour jitter and cutout are per-image
factors and masks broadcast over the batch. What to do comes from an `AugmentPlan`."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cnnlab.augment.plan import AugmentPlan, Pair
from cnnlab.augment.resample import apply_affine, compose_matrices
from cnnlab.augment.settings import AugmentConfig
from cnnlab.data.normalization import Normalization
from cnnlab.errors import ConfigError

CROP_PADDING_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}  # -> F.pad


class Augmenter:
    """Augments normalised float batches (N, C, H, W) on their device; same shape, dtype and device out.

    Colour jitter and constant fill act on pixel values: `normalization` says how pixels were
    normalised (None: images already hold pixel values in [0, 1]). Cutout fills with 0 in the
    normalised space (the dataset mean under z-score), as the cutout paper does."""

    def __init__(self, plan: AugmentPlan, image_shape: tuple[int, int, int], device: torch.device | str,
                 seed: int, normalization: Normalization | None = None):
        self.plan = plan
        self.channels, self.height, self.width = image_shape
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.flip_generator = torch.Generator(device=self.device).manual_seed(seed + 1)
        self.first_epoch_flips = torch.zeros(0, dtype=torch.bool, device=self.device)
        normalization = normalization or Normalization("scale", [0.0] * self.channels, [1.0] * self.channels, 1 / 255)
        mean, std = (torch.tensor(values, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
                     for values in (normalization.mean, normalization.std))
        # normalised = pixel (0..1) * pixel_multiplier + black
        self.black, self.pixel_multiplier = -mean / std, 255 * normalization.scale / std
        fraction_x, fraction_y = plan.shift_fraction
        self.shift_limit_px = torch.tensor([fraction_x * self.width, fraction_y * self.height], device=self.device)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, indices: torch.Tensor | None = None, epoch: int = 1) -> torch.Tensor:
        """A new batch; each image drawn its own parameters, and image i stays at row i. ``indices``
        (the images' indices in the dataset) and ``epoch`` are needed by alternating flips only."""
        original = images
        if self.plan.has_colour:
            images = self.jitter_colour(images)
        if self.plan.alternating_flip:
            images = torch.where(self.alternating_flips(images.shape[0], indices, epoch).view(-1, 1, 1, 1),
                                 images.flip(3), images)
        if self.plan.has_affine:
            images = apply_affine(images, self.sample_matrices(images.shape[0]).to(images.dtype),
                                  self.plan.fill_mode, self.black.to(images.dtype))
        elif self.plan.horizontal_flip > 0 and not self.plan.alternating_flip or self.plan.vertical_flip > 0:
            images = self.flip(images)
        if self.plan.crop_padding:
            images = self.pad_and_crop(images)
        if self.plan.cutout_size:
            images = self.cut_out(images)
        if original.is_contiguous(memory_format=torch.channels_last) and not original.is_contiguous():
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def state_dict(self) -> dict:
        """The random state (both generators and the per-image flip bits drawn so far), as tensors: what a
        training checkpoint keeps so a resumed run draws the same parameters."""
        return {"generator": self.generator.get_state(), "flip_generator": self.flip_generator.get_state(),
                "first_epoch_flips": self.first_epoch_flips.cpu()}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a `state_dict`."""
        self.generator.set_state(state["generator"])
        self.flip_generator.set_state(state["flip_generator"])
        self.first_epoch_flips = state["first_epoch_flips"].to(self.device)

    def uniform(self, bounds: Pair, count: int, columns: int | None = None) -> torch.Tensor:
        """``count`` (or count x columns) values uniform in ``bounds``, from this augmenter's generator."""
        shape = (count,) if columns is None else (count, columns)
        unit = torch.rand(shape, generator=self.generator, device=self.device)
        return bounds[0] + (bounds[1] - bounds[0]) * unit

    def flip_signs(self, probability: float, count: int) -> torch.Tensor:
        """-1 where an image is flipped (with ``probability``), +1 elsewhere."""
        flipped = torch.rand(count, generator=self.generator, device=self.device) < probability
        return 1.0 - 2.0 * flipped.float()

    def alternating_flips(self, count: int, indices: torch.Tensor | None, epoch: int) -> torch.Tensor:
        """Which images to mirror: a fixed pseudo-random half of the dataset in odd epochs, the other half
        in even ones, so every image is seen both ways in any two consecutive epochs (without
        ``indices``, a fresh random half)."""
        if indices is None:
            return torch.rand(count, generator=self.generator, device=self.device) < 0.5
        indices = indices.to(self.device)
        needed = int(indices.max()) + 1
        if self.first_epoch_flips.numel() < needed:  # one random bit per image, drawn once from the seed
            more = torch.rand(needed - self.first_epoch_flips.numel(), generator=self.flip_generator,
                              device=self.device) < 0.5
            self.first_epoch_flips = torch.cat([self.first_epoch_flips, more])
        return self.first_epoch_flips[indices] ^ (epoch % 2 == 0)

    def sample_matrices(self, count: int) -> torch.Tensor:
        """One random output-to-input matrix per image (see `compose_matrices`), flips included
        (alternating flips are applied before, as they depend on the image, not on chance)."""
        plan = self.plan
        horizontal = 0.0 if plan.alternating_flip else plan.horizontal_flip
        flip_x, flip_y = self.flip_signs(horizontal, count), self.flip_signs(plan.vertical_flip, count)
        scale = self.uniform(plan.scale, count)
        zoom = self.uniform(plan.zoom, count, 2)  # Keras draws the two axes independently
        shift = self.uniform((-1.0, 1.0), count, 2) * self.shift_limit_px
        return compose_matrices(angle_deg=self.uniform(plan.rotation_deg, count),
                                shear_deg=self.uniform(plan.shear_deg, count),
                                scale_x=flip_x * scale / zoom[:, 0], scale_y=flip_y * scale / zoom[:, 1],
                                shift_x=shift[:, 0], shift_y=shift[:, 1])

    def flip(self, images: torch.Tensor) -> torch.Tensor:
        """Flips alone need no resampling: a per-image choice between the image and its mirror."""
        for probability, axis in ((self.plan.horizontal_flip, 3), (self.plan.vertical_flip, 2)):
            if probability > 0:
                chosen = self.flip_signs(probability, images.shape[0]).view(-1, 1, 1, 1) < 0
                images = torch.where(chosen, images.flip(axis), images)
        return images

    def pad_and_crop(self, images: torch.Tensor) -> torch.Tensor:
        """torchvision RandomCrop(size, padding): integer shifts up to ``padding`` pixels, per image."""
        count, channels, height, width = images.shape
        padding = self.plan.crop_padding
        black, mode = self.black.to(images.dtype), CROP_PADDING_MODES[self.plan.crop_padding_mode]
        padded = F.pad(images - black, (padding,) * 4, mode=mode) + black  # constant padding gives black
        offsets = torch.randint(0, 2 * padding + 1, (count, 2), generator=self.generator, device=self.device)
        rows = offsets[:, 0:1] + torch.arange(height, device=self.device)
        columns = offsets[:, 1:2] + torch.arange(width, device=self.device)
        flat = (rows[:, :, None] * padded.shape[3] + columns[:, None, :]).view(count, 1, height * width)
        return padded.flatten(2).gather(2, flat.expand(count, channels, -1)).view(count, channels, height, width)

    def jitter_colour(self, images: torch.Tensor) -> torch.Tensor:
        """torchvision ColorJitter in a fixed order (brightness, contrast, saturation), clamped to [0, 1] pixels."""
        count = images.shape[0]
        multiplier, black = self.pixel_multiplier.to(images.dtype), self.black.to(images.dtype)
        pixels = (images - black) / multiplier
        factor = self.uniform(self.plan.brightness, count).view(-1, 1, 1, 1).to(images.dtype)
        pixels = (pixels * factor).clamp(0, 1)
        factor = self.uniform(self.plan.contrast, count).view(-1, 1, 1, 1).to(images.dtype)
        mean = _grey(pixels).mean(dim=(1, 2, 3), keepdim=True)
        pixels = (factor * pixels + (1 - factor) * mean).clamp(0, 1)
        factor = self.uniform(self.plan.saturation, count).view(-1, 1, 1, 1).to(images.dtype)
        pixels = (factor * pixels + (1 - factor) * _grey(pixels)).clamp(0, 1)
        return pixels * multiplier + black

    def cut_out(self, images: torch.Tensor) -> torch.Tensor:
        """Zero ``cutout_count`` squares per image, centred anywhere (so possibly cut by the border)."""
        count, _, height, width = images.shape
        size, squares = self.plan.cutout_size, self.plan.cutout_count
        centres = torch.rand((count, squares, 2), generator=self.generator, device=self.device)
        top, left = ((centres * torch.tensor([height, width], device=self.device)).long() - size // 2).unbind(2)
        rows = torch.arange(height, device=self.device).view(1, 1, height)
        columns = torch.arange(width, device=self.device).view(1, 1, width)
        inside_rows = (rows >= top[..., None]) & (rows < top[..., None] + size)
        inside_columns = (columns >= left[..., None]) & (columns < left[..., None] + size)
        mask = (inside_rows[..., :, None] & inside_columns[..., None, :]).any(dim=1)
        return images.masked_fill(mask[:, None], 0.0)


def _grey(pixels: torch.Tensor) -> torch.Tensor:
    if pixels.shape[1] != 3:
        return pixels.mean(dim=1, keepdim=True)
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
    return (pixels * weights).sum(dim=1, keepdim=True)


def build_augmenter(config: AugmentConfig, image_shape: tuple[int, int, int], device: torch.device | str,
                    seed: int, normalization: Normalization | None = None) -> Augmenter | None:
    """The augmenter for ``config``, or None when training batches are left as they are."""
    plan = config.plan()
    if plan.crop_size is not None and (plan.crop_size, plan.crop_size) != tuple(image_shape[1:]):
        raise ConfigError(f"augment.random_crop.size is {plan.crop_size} but the images are "
                          f"{image_shape[1]}x{image_shape[2]}: augmentation keeps the image size, so leave size out.")
    return Augmenter(plan, image_shape, device, seed, normalization) if plan.trains else None
