"""Commands that compose the stages: suites, sweeps, the learning-rate finder, features, explore, augmentation previews."""
