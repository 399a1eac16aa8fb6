"""Video frames in and out, for `retinanet predict` on a video file.

Two back ends:
- Pillow (always installed) for animated images: .gif and .webp, read frame by frame and
  written back in the same format with the same frame durations.
- PyAV (FFmpeg's libraries; a declared dependency) for real video containers: .mp4, .avi,
  .mov, .mkv, .webm, .m4v. Should its import fail (a broken FFmpeg build), those files are
  refused with a message that says so.

`open_video(path)` gives the frames as (H, W, 3) uint8 RGB arrays with their timestamps;
`video_writer(path, fps, size, like)` writes annotated frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
from PIL import Image, ImageSequence

from ..data.common import to_rgb8

PILLOW_VIDEO_SUFFIXES = (".gif", ".webp")
AV_VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
VIDEO_SUFFIXES = PILLOW_VIDEO_SUFFIXES + AV_VIDEO_SUFFIXES
DEFAULT_FRAME_MS = 100  # GIF frames without a duration: 10 frames per second


class VideoError(ValueError):
    """A video that cannot be read or written here (unknown format, PyAV missing, corrupt)."""


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


@dataclass
class VideoSource:
    """An opened video: `frames()` yields (index, (H, W, 3) uint8 RGB, time in seconds)."""

    path: Path
    fps: float
    num_frames: Optional[int]  # None when the container does not say
    width: int
    height: int
    frames: Callable[[], Iterator[tuple[int, np.ndarray, float]]]
    backend: str
    durations_ms: Optional[list[float]] = None  # per frame, for Pillow formats (rewritten alike)


def _require_av():
    try:
        import av  # noqa: F401
    except ImportError:
        raise VideoError(
            "reading or writing .mp4/.avi/.mov/.mkv/.webm needs PyAV (FFmpeg): pip install av; "
            f"animated {'/'.join(PILLOW_VIDEO_SUFFIXES)} files work without it"
        ) from None
    import av

    return av


def _open_pillow(path: Path) -> VideoSource:
    try:
        with Image.open(path) as im:
            n = int(getattr(im, "n_frames", 1))
            width, height = im.size
            durations = []
            for frame in ImageSequence.Iterator(im):
                durations.append(float(frame.info.get("duration") or DEFAULT_FRAME_MS))
    except (OSError, SyntaxError, ValueError) as e:
        raise VideoError(f"cannot read video {path}: {e}") from e
    fps = 1000.0 / (sum(durations) / len(durations)) if durations else 1000.0 / DEFAULT_FRAME_MS
    starts = np.concatenate([[0.0], np.cumsum(durations)[:-1]]) / 1000.0

    def frames():
        with Image.open(path) as im:
            for i, frame in enumerate(ImageSequence.Iterator(im)):
                yield i, to_rgb8(frame), float(starts[i])

    return VideoSource(path, fps, n, width, height, frames, "pillow", durations)


def _open_av(path: Path) -> VideoSource:
    av = _require_av()
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate) if stream.average_rate else 25.0
            n = int(stream.frames) or None
            width, height = int(stream.codec_context.width), int(stream.codec_context.height)
    except (IndexError, OSError, av.error.FFmpegError) as e:  # no video stream, or not a media file
        raise VideoError(f"cannot read video {path}: {e}") from e

    def frames():
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            for i, frame in enumerate(container.decode(stream)):
                t = float(frame.time) if frame.time is not None else i / fps
                yield i, frame.to_ndarray(format="rgb24"), t

    return VideoSource(path, fps, n, width, height, frames, "av")


def open_video(path: str | Path) -> VideoSource:
    """Open a video file (see the module docstring for the formats)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    suffix = path.suffix.lower()
    if suffix in PILLOW_VIDEO_SUFFIXES:
        return _open_pillow(path)
    if suffix in AV_VIDEO_SUFFIXES:
        return _open_av(path)
    raise VideoError(f"{path}: not a video format this reads ({', '.join(VIDEO_SUFFIXES)})")


class _PillowWriter:
    """Collects frames and writes an animated GIF / WebP on close (Pillow writes them whole)."""

    def __init__(self, path: Path, durations_ms: list[float]):
        self.path, self.durations, self.frames = path, durations_ms, []

    def write(self, rgb: np.ndarray) -> None:
        self.frames.append(Image.fromarray(rgb, "RGB"))

    def close(self) -> None:
        if not self.frames:
            return
        durations = [int(round(d)) for d in self.durations[: len(self.frames)]]
        if len(durations) < len(self.frames):  # fewer known durations than frames: their mean for all
            durations = int(round(sum(self.durations) / max(len(self.durations), 1))) or DEFAULT_FRAME_MS
        self.frames[0].save(self.path, save_all=True, append_images=self.frames[1:], duration=durations, loop=0)


class _AvWriter:
    """H.264 (libx264) when FFmpeg has it, else MPEG-4 part 2; yuv420p wants even sizes, so an
    odd last row / column is dropped."""

    def __init__(self, path: Path, fps: float, width: int, height: int):
        av = _require_av()
        self.av = av
        self.container = av.open(str(path), mode="w")
        rate = Fraction(fps).limit_denominator(1001)
        try:
            self.stream = self.container.add_stream("libx264", rate=rate)
        except Exception:  # an FFmpeg build without libx264
            self.stream = self.container.add_stream("mpeg4", rate=rate)
        self.width, self.height = width - width % 2, height - height % 2
        self.stream.width, self.stream.height = self.width, self.height
        self.stream.pix_fmt = "yuv420p"

    def write(self, rgb: np.ndarray) -> None:
        frame = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[: self.height, : self.width]), format="rgb24")
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode(None):  # flush the encoder
            self.container.mux(packet)
        self.container.close()


def video_writer(path: str | Path, source: VideoSource):
    """A writer of annotated frames (`write(rgb)`, `close()`) for `source`, in the format that
    `path`'s suffix names: .gif / .webp with Pillow, others with PyAV."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in PILLOW_VIDEO_SUFFIXES:
        return _PillowWriter(path, source.durations_ms or [1000.0 / source.fps] * (source.num_frames or 1))
    return _AvWriter(path, source.fps, source.width, source.height)


def annotated_video_path(out_dir: Path, source: VideoSource) -> Path:
    """OUT/<stem>_detections.<same suffix> for Pillow formats, OUT/<stem>_detections.mp4 else."""
    suffix = source.path.suffix.lower() if source.backend == "pillow" else ".mp4"
    return out_dir / f"{source.path.stem}_detections{suffix}"


__all__ = [
    "AV_VIDEO_SUFFIXES",
    "PILLOW_VIDEO_SUFFIXES",
    "VIDEO_SUFFIXES",
    "VideoError",
    "VideoSource",
    "annotated_video_path",
    "is_video",
    "open_video",
    "video_writer",
]
