"""Small synthetic media for the data tests: videos of a moving square (PyAV), images of shapes (Pillow),
and the broken files a real corpus holds."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
from PIL import Image


def make_video(path: Path, seed: int, frames: int = 24, fps: int = 12, size: tuple[int, int] = (64, 48),
               codec: str = "libx264") -> Path:
    """A `frames`-frame video of a coloured square crossing a background: every frame differs."""
    rng = np.random.default_rng(seed)
    background, colour = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    w, h = size
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            image = np.empty((h, w, 3), np.uint8)
            image[:] = background
            x = (i * (w - 16)) // max(frames - 1, 1)
            image[h // 2 - 8:h // 2 + 8, x:x + 16] = colour
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def shape_image(seed: int, size: tuple[int, int] = (48, 40)) -> Image.Image:
    """A random rectangle on a random background: distinct seeds give distinct pixels."""
    rng = np.random.default_rng(seed)
    w, h = size
    image = np.empty((h, w, 3), np.uint8)
    image[:] = rng.integers(0, 256, 3)
    x, y = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
    image[y:y + h // 2, x:x + w // 2] = rng.integers(0, 256, 3)
    return Image.fromarray(image)


def make_image(path: Path, seed: int, size: tuple[int, int] = (48, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape_image(seed, size).save(path)
    return path


def make_broken(folder: Path) -> dict[str, Path]:
    """Corrupt, truncated, empty and non-media files, by kind."""
    folder.mkdir(parents=True, exist_ok=True)
    good = make_image(folder / "good_source.jpg", 999, (64, 64))
    broken = {
        "corrupt": folder / "corrupt.jpg",
        "truncated": folder / "truncated.jpg",
        "empty": folder / "empty.png",
        "text": folder / "notes.txt",
        "bad_video": folder / "bad.mp4",
    }
    broken["corrupt"].write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    broken["truncated"].write_bytes(good.read_bytes()[:300])
    broken["empty"].write_bytes(b"")
    broken["text"].write_text("not an image\n")
    video = make_video(folder / "good_source.mp4", 998)
    broken["bad_video"].write_bytes(video.read_bytes()[: video.stat().st_size // 3])
    good.unlink()
    video.unlink()
    return broken
