"""`catneuron ingest`: videos and image folders to WebDataset shards, with the face census."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from catneuron.cli import checks
from catneuron.cli.app import app
from catneuron.data.images import large_note
from catneuron.data.ingest import ERRORS, STATS, Settings
from catneuron.data.ingest import ingest as run_ingest


@app.command()
def ingest(
    src: list[str] = typer.Argument(..., help="Folders (recursive), media files, or text files listing paths."),
    out: Path = typer.Option(..., help="Output folder for shard-NNNNNN.tar, manifest.json, stats.json, errors.tsv."),
    size: int = typer.Option(200, help="Samples are centre-cropped and resized to size x size colour."),
    frames_per_video: int = typer.Option(1, help="Random frames taken from each video."),
    seed: int = typer.Option(0, help="Seeds the frame times and the census patches."),
    workers: int = typer.Option(os.cpu_count() or 1, help="Decoding processes."),
    exclude_faces: bool = typer.Option(False, "--exclude-faces", help="Drop every sample with a detected face."),
    detect_faces: bool = typer.Option(True, help="Run the face detector on every sample (faces in its JSON)."),
    census: int = typer.Option(100_000, help="Random 60x60 patches for the face census (0: none)."),
    shard_files: int = typer.Option(1000, help="Input files per shard."),
) -> None:
    """Ingest videos (one random frame each) and images into WebDataset shards; resumes an interrupted run."""
    settings = Settings(size=size, frames_per_video=frames_per_video, seed=seed, exclude_faces=exclude_faces,
                        detect_faces=detect_faces, census=census, shard_files=shard_files)
    settings.check()
    checks.at_least("--workers", workers, 1)
    checks.writable_folder(out, "--out")
    result = run_ingest(src, out, settings, workers=workers)
    s = result.stats
    print(f"{s['samples']:,} samples from {s['images']:,} images and {s['videos']:,} videos in {s['shards']} shards "
          f"under {out}; {s['duplicates']:,} duplicates dropped; {s['errors']:,} files skipped (see {out / ERRORS})")
    if s["large_images"]:
        print(f"catneuron: {large_note(s['large_images'])}")
    c = s["census"]
    if c["patches"]:
        print(f"face census: {c['faces']:,} of {c['patches']:,} random 60x60 patches have a face "
              f"({100 * c['fraction']:.2f}%)")
    if exclude_faces:
        print(f"--exclude-faces: {s['faces_excluded']:,} samples with a detected face dropped")
    print(f"train with: catneuron train --data '{out}/shard-{{000000..{s['shards'] - 1:06d}}}.tar'"
          if s["complete"] else f"incomplete: run the same command again to finish; stats in {out / STATS}")
