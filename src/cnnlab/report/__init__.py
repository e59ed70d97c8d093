"""The report document model, the run report, comparisons and plots."""
