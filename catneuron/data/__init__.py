"""Data: image folders, the embedded corpus, video frames, WebDataset shards, concept sets."""
