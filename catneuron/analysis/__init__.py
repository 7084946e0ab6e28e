"""Analysis: selectivity scans and baselines, stimuli, invariance, fine-tuning."""
