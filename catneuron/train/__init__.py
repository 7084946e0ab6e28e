"""Training: the single-process trainer, checkpoints, progress; Downpour SGD on Ray in `downpour`."""
