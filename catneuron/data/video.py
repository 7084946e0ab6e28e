"""Random frames from video files with PyAV: the paper's "one random frame from each video".

The times are drawn from a generator the caller seeds (ingest seeds it from the file's content
hash), and the frame returned for a time is the first decoded frame at or after it, so the same
file and seed give the same frames on any machine and in any order of work.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov")


@dataclass
class Frame:
    time: float
    image: Image.Image


def _duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float:
    """Seconds of video; containers that do not say (some webm) are demuxed, not decoded, to find out."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    last = max((p.pts for p in container.demux(stream) if p.pts is not None), default=None)
    container.seek(0)
    return float(last * stream.time_base) if last is not None and stream.time_base else 0.0


def _frame_at(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
              target: float) -> Frame | None:
    """The first frame at or after `target` seconds (the last one if the video ends before)."""
    base = stream.time_base
    assert base is not None  # random_frames refuses a stream without one
    start = float(stream.start_time * base) if stream.start_time is not None else 0.0
    container.seek(int((start + target) / base), stream=stream, backward=True, any_frame=False)
    found = None
    for frame in container.decode(stream):
        found = frame
        if frame.time is not None and frame.time - start >= target:
            break
    if found is None:
        return None
    # One scaling thread: ingest's parallelism is its processes, and a thread pool of swscale's left in a process
    # that later forks its workers deadlocks them (its condition variable is copied with waiters that do not exist).
    return Frame(float(found.time - start) if found.time is not None else 0.0, found.to_image(threads=1))


def random_frames(path: str | Path, count: int, rng: np.random.Generator) -> list[Frame]:
    """`count` frames at uniformly random times, in time order; raises ValueError if the file has no video."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"{path}: no video stream")
            stream = container.streams.video[0]
            if stream.time_base is None:
                raise ValueError(f"{path}: the video stream has no time base")
            duration = _duration(container, stream)
            frames = []
            for target in sorted(rng.random(count) * duration):
                frame = _frame_at(container, stream, float(target))
                if frame is None:
                    raise ValueError(f"{path}: no frame could be decoded")
                frames.append(frame)
            return frames
    except (av.FFmpegError, OSError, EOFError, ZeroDivisionError) as e:
        raise ValueError(f"{path}: {type(e).__name__}: {e}") from None
