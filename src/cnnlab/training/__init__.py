"""The training loop and its parts: precision and memory layout, optimisers and schedules, weight averaging, evaluation, the frozen-backbone feature cache."""
