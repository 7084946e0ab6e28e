"""`--watch` under `--partitions`: rank 0 scans the whole network, gathered from the blocks, at the watch points.

The watch (catneuron.train.watch) scans every neuron of the whole network, so it cannot run on blocks.
Every rank holds a `BlockWatch` and the trainer calls it as it calls a `Watch`: rank 0 decides when to
scan (its clock and history) and tells the others; at a scan every rank sends its blocks to rank 0,
which rebuilds the whole network and runs the single-process watch on it. The other ranks go on to the
next step, where the batch rank 0 sends after the scan holds them.
"""

from __future__ import annotations

from pathlib import Path

import torch

from catneuron.model.config import Config
from catneuron.model.network import Network
from catneuron.parallel.device import group_device
from catneuron.parallel.halo import rank0_decides
from catneuron.parallel.network import BlockNetwork
from catneuron.parallel.state import gather_model
from catneuron.train.metrics import MetricsLog
from catneuron.train.watch import Watch


class BlockWatch:
    """The `Watch` of a model-parallel replica, on every rank (`watch`: rank 0's, None on the others); a
    `catneuron.train.loop.Watcher`, as `Watch` is."""

    def __init__(self, watch: Watch | None, network: BlockNetwork) -> None:
        self.watch, self.network = watch, network

    def _whole(self) -> Network | None:
        """The whole network on rank 0, on the device rank 0 computes on (None elsewhere); every rank takes part."""
        state = gather_model(self.network)
        if state is None:
            return None
        with torch.random.fork_rng(devices=[]):  # building it draws weights: keep rank 0's generator as the others'
            whole = Network(self.network.config)
        whole.load_state_dict(state)
        return whole.to(group_device())

    def start(self, run: Path, config: Config, data_spec: str, source, metrics: MetricsLog | None,
              network: BlockNetwork, images: int, max_seconds: float | None = None) -> None:
        """Watch.start on rank 0 with the whole network and rank 0's own source (`source` shares its batches)."""
        whole = self._whole()
        if self.watch is not None:
            assert whole is not None and metrics is not None  # rank 0 gathers the network and writes the metrics
            self.watch.start(run, config, data_spec, source.source, metrics, whole, images, max_seconds)

    def due(self, images: int) -> bool:
        return rank0_decides(self.watch is not None and self.watch.due(images))

    def observe(self, network: BlockNetwork, images: int, step: int) -> None:
        whole = self._whole()
        if self.watch is not None:
            assert whole is not None  # rank 0's
            self.watch.observe(whole, images, step)

    def ensure(self, network: BlockNetwork, images: int, step: int) -> None:
        if rank0_decides(self.watch is not None and images > self.watch.last_images):
            self.observe(network, images, step)

    def fields(self, images: int | None = None) -> dict[str, str]:
        return self.watch.fields(images) if self.watch is not None else {}
