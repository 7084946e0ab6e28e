"""Model parallelism: one replica spread over R x C processes by image region (docs/distributed.md)."""
