"""Reading images from disk: recursive listing, decoding, square crop, resize, grey or colour."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from catneuron.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".gif", ".bmp", ".webp", ".tif", ".tiff")


def list_images(root: str | Path, flag: str = "--data") -> list[Path]:
    """Every image file under `root` (recursive, sorted); a single image file is a list of one."""
    root = Path(root)
    if root.is_file():
        return [root] if root.suffix.lower() in IMAGE_EXTENSIONS else []
    if not root.is_dir():
        raise UserError(f"{flag} {root}: no such file or folder")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def eight_bit(image: Image.Image) -> Image.Image:
    """16-bit and floating-point grey images scaled to 8 bits (Pillow's convert clips them at 255, which
    turns a 16-bit photo nearly white and a [0, 1] float image black); a ValueError says why one cannot be."""
    if image.mode not in ("I", "F") and not image.mode.startswith("I;16"):
        return image
    values = np.asarray(image, dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValueError(f"{image.mode} pixels that are not finite numbers")
    low, high = values.min(), values.max()
    if image.mode == "F":
        if low < 0 or high > 1:
            raise ValueError(f"floating-point pixels outside [0, 1] ({low:.4g} .. {high:.4g}); convert it to 8 bits")
        values = values * 255
    elif image.mode.startswith("I;16") or high > 255:
        if low < 0 or high > 65535:
            raise ValueError(f"integer pixels outside 16 bits ({low:.0f} .. {high:.0f}); convert it to 8 bits")
        values = values / 257
    return Image.fromarray(np.round(values).astype(np.uint8), "L")


def to_square(image: Image.Image, size: int, channels: int) -> np.ndarray:
    """Centre-crop to a square, resize to size x size, convert to grey or RGB: uint8 (channels, size, size)."""
    image = eight_bit(image).convert("L" if channels == 1 else "RGB")
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


UNREADABLE = (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError)
"""What decoding an untrusted file may raise: the file is skipped and counted, never the run stopped.
DecompressionBombError: a header claiming more than twice Pillow's limit of pixels (a bomb of a few KB)."""

@contextmanager
def quiet_large_images() -> Iterator[None]:
    """Between Pillow's limit (89 Mpixels) and twice it, Pillow decodes with a two-line DecompressionBombWarning on
    stderr per file; catneuron counts those images (`is_large`) and says so in its own words instead. The filter is
    the process's: it covers the threads that decode while it is on."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def is_large(width: int, height: int) -> bool:
    """Over Pillow's limit of pixels, but not twice over (those are refused): slow and memory-hungry."""
    return Image.MAX_IMAGE_PIXELS is not None and width * height > Image.MAX_IMAGE_PIXELS


def large_note(count: int) -> str:
    """The line that replaces Pillow's warnings about `count` images."""
    return (f"{count} image(s) over {(Image.MAX_IMAGE_PIXELS or 0) / 1e6:.0f} Mpixels decoded (slow and "
            "memory-hungry; downscale them)")


def read_image(path: str | Path, size: int, channels: int) -> np.ndarray:
    """One image as uint8 (channels, size, size); raises ValueError if it cannot be decoded."""
    return _decode(path, size, channels)[0]


def _decode(path: str | Path, size: int, channels: int) -> tuple[np.ndarray, bool]:
    """read_image, and whether the image was over Pillow's limit of pixels."""
    try:
        with Image.open(path) as image:
            image.load()
            return to_square(image, size, channels), is_large(*image.size)
    except UNREADABLE as e:
        raise ValueError(f"{path}: {e}") from None


@dataclass
class ImageSet:
    """Decoded images in memory, uint8 (N, C, S, S), with the files they came from, those skipped, and how many
    were over Pillow's limit of pixels."""

    images: np.ndarray
    paths: list[Path]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    large: int = 0

    def __len__(self) -> int:
        return len(self.paths)

    def notes(self) -> list[str]:
        """What a reader of the folder should hear: unreadable files skipped, very large images decoded."""
        out = [f"skipped {len(self.skipped)} unreadable image(s)"] if self.skipped else []
        if self.large:
            out.append(large_note(self.large))
        return out


def read_images(paths: Iterable[Path], size: int, channels: int, workers: int = 4) -> ImageSet:
    """Decode many images in threads (PIL releases the GIL); corrupt files are skipped and listed."""
    paths = list(paths)

    def one(path: Path) -> tuple[np.ndarray, bool] | str:
        try:
            return _decode(path, size, channels)
        except ValueError as e:
            return str(e)

    with quiet_large_images(), ThreadPoolExecutor(max_workers=workers) as pool:
        decoded = list(pool.map(one, paths))
    good = [(p, a) for p, a in zip(paths, decoded, strict=True) if isinstance(a, tuple)]
    skipped = [(p, a) for p, a in zip(paths, decoded, strict=True) if isinstance(a, str)]
    images = np.stack([a for _, (a, _) in good]) if good else np.zeros((0, channels, size, size), np.uint8)
    return ImageSet(images, [p for p, _ in good], skipped, sum(large for _, (_, large) in good))


def read_folder(root: str | Path, size: int, channels: int, flag: str = "--data") -> ImageSet:
    """All images under a folder; a UserError naming the flag if there are none that decode."""
    paths = list_images(root, flag)
    if not paths:
        raise UserError(f"{flag} {root}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)})")
    found = read_images(paths, size, channels)
    if not len(found):
        raise UserError(f"{flag} {root}: none of the {len(paths)} image files could be decoded")
    return found
