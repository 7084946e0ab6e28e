"""The metrics rows as TensorBoard event files in the run folder, and on W&B when asked: where the field compares
runs. metrics.jsonl stays the source of truth; these are copies of its numbers, written as each row is.

The event file is written here, without tensorboard or protobuf: a TFRecord file (length, masked CRC-32C,
bytes, masked CRC-32C) of `Event` protocol buffers holding `simple_value` summaries, the format of
tensorflow/core/util/event.proto that TensorBoard reads (tests read it back with tensorboard's own
EventAccumulator). So the plain install stays as it is. W&B is an extra (`pip install 'catneuron[wandb]'`),
imported only when `--wandb` asks for it.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

from catneuron.errors import UserError
from catneuron.store.runs import number


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1  # CRC-32C (Castagnoli), reflected
        table.append(crc)
    return table


CRC_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    """TFRecord's checksum: the CRC rotated and offset, so that a CRC of CRCs does not look valid."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def record(data: bytes) -> bytes:
    """One TFRecord: the length, its checksum, the bytes, their checksum."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc(length)) + data + struct.pack("<I", masked_crc(data))


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number_: int, payload: bytes) -> bytes:
    """A length-delimited protocol buffer field."""
    return _varint(number_ << 3 | 2) + _varint(len(payload)) + payload


def event(wall_time: float, step: int | None = None, scalars: dict[str, float] | None = None,
          file_version: str | None = None) -> bytes:
    """An `Event`: wall_time (1, double), step (2, int64), file_version (3, string), summary (5) of
    `Summary.Value`s with tag (1, string) and simple_value (2, float)."""
    out = b"\x09" + struct.pack("<d", wall_time)
    if step is not None:
        out += b"\x10" + _varint(step & 0xFFFFFFFFFFFFFFFF)
    if file_version is not None:
        out += _field(3, file_version.encode())
    if scalars:
        values = b"".join(_field(1, _field(1, tag.encode("utf-8", "replace")) + b"\x15" + struct.pack("<f", v))
                          for tag, v in scalars.items())
        out += _field(5, values)
    return out


def _flat(prefix: str, value: object) -> Iterator[tuple[str, float]]:
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _flat(f"{prefix}/{key}", inner)
    elif (v := number(value)) is not None:
        yield prefix, v


def _watched(concepts: dict) -> Iterator[tuple[str, float]]:
    """A watch record's numbers: held-out accuracy per concept and stage, the curve's top and the baselines."""
    for concept, data in concepts.items():
        if not isinstance(data, dict):
            continue
        for stage in data.get("stages", []) if isinstance(data.get("stages"), list) else []:
            if isinstance(stage, dict) and (v := number(stage.get("heldout_accuracy"))) is not None:
                yield f"watch/{concept}/stage{stage.get('stage')}_heldout", v
        for key in ("upper_heldout", "bar", "random_guess", "random_weights", "linear_filter"):
            if (v := number(data.get(key))) is not None:
                yield f"watch/{concept}/{key}", v


def scalars(row: dict) -> tuple[int, dict[str, float]] | None:
    """The step and the tagged numbers of a metrics row: a training row's objective terms (objective/...) and
    rates (train/...), a watch record's held-out accuracy per concept and stage (watch/...), the watch's
    baselines; None for a row without numbers to plot."""
    kind = row.get("record")
    step = row.get("step", 0)
    if not isinstance(step, int) or isinstance(step, bool):
        return None
    out: dict[str, float] = {}
    if kind is None:
        for key, value in row.items():
            if key != "step":
                group = "objective" if key == "loss" or key.startswith(("recon_", "sparsity_")) else "train"
                out.update(_flat(f"{group}/{key}", value))
    elif kind in ("watch", "watch_baselines") and isinstance(row.get("concepts"), dict):
        out.update(_watched(row["concepts"]))
        if (v := number(row.get("scan_s"))) is not None:
            out["watch/scan_s"] = v
    return (step, out) if out else None


class TensorBoardFile:
    """An event file in the run folder, appended to and flushed row by row (a crash loses no logged row)."""

    def __init__(self, run: Path) -> None:
        self.path = run / f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.catneuron"
        self.file = open(self.path, "ab")  # noqa: SIM115  closed by close()
        self.file.write(record(event(time.time(), file_version="brain.Event:2")))
        self.file.flush()

    def add(self, step: int, values: dict[str, float]) -> None:
        self.file.write(record(event(time.time(), step, values)))
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def check_wandb() -> None:
    """`--wandb` before any work: W&B must be installed (it is an extra)."""
    import importlib.util

    if importlib.util.find_spec("wandb") is None:
        raise UserError("--wandb: W&B is not installed (pip install 'catneuron[wandb]')")


class WandbRun:
    """A W&B run (`--wandb`): the same numbers, sent where W&B's own settings say (WANDB_MODE=offline keeps
    them on disk)."""

    def __init__(self, run: Path, config: dict, project: str) -> None:
        try:
            import wandb
        except ImportError:
            raise UserError("--wandb: W&B is not installed (pip install 'catneuron[wandb]')") from None
        self.run = wandb.init(project=project, name=run.resolve().name, dir=str(run), config=config)

    def add(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


class Events:
    """Where every metrics row goes besides metrics.jsonl: `add(row)` once per row written."""

    def __init__(self, run: str | Path, wandb: str | None = None, config: dict | None = None) -> None:
        """`wandb`: the W&B project to log to (None: W&B stays off, nothing is sent anywhere)."""
        run = Path(run)
        run.mkdir(parents=True, exist_ok=True)
        self.sinks: list[TensorBoardFile | WandbRun] = [TensorBoardFile(run)]
        if wandb is not None:
            self.sinks.append(WandbRun(run, config or {}, wandb))

    def add(self, row: dict) -> None:
        found = scalars(row)
        if found is not None:
            for sink in self.sinks:
                sink.add(*found)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()

    def __enter__(self) -> Events:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
