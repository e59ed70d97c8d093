"""Batched augmentation on the training device, the affine resampler, test-time views."""
