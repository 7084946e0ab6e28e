"""What analysis, training and data share: the run folder, checkpoints and atomic files.

It sits below them: `files` knows no model, so data can use it without importing the network."""
