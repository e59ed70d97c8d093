"""Data augmentation, the stage between the data and the model.

`settings` holds the user's `augment:` section (Keras or torchvision words), `plan` its resolved
one-vocabulary form and report description, `augmenter` the batched on-device augmenter,
`resample` the affine resampler, `test_time` the test-time views and `preview` augmented images
back as pixels."""
