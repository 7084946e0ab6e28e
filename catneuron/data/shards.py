"""WebDataset tar shards: writing them atomically, and streaming them into training.

A shard is a plain tar of `KEY.jpg` + `KEY.json` pairs, readable by `webdataset` and by `tar`.
`ShardSource` streams shards through a shuffle buffer in loader worker processes, splitting the
shards between replicas (Downpour) and between the workers of each replica.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from braceexpand import braceexpand
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from catneuron.data.images import IMAGE_EXTENSIONS, UNREADABLE, to_square
from catneuron.errors import UserError
from catneuron.store.files import write_atomic

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


@dataclass
class Sample:
    key: str
    jpeg: bytes
    meta: dict


def shard_bytes(samples: list[Sample]) -> bytes:
    """A tar of the samples, byte-for-byte reproducible (fixed mtime, owner and mode)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for s in samples:
            for name, data in ((f"{s.key}.jpg", s.jpeg), (f"{s.key}.json", json.dumps(s.meta).encode())):
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), 0o644, 0
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def write_shard(path: Path, samples: list[Sample]) -> int:
    """Write a shard atomically (temporary file, then rename): a killed run never leaves half a shard."""
    data = shard_bytes(samples)
    write_atomic(path, data)
    return len(data)


def shard_images(path: Path) -> Iterator[tuple[str, bytes]]:
    """(member name, bytes) of each image in a shard, in tar order; a truncated shard ends early, with a warning."""
    try:
        with tarfile.open(path, mode="r|") as tar:
            for member in tar:
                if member.isfile() and Path(member.name).suffix.lower() in IMAGE_EXTENSIONS:
                    data = tar.extractfile(member).read()  # type: ignore[union-attr]  # a file member has one
                    if len(data) < member.size:
                        raise EOFError(f"{member.name} cut short")
                    yield member.name, data
    except (tarfile.TarError, OSError, EOFError) as e:
        log.warning(f"catneuron: shard {path}: {e}; skipping the rest of it")


def decode(data: bytes, size: int, channels: int) -> np.ndarray:
    """JPEG bytes to uint8 (channels, size, size); libjpeg scales down while decoding (draft), which is the cost."""
    with Image.open(io.BytesIO(data)) as image:
        image.draft("L" if channels == 1 else "RGB", (size, size))
        return np.array(to_square(image, size, channels))  # a writable copy, as torch wants


def list_shards(spec: str, flag: str = "--data") -> list[Path]:
    """A brace pattern (`DIR/shard-{000000..000012}.tar`), one .tar file, or a folder holding *.tar shards."""
    if "{" in spec:
        paths = [Path(p) for p in braceexpand(spec)]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise UserError(f"{flag} {spec}: shard {missing[0]} not found{more}")
        return paths
    path = Path(spec)
    if path.is_file() and path.suffix == ".tar":
        return [path]
    return sorted(path.glob("*.tar")) if path.is_dir() else []


def is_shard_spec(spec: str) -> bool:
    """Whether `--data` names shards rather than a folder of images."""
    return ("{" in spec and ".tar" in spec) or spec.endswith(".tar") or bool(list_shards(spec))


def read_manifest(folder: Path) -> dict | None:
    path = folder / MANIFEST
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None


def assignment(shards: int, replica: int, replicas: int, worker: int, workers: int) -> tuple[slice, int, int]:
    """Which shards (a slice of the epoch's order) and which of their samples (every `stride`-th from
    `offset`) one loader worker of one replica reads.

    Shards are split between the replicas x workers when there are enough of them; otherwise every
    unit reads every shard and keeps its share of the samples, so a one-shard corpus still feeds all.
    """
    units, unit = replicas * workers, replica + replicas * worker
    if shards >= units:
        return slice(unit, None, units), 1, 0
    return slice(None), units, unit


class _Stream(IterableDataset):
    """Endless uint8 samples of one replica, in the loader worker that iterates it.

    The first epoch is decoded from the shards; if a worker's share fits in its part of `cache_bytes`,
    later epochs replay it from memory in a fresh random order, since decoding costs more CPU than a
    small model's training step and would otherwise starve it on a few cores.
    """

    def __init__(self, shards: list[Path], size: int, channels: int, seed: int, start_step: int, buffer: int,
                 replica: int, replicas: int, flip: bool, cache_bytes: int) -> None:
        self.shards, self.size, self.channels = shards, size, channels
        self.seed, self.start_step, self.buffer = seed, start_step, buffer
        self.replica, self.replicas, self.flip, self.cache_bytes = replica, replicas, flip, cache_bytes

    def _read(self, epoch: int, worker: int, workers: int) -> Iterator[np.ndarray]:
        # The same order in every replica and worker (seed, start_step, epoch): the split is a partition.
        order = np.random.default_rng([self.seed, self.start_step, epoch]).permutation(len(self.shards))
        part, stride, offset = assignment(len(order), self.replica, self.replicas, worker, workers)
        for index in order[part]:
            for n, (_, data) in enumerate(shard_images(self.shards[index])):
                if n % stride == offset:
                    try:
                        yield decode(data, self.size, self.channels)
                    except UNREADABLE:
                        continue

    def __iter__(self) -> Iterator[np.ndarray]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        rng = np.random.default_rng([self.seed, self.start_step, self.replica, worker])
        buffer: list[np.ndarray] = []
        cache: list[np.ndarray] | None = [] if self.cache_bytes > 0 else None
        cached = False
        for epoch in itertools.count():
            images = (iter(cache[i] for i in rng.permutation(len(cache))) if cached and cache is not None
                      else self._read(epoch, worker, workers))
            seen = 0
            for image in images:
                seen += 1
                if cache is not None and not cached:
                    cache.append(image)
                    if len(cache) * image.nbytes > self.cache_bytes // workers:
                        cache = None  # too big: stream every epoch
                if self.flip and rng.random() < 0.5:
                    image = np.ascontiguousarray(image[..., ::-1])
                buffer.append(image)
                if len(buffer) >= self.buffer:  # a buffer of 1 keeps the order
                    i = int(rng.integers(len(buffer)))
                    buffer[i], buffer[-1] = buffer[-1], buffer[i]
                    yield buffer.pop()
            if not seen:  # nothing (left) to read: drain the buffer and end
                rng.shuffle(buffer)
                yield from buffer
                return
            cached = cache is not None


class ShardSource:
    """Training batches streamed from WebDataset shards (a `BatchSource`).

    `start_step` cannot replay a stream exactly without reading everything before it; instead the
    shard order, shuffle buffer and flips are reseeded with (seed, start_step), so a resumed run
    continues on a fresh, reproducible shuffle of the corpus. Replicas must share seed and start_step
    for their shards to partition the corpus. Each loader worker keeps its decoded share in memory
    (`cache_mb` in all) when it fits, and replays it, reshuffled, from the second epoch on.
    """

    def __init__(self, shards: list[Path], size: int, channels: int, description: str = "", workers: int = 2,
                 buffer: int = 1000, replica: int = 0, num_replicas: int = 1, flip: bool = True,
                 cache_mb: int = 1024, sizes: list[int] | None = None) -> None:
        if not shards:
            raise UserError(f"{description or '--data'}: no shards")
        if not 0 <= replica < num_replicas:
            raise UserError(f"replica {replica}: must be in [0, {num_replicas})")
        self.shards, self.size, self.channels = list(shards), size, channels
        self.workers, self.buffer, self.replica, self.num_replicas = workers, buffer, replica, num_replicas
        self.flip, self.cache_mb = flip, cache_mb
        self.sizes = sizes  # samples per shard, when the manifest says
        self.description = description or f"{len(self.shards)} shards"

    @classmethod
    def open(cls, spec: str, size: int, channels: int, **kwargs) -> ShardSource:
        """`--data` shards; the manifest that `catneuron ingest` writes (if there) skips empty shards."""
        shards = list_shards(spec)
        if not shards:
            raise UserError(f"--data {spec}: no .tar shards found")
        manifest = read_manifest(shards[0].parent)
        count, known = "", None
        if manifest is not None:
            sizes = {s["name"]: s["samples"] for s in manifest.get("shards", [])}
            if all(p.name in sizes for p in shards):
                shards = [p for p in shards if sizes[p.name] > 0]
                known = [sizes[p.name] for p in shards]
                if not known:
                    raise UserError(f"--data {spec}: the shards hold no samples")
                count = f", {sum(known):,} samples"
        return cls(shards, size, channels, f"shards {spec} ({len(shards)} shards{count})", sizes=known, **kwargs)

    def check_replicas(self, replicas: int) -> None:
        """Refuse, before any replica starts, more replicas than the shards feed (when the manifest gives their
        sizes): with fewer shards than readers, replica r reads the samples n = r (mod replicas) of every shard
        (`assignment`), so it needs a shard of more than r samples."""
        if self.sizes is None or len(self.shards) >= replicas * max(self.workers, 1):
            return
        fed = max(self.sizes)
        if fed < replicas:
            raise UserError(f"--replicas {replicas}: {self.description} feed(s) at most {fed} replica(s) (its "
                            f"largest shard holds {fed} sample(s), and each replica needs its own); use at most "
                            f"{fed} replicas, or ingest more images")

    def split(self, replica: int, num_replicas: int) -> ShardSource:
        """The same source restricted to one replica's share of the shards (Downpour's data parallelism)."""
        return ShardSource(self.shards, self.size, self.channels, f"{self.description}, replica {replica}",
                           self.workers, self.buffer, replica, num_replicas, self.flip, self.cache_mb, self.sizes)

    def batches(self, batch_size: int, seed: int, start_step: int = 0) -> Iterator[torch.Tensor]:
        stream = _Stream(self.shards, self.size, self.channels, seed, start_step, self.buffer, self.replica,
                         self.num_replicas, self.flip, self.cache_mb << 20)
        loader = DataLoader(stream, batch_size=batch_size, num_workers=self.workers, drop_last=True,
                            prefetch_factor=4 if self.workers else None)
        yielded = False
        for batch in loader:
            yielded = True
            yield batch.float().div_(255.0)
        if not yielded:
            raise UserError(f"{self.description}: the shards hold no readable images")
