"""Downpour SGD on Ray: model replicas (single-process or model-parallel) pull and push asynchronously against
sharded parameter servers (docs/distributed.md). The driver is `driver.Downpour`."""
