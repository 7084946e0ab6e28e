"""Ingest and loader throughput: videos and an image folder to shards, shards into the `small` trainer.

Measures samples/s of `catneuron ingest` on real clips and on a folder of images, with one worker
and with all workers; the shard loader's images/s against what the `small` preset's trainer
consumes; and the fraction of faces.mp4's frames in which the Haar detector finds a face. Nothing
is written outside a temporary folder.

    python benchmarks/ingest.py [--videos ../shared/data/videos] [--images ../shared/data/distractors/cifar10_test]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

from catneuron.data.census import grey, haar_faces, patch_census
from catneuron.data.images import list_images, to_square
from catneuron.data.ingest import Settings, ingest
from catneuron.data.shards import ShardSource
from catneuron.model.config import PRESETS
from catneuron.train.trainer import Trainer


def timed_ingest(sources: list[str], out: Path, settings: Settings, workers: int) -> tuple[dict, float]:
    start = time.perf_counter()
    stats = ingest(sources, out, settings, workers=workers, progress=False).stats
    return stats, time.perf_counter() - start


def report_ingest(name: str, sources: list[str], files: int, tmp: Path, workers: int, detect: bool = True) -> None:
    """One ingest at --size 200 with the paper's census density (100,000 patches for 10M frames: 1%)."""
    settings = Settings(census=max(1, files // 100), detect_faces=detect)
    stats, seconds = timed_ingest(sources, tmp / f"{name}-{workers}", settings, workers)
    c = stats["census"]
    census = f", census {c['faces']}/{c['patches']} patches with a face" if c["patches"] else ""
    print(f"  {name}, {workers} worker(s): {stats['samples']:,} samples in {seconds:.1f} s = "
          f"{stats['samples'] / seconds:,.1f} samples/s ({stats['errors']} errors, {stats['duplicates']} duplicates"
          f"{census})", flush=True)


def face_fraction(video: Path, size: int) -> tuple[int, int, int]:
    """Frames of a video, and how many have a face: in the ingest's centre crop and in the whole frame."""
    frames = crop_faces = frame_faces = 0
    with av.open(str(video)) as container:
        for frame in container.decode(video=0):
            image = frame.to_image()
            frames += 1
            crop_faces += bool(haar_faces(grey(to_square(image, size, 3).transpose(1, 2, 0))))
            w, h = image.size
            whole = image.convert("L").resize((400, round(400 * h / w)))
            frame_faces += bool(haar_faces(np.asarray(whole)))
    return frames, crop_faces, frame_faces


def rate(step, count: int, batch_size: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        step()
    return count * batch_size / (time.perf_counter() - start)


def alternate(trainer: Trainer, held: torch.Tensor, batches, steps: int, reps: int, bs: int) -> tuple[float, ...]:
    """Median images/s of the trainer on a batch in memory and fed by the loader, timed in alternation so
    that a shared machine's load drifts into both alike; and the median ratio of the two."""
    pairs = []
    for _ in range(reps):
        in_memory = rate(lambda: trainer.train_step(held), steps, bs)
        pairs.append((in_memory, rate(lambda: trainer.train_step(next(batches)), steps, bs)))
    memory, fed = np.array(pairs).T
    return float(np.median(memory)), float(np.median(fed)), float(np.median(fed / memory))


def loader_vs_trainer(shards: Path, samples: int, loader_workers: int, steps: int, reps: int = 3) -> None:
    """The `small` trainer fed by the loader while it decodes the first epoch and once it replays it from
    memory, each against the trainer on a batch in memory; the loader alone, decoding and replaying."""
    config = PRESETS["small"]
    m, bs = config.model, config.train.batch_size
    source = ShardSource.open(str(shards), m.input_size, m.channels, workers=loader_workers)
    batches = source.batches(bs, seed=0)
    held = next(batches)
    with tempfile.TemporaryDirectory() as run:
        trainer = Trainer(config, source, run)
        trainer.train_step(held)
        first = alternate(trainer, held, batches, steps, reps, bs)
        decoding = rate(lambda: next(batches), max(1, samples // bs - reps * steps - 1), bs)
        replaying = rate(lambda: next(batches), 30, bs)
        later = alternate(trainer, held, batches, steps, reps, bs)
    batches.close()
    print(f"  loader alone ({loader_workers} workers, {m.channels}x{m.input_size}x{m.input_size} from 200x200 JPEG): "
          f"{decoding:,.0f} images/s decoding the first epoch, {replaying:,.0f} replaying it from memory")
    for name, (memory, fed, ratio) in (("first epoch", first), ("later epochs", later)):
        print(f"  small trainer ({torch.get_num_threads()} threads), {name}: {fed:,.0f} images/s fed by the loader, "
              f"{memory:,.0f} on a batch in memory (median of {reps}; fed/in-memory {100 * ratio:.0f}%)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=Path, default=Path("../shared/data/videos"))
    parser.add_argument("--images", type=Path, default=Path("../shared/data/distractors/cifar10_test"))
    parser.add_argument("--limit", type=int, default=10_000, help="Images ingested with all workers.")
    parser.add_argument("--per-worker", type=int, default=1_000, help="Images ingested with one worker.")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--steps", type=int, default=10, help="Trainer steps timed.")
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start (shared machine)")
    images = list_images(args.images, "--images")[: args.limit]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        full, part = tmp / "images.txt", tmp / "images-part.txt"
        full.write_text("".join(f"{p.resolve()}\n" for p in images))
        part.write_text("".join(f"{p.resolve()}\n" for p in images[: args.per_worker]))
        videos = len(list(args.videos.iterdir()))
        print(f"ingest {args.videos} (one random frame per video, 200x200, face detection on every sample):")
        for workers in (1, args.workers):
            report_ingest("videos", [str(args.videos)], videos, tmp, workers)
        print(f"ingest {len(images):,} images of {args.images} (200x200, face detection on every sample):")
        report_ingest(f"{args.per_worker} images", [str(part)], args.per_worker, tmp, 1)
        report_ingest(f"{len(images)} images", [str(full)], len(images), tmp, args.workers)
        print("the same without per-image face detection (--no-detect-faces):")
        report_ingest(f"{args.per_worker} images, no detect", [str(part)], args.per_worker, tmp, 1, detect=False)
        report_ingest(f"{len(images)} images, no detect", [str(full)], len(images), tmp, args.workers, detect=False)
        sample = grey(to_square(Image.open(images[0]), 200, 3).transpose(1, 2, 0))
        start = time.perf_counter()
        patch_census(sample, 2000, np.random.default_rng(0))
        print(f"census: {2000 / (time.perf_counter() - start):,.0f} patches/s per worker (60x60, Haar frontal face)")
        print(f"shards -> trainer ({len(images):,}-image shards):")
        loader_vs_trainer(tmp / f"{len(images)} images-{args.workers}", len(images), 2, args.steps)
    faces = args.videos / "faces.mp4"
    if faces.is_file():
        frames, in_crop, in_frame = face_fraction(faces, 200)
        print(f"faces.mp4: a face in {in_crop}/{frames} = {100 * in_crop / frames:.1f}% of the 200x200 centre crops "
              f"ingest takes, {in_frame}/{frames} = {100 * in_frame / frames:.1f}% of whole frames (400 px wide)")
    print(f"load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
