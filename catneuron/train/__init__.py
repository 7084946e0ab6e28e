"""Training: the single-process trainer, checkpoints, progress, and the watch that scans while it trains."""
