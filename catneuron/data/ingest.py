"""`catneuron ingest`: videos and images to WebDataset shards of size x size colour JPEGs.

Inputs are listed once, in a fixed order, and cut into shards of `shard_files` input files each; a
shard is written (atomically) when all its files are decoded, with a record of what it holds in
OUT/.ingest/. A run that was killed resumes by redoing only the shards without a record, and since
every sample is a pure function of (file content, seed), the redone shards equal the lost ones.
Duplicates (identical pixels after cropping and resizing) are kept once, in input order.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import signal
import time
from collections import deque
from collections.abc import Generator, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from catneuron.data.census import Census, Detector, allocate_patches, grey, haar_faces, patch_census
from catneuron.data.images import IMAGE_EXTENSIONS, is_large, quiet_large_images, to_square
from catneuron.data.shards import MANIFEST, Sample, write_shard
from catneuron.data.video import VIDEO_EXTENSIONS, random_frames
from catneuron.errors import UserError, printable
from catneuron.progress import Progress
from catneuron.store.files import write_atomic, write_json

FORMAT = "catneuron-shards/1"
STATS, ERRORS, RECORDS = "stats.json", "errors.tsv", ".ingest"
MEDIA = IMAGE_EXTENSIONS + VIDEO_EXTENSIONS
# Each sample is decoded, resized and held as size x size colour: 2048 is 12 MiB a sample, 100000 would be 28 GiB.
MAX_SIZE = 2048


@dataclass(frozen=True)
class Settings:
    """Everything the samples depend on besides the inputs: a resumed run must use the same."""

    size: int = 200
    frames_per_video: int = 1
    seed: int = 0
    exclude_faces: bool = False
    detect_faces: bool = True
    census: int = 100_000
    shard_files: int = 1000
    quality: int = 90

    def check(self) -> None:
        if self.size > MAX_SIZE:
            raise UserError(f"--size {self.size}: at most {MAX_SIZE} (the paper's images are 200)")
        for flag, value, least in (("--size", self.size, 8), ("--frames-per-video", self.frames_per_video, 1),
                                   ("--shard-files", self.shard_files, 1), ("--census", self.census, 0)):
            if value < least:
                raise UserError(f"{flag} {value}: must be at least {least}")
        if self.exclude_faces and not self.detect_faces:
            raise UserError("--exclude-faces with --no-detect-faces: excluding faces needs the detector")


# ---------------------------------------------------------------------------------------------- inputs


def collect_inputs(sources: Iterable[str]) -> list[Path]:
    """SRC arguments to files: folders (recursive, sorted), media files, or list files of paths (one a line,
    relative to the list file). Order is kept and repeated paths dropped: the order fixes the shards."""
    found: list[Path] = []
    for src in sources:
        path = Path(src)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        elif path.is_file() and path.suffix.lower() in MEDIA:
            found.append(path)
        elif path.is_file():
            try:
                lines = path.read_text().splitlines()
            except (OSError, UnicodeDecodeError) as e:
                raise UserError(f"SRC {src}: neither media nor a list of paths ({e})") from None
            found += [path.parent / line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
        else:
            raise UserError(f"SRC {src}: no such file or folder")
    unique = list(dict.fromkeys(found))
    if not unique:
        raise UserError(f"SRC {' '.join(sources)}: no files found")
    return unique


def fingerprint(path: Path, chunk: int = 1 << 20) -> int:
    """A 64-bit digest of a file's size, head and tail: seeds its frame times, so copies give the same frames
    (and are then dropped as duplicates) without reading whole videos."""
    digest = hashlib.blake2b(digest_size=8)
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        digest.update(size.to_bytes(8, "little"))
        f.seek(0)
        digest.update(f.read(chunk))
        f.seek(max(0, size - chunk))
        digest.update(f.read(chunk))
    return int.from_bytes(digest.digest(), "little")


# ---------------------------------------------------------------------------------------------- one file


@dataclass
class Decoded:
    """One sample as a worker returns it: JPEG, metadata (with the pixel hash), census counts."""

    jpeg: bytes
    meta: dict
    census: Census


@dataclass
class FileResult:
    kind: str  # "image", "video" or "" when unreadable
    samples: list[Decoded] = field(default_factory=list)
    error: str = ""


def _pictures(path: Path, settings: Settings) -> tuple[str, list[tuple[float | None, Image.Image, tuple[int, int]]]]:
    """The file's kind and its pictures: (frame time or None, image, original size)."""
    suffix = path.suffix.lower()
    if suffix in VIDEO_EXTENSIONS:
        rng = np.random.default_rng([settings.seed, fingerprint(path)])
        frames = random_frames(path, settings.frames_per_video, rng)
        return "video", [(f.time, f.image, f.image.size) for f in frames]
    if suffix in IMAGE_EXTENSIONS:
        with quiet_large_images(), Image.open(path) as image:
            original = image.size
            image.draft("RGB", (settings.size, settings.size))  # big JPEGs: libjpeg decodes them scaled down
            image.load()
            return "image", [(None, image, original)]
    raise ValueError(f"not an image or video ({suffix or 'no extension'})")


def process_file(index: int, path: Path, patches: tuple[int, ...], settings: Settings,
                 detector: Detector = haar_faces) -> FileResult:
    """Decode one input file into its samples; never raises: any failure becomes the file's error reason,
    since one bad file among millions must not stop an ingest."""
    try:
        if path.stat().st_size == 0:
            raise ValueError("empty file")
        kind, pictures = _pictures(path, settings)
        samples = []
        for j, (t, picture, original) in enumerate(pictures):
            with quiet_large_images():  # Pillow checks its pixel limit again when it crops
                rgb = to_square(picture, settings.size, 3).transpose(1, 2, 0)
            luma = grey(rgb)
            faces = detector(luma) if settings.detect_faces else None
            count = patches[j] if j < len(patches) else 0
            census = patch_census(luma, count, np.random.default_rng([settings.seed, 11, index, j]), detector)
            buffer = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(rgb)).save(buffer, "JPEG", quality=settings.quality)
            meta = {"source": str(path), "frame_time": t, "original_size": list(original),
                    "faces": [list(b) for b in faces] if faces is not None else None,
                    "sha": hashlib.blake2b(rgb.tobytes(), digest_size=8).hexdigest()}
            samples.append(Decoded(buffer.getvalue(), meta, census))
        return FileResult(kind, samples)
    except Exception as e:  # noqa: BLE001  see the docstring
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).removeprefix(f"{path}: ")
        reason = reason.replace(f" {str(path)!r}", "") or type(e).__name__  # Pillow quotes the path: it is in column 1
        return FileResult("", error=" ".join(reason.split()))


# ---------------------------------------------------------------------------------------------- the run


@dataclass
class ShardRecord:
    """What a finished shard holds; its presence in OUT/.ingest/ marks the shard done."""

    name: str
    first: int
    stop: int
    samples: int = 0
    bytes: int = 0
    images: int = 0
    videos: int = 0
    duplicates: int = 0
    faces_excluded: int = 0
    with_faces: int = 0
    patches: int = 0
    patch_faces: int = 0
    large: int = 0  # images over Pillow's limit of pixels (decoded, and counted instead of Pillow's warning)
    errors: list[list[str]] = field(default_factory=list)
    hashes: list[str] = field(default_factory=list)


@dataclass
class IngestResult:
    out: Path
    stats: dict
    shards: list[ShardRecord]


def shard_name(i: int) -> str:
    return f"shard-{i:06d}.tar"


def _digest(paths: list[Path]) -> str:
    return hashlib.sha256(b"\n".join(map(os.fsencode, paths))).hexdigest()[:16]  # names need not be UTF-8


def _load_records(out: Path, settings: Settings, paths: list[Path]) -> dict[int, ShardRecord]:
    """Records of shards a previous run finished, after checking it ingested the same inputs the same way."""
    manifest_path = out / MANIFEST
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        before = manifest.get("settings", {})
        changed = [f"{k} {before.get(k)} -> {v}" for k, v in asdict(settings).items() if before.get(k) != v]
        if manifest.get("inputs_digest") != _digest(paths):
            changed.append(f"inputs ({manifest.get('inputs')} files before, {len(paths)} now)")
        if changed:
            raise UserError(f"--out {out}: holds an ingest with other inputs or settings ({'; '.join(changed)}); "
                            "use another --out")
    elif any(out.glob("*.tar")):
        raise UserError(f"--out {out}: holds .tar files but no {MANIFEST}; use an empty folder")
    records = {}
    for path in (out / RECORDS).glob("shard-*.json"):
        record = ShardRecord(**json.loads(path.read_text()))
        if (out / record.name).is_file():
            records[int(record.name[6:12])] = record
    for stale in list(out.glob(".*.tmp-*")) + list((out / RECORDS).glob(".*.tmp-*")):
        stale.unlink()  # a killed run's half-written shard or record
    return records


def _write_summary(out: Path, settings: Settings, paths: list[Path], records: dict[int, ShardRecord],
                   n_shards: int, elapsed: float, new_samples: int) -> dict:
    """manifest.json, stats.json and errors.tsv, rewritten from the records after every shard."""
    done = [records[i] for i in sorted(records)]

    def total(name: str) -> int:
        return sum(getattr(r, name) for r in done)

    census = Census(total("patches"), total("patch_faces"))
    complete = len(done) == n_shards
    write_json(out / MANIFEST, {
        "format": FORMAT, "settings": asdict(settings), "inputs": len(paths), "inputs_digest": _digest(paths),
        "pattern": f"shard-{{000000..{n_shards - 1:06d}}}.tar", "complete": complete,
        "shards": [{"name": r.name, "samples": r.samples, "bytes": r.bytes} for r in done]})
    stats = {
        "complete": complete, "files": len(paths), "files_done": sum(r.stop - r.first for r in done),
        "images": total("images"), "videos": total("videos"), "samples": total("samples"),
        "duplicates": total("duplicates"), "errors": sum(len(r.errors) for r in done), "large_images": total("large"),
        "faces_excluded": total("faces_excluded"), "samples_with_faces": total("with_faces"),
        "census": {"requested": settings.census, "patches": census.patches, "faces": census.faces,
                   "fraction": census.fraction if census.patches else None, "patch": 60},
        "shards": len(done), "bytes": total("bytes"),
        "this_run": {"elapsed_s": elapsed, "samples": new_samples, "samples_per_s": new_samples / max(elapsed, 1e-9)},
    }
    write_json(out / STATS, stats)
    write_atomic(out / ERRORS, "".join(f"{printable(p)}\t{printable(why)}\n" for r in done for p, why in r.errors))
    return stats


Task = tuple[int, Path, tuple[int, ...]]  # input index, path, census patches per frame


def _shard_results(shards: Iterable[list[Task]], settings: Settings, workers: int,
                   detector: Detector) -> Generator[Iterator[FileResult], None, None]:
    """Each shard's results in input order, decoded in `workers` processes (inline for one); two shards
    ahead are queued so workers never wait at a shard boundary, and no more, so memory stays bounded."""
    work = partial(_run_task, settings=settings, detector=detector)
    if workers <= 1:
        for tasks in shards:
            yield map(work, tasks)
        return
    # Workers ignore Ctrl-C: the main process gets it, and leaving `with` terminates them.
    with multiprocessing.get_context().Pool(workers, signal.signal, (signal.SIGINT, signal.SIG_IGN)) as pool:
        window: deque[Iterator[FileResult]] = deque()
        for tasks in shards:
            window.append(pool.imap(work, tasks))  # one file a task: a video costs 100x an icon
            if len(window) > 2:
                yield window.popleft()
        yield from window


def _run_task(task: Task, settings: Settings, detector: Detector) -> FileResult:
    return process_file(*task, settings=settings, detector=detector)


def ingest(sources: Iterable[str], out: str | Path, settings: Settings = Settings(), workers: int = 1,
           detector: Detector = haar_faces, progress: bool = True) -> IngestResult:
    """Ingest `sources` into shards under `out`, resuming whatever a previous run there finished."""
    settings.check()
    out = Path(out)
    paths = collect_inputs(sources)
    out.mkdir(parents=True, exist_ok=True)
    records = _load_records(out, settings, paths)
    n_shards = -(-len(paths) // settings.shard_files)
    seen = {h for r in records.values() for h in r.hashes}
    slots = settings.frames_per_video
    allocation = allocate_patches(settings.census, len(paths) * slots, settings.seed)
    todo = [i for i in range(n_shards) if i not in records]
    spans = {i: range(i * settings.shard_files, min((i + 1) * settings.shard_files, len(paths))) for i in todo}
    shard_tasks = ([(f, paths[f], tuple(allocation.get(f * slots + j, 0) for j in range(slots))) for f in spans[i]]
                   for i in todo)
    total_files = sum(len(span) for span in spans.values())
    bar = Progress(total_files, "files", enabled=progress)
    start, files_done, new_samples, errors = time.monotonic(), 0, 0, 0
    results = _shard_results(shard_tasks, settings, workers, detector)
    for i in todo:
        record = ShardRecord(shard_name(i), spans[i].start, spans[i].stop)
        samples: list[Sample] = []
        for index, result in zip(spans[i], next(results), strict=True):
            files_done += 1
            if result.error:
                record.errors.append([str(paths[index]), result.error])
                errors += 1
            elif result.kind == "video":
                record.videos += 1
            else:
                record.images += 1
                record.large += any(is_large(*d.meta["original_size"]) for d in result.samples)
            for j, s in enumerate(result.samples):
                if s.meta["sha"] in seen:
                    record.duplicates += 1
                    continue
                seen.add(s.meta["sha"])
                record.hashes.append(s.meta["sha"])  # kept or excluded: a resumed run must see it as seen
                record.patches += s.census.patches
                record.patch_faces += s.census.faces
                record.with_faces += bool(s.meta["faces"])
                if settings.exclude_faces and s.meta["faces"]:
                    record.faces_excluded += 1
                    continue
                samples.append(Sample(f"{index:09d}_{j:03d}", s.jpeg, s.meta))
            elapsed = time.monotonic() - start
            bar.update(files_done, (new_samples + len(samples)) / max(elapsed, 1e-9), "samples", {"errors": errors},
                       eta=(total_files - files_done) * elapsed / files_done)
        record.samples = len(samples)
        record.bytes = write_shard(out / record.name, samples)
        write_json(out / RECORDS / record.name.replace(".tar", ".json"), asdict(record))
        records[i] = record
        new_samples += record.samples
        _write_summary(out, settings, paths, records, n_shards, time.monotonic() - start, new_samples)
    results.close()  # stops the worker pool
    elapsed = time.monotonic() - start
    stats = _write_summary(out, settings, paths, records, n_shards, elapsed, new_samples)
    bar.update(files_done, new_samples / max(elapsed, 1e-9), "samples", {"errors": errors}, eta=0, final=True)
    return IngestResult(out, stats, [records[i] for i in sorted(records)])
