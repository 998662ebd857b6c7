"""Video files in and out with PyAV: H.264/AAC mp4 writing, decoding with fps resampling, metadata, contact sheets."""
from __future__ import annotations

import contextlib
import dataclasses
import os
import uuid
from fractions import Fraction
from typing import Iterator

import av
import numpy as np
from PIL import Image

from emo_jax.errors import VideoError


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """Container facts about a video file; width and height are as displayed (after rotation metadata)."""

    frames: int
    fps: float
    width: int
    height: int
    duration: float
    audio_duration: float | None  # None when the file has no audio stream
    audio_sample_rate: int | None
    audio_offset: float  # seconds from the first video frame to the first audio sample (0 without audio)
    rotation: int  # degrees counter-clockwise the player rotates the stored picture (0, 90, 180, 270)
    variable_frame_rate: bool


@contextlib.contextmanager
def _atomic_path(path: str) -> Iterator[str]:
    """Yields a temporary path beside `path` that replaces `path` only if the body finishes."""
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    # A unique name (not mkstemp) so the file gets the usual umask permissions rather than 0600.
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _as_rate(fps: float | Fraction) -> Fraction:
    # 1001 keeps NTSC rates (30000/1001) exact while turning float noise into a small fraction.
    rate = Fraction(fps).limit_denominator(1001)
    if rate <= 0:
        raise VideoError(f"fps must be positive, got {fps!r}")
    return rate


def _check_frames(frames_THWC: np.ndarray, even: bool) -> None:
    if frames_THWC.ndim != 4 or frames_THWC.shape[-1] != 3 or frames_THWC.dtype != np.uint8:
        raise VideoError(
            f"frames must be uint8 [T, H, W, 3], got {frames_THWC.dtype} {frames_THWC.shape}; "
            "convert with np.clip(x * 255, 0, 255).astype(np.uint8)"
        )
    t, h, w, _ = frames_THWC.shape
    if t == 0:
        raise VideoError("frames is empty; pass at least one frame")
    if even and (h % 2 or w % 2):
        raise VideoError(f"frame size {w}x{h} must be even for yuv420p H.264; crop or resize to even sizes")


def _fit_audio(audio: np.ndarray, n_samples: int) -> np.ndarray:
    """Mono float32 audio trimmed or zero-padded to exactly n_samples."""
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise VideoError(f"audio must be mono [N] samples, got shape {audio.shape}; average the channels first")
    if audio.dtype == np.int16:
        audio = audio.astype(np.float32) / 32768.0
    audio = audio.astype(np.float32)[:n_samples]
    return np.pad(audio, (0, n_samples - audio.shape[0]))


def write_video(
    path: str,
    frames_THWC: np.ndarray,
    fps: float | Fraction,
    audio: np.ndarray | None = None,
    audio_sample_rate: int = 16000,
    crf: int = 18,
) -> None:
    """Writes an H.264 (yuv420p) mp4, with `audio` as an AAC track cut or zero-padded to the video duration."""
    if not path.lower().endswith(".mp4"):
        raise VideoError(f"output path {path!r} must end in .mp4")
    frames_THWC = np.asarray(frames_THWC)
    _check_frames(frames_THWC, even=True)
    rate = _as_rate(fps)
    n_frames, height, width, _ = frames_THWC.shape
    with _atomic_path(path) as tmp, av.open(tmp, mode="w", format="mp4") as container:
        video = container.add_stream("libx264", rate=rate, options={"crf": str(crf)})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        sound = None
        if audio is not None:
            n_samples = round(n_frames / rate * audio_sample_rate)
            samples = _fit_audio(audio, n_samples)
            sound = container.add_stream("aac", rate=audio_sample_rate, layout="mono")
        for i, image in enumerate(frames_THWC):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = i
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if sound is not None:
            chunk = av.AudioFrame.from_ndarray(samples[None, :], format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = audio_sample_rate, 0
            container.mux(sound.encode(chunk))
            container.mux(sound.encode(None))


def _open(path: str) -> av.container.InputContainer:
    if not os.path.isfile(path):
        raise VideoError(f"video file {path!r} does not exist")
    try:
        return av.open(path)
    except av.FFmpegError as e:
        raise VideoError(f"{path!r} is not a readable video ({e}); re-encode it or remove it from the input") from e


def _video_stream(container: av.container.InputContainer, path: str) -> av.video.stream.VideoStream:
    if not container.streams.video:
        raise VideoError(f"{path!r} has no video stream")
    return container.streams.video[0]


def _display(frame: av.VideoFrame) -> np.ndarray:
    """The frame as shown by a player: RGB uint8, rotated by its display-matrix rotation."""
    image = frame.to_ndarray(format="rgb24")
    turns = round((frame.rotation or 0) / 90) % 4
    return np.ascontiguousarray(np.rot90(image, k=turns)) if turns else image


def _timed_frames(path: str) -> Iterator[tuple[float, float, np.ndarray]]:
    """(time since the first frame, frame duration, displayed frame) for every decoded frame."""
    with _open(path) as container:
        stream = _video_stream(container, path)
        nominal = 1.0 / float(stream.average_rate or stream.guessed_rate or 25)
        start = None
        try:
            for index, frame in enumerate(container.decode(stream)):
                time = frame.time if frame.pts is not None else index * nominal
                start = time if start is None else start
                duration = float(frame.duration * frame.time_base) if frame.duration else nominal
                yield time - start, duration, _display(frame)
        except av.FFmpegError as e:
            raise VideoError(f"decoding {path!r} failed ({e}); the file is corrupt or truncated") from e
        if start is None:
            raise VideoError(f"{path!r} has a video stream but no decodable frames")


def iter_frames(path: str, fps: float | None = None) -> Iterator[np.ndarray]:
    """Streams displayed RGB frames; with `fps`, resampled to round(duration * fps) frames by timestamp.

    Output frame j shows the source frame on screen at the centre of its interval, (j + 0.5) / fps,
    which is the nearest source frame in time; this handles variable frame rates as well.
    """
    if fps is None:
        for _, _, image in _timed_frames(path):
            yield image
        return
    fps = float(_as_rate(fps))
    emitted, previous, end = 0, None, 0.0
    for time, duration, image in _timed_frames(path):
        while previous is not None and (emitted + 0.5) / fps < time:
            yield previous
            emitted += 1
        previous, end = image, time + duration
    for _ in range(emitted, round(end * fps)):
        yield previous


def read_video(path: str, fps: float | None = None) -> tuple[np.ndarray, float]:
    """Decodes a whole video to uint8 [T, H, W, 3] and its frame rate (the source rate when `fps` is None)."""
    if fps is None:
        with _open(path) as container:
            stream = _video_stream(container, path)
            fps = float(stream.average_rate or stream.guessed_rate or 0) or None
        frames = list(iter_frames(path))
        if fps is None:
            raise VideoError(f"{path!r} declares no frame rate; pass fps= to resample it by timestamps")
    else:
        fps = float(_as_rate(fps))
        frames = list(iter_frames(path, fps))
    if not frames:
        raise VideoError(f"{path!r} is shorter than one frame at {fps} fps")
    return np.stack(frames), fps


def _packet_times(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> np.ndarray:
    """Sorted presentation times (seconds) of the video packets, read without decoding."""
    pts = [p.pts for p in container.demux(stream) if p.pts is not None and p.size]
    return np.sort(np.asarray(pts, dtype=np.float64)) * float(stream.time_base)


def _audio_facts(container: av.container.InputContainer) -> tuple[float | None, int | None, float]:
    """Duration, sample rate and start time (seconds) of the first audio stream."""
    if not container.streams.audio:
        return None, None, 0.0
    audio = container.streams.audio[0]
    start = float(audio.start_time * audio.time_base) if audio.start_time is not None else 0.0
    if audio.duration:
        return float(audio.duration * audio.time_base), audio.sample_rate, start
    samples = sum(frame.samples for frame in container.decode(audio))
    return samples / audio.sample_rate, audio.sample_rate, start


def video_info(path: str, vfr_tolerance: float = 0.1) -> VideoInfo:
    """Reads metadata; the rate is variable when a frame interval strays > vfr_tolerance from the median."""
    try:
        with _open(path) as container:
            stream = _video_stream(container, path)
            first = next(container.decode(stream), None)
            if first is None:
                raise VideoError(f"{path!r} has a video stream but no decodable frames")
            rotation = round((first.rotation or 0) / 90) % 4 * 90
            container.seek(0)
            times = _packet_times(container, stream)
            container.seek(0)
            audio_duration, sample_rate, audio_start = _audio_facts(container)
            average_rate = float(stream.average_rate or 0)
    except av.FFmpegError as e:
        raise VideoError(f"reading {path!r} failed ({e}); the file is corrupt or truncated") from e
    intervals = np.diff(times)
    median = float(np.median(intervals)) if intervals.size else 1.0 / (average_rate or 25.0)
    variable = bool(intervals.size and np.any(np.abs(intervals - median) > vfr_tolerance * median))
    duration = float(times[-1] - times[0]) + median if times.size else 0.0
    width, height = (first.height, first.width) if rotation in (90, 270) else (first.width, first.height)
    return VideoInfo(
        frames=int(times.size),
        fps=average_rate or 1.0 / median,
        width=width,
        height=height,
        duration=duration,
        audio_duration=audio_duration,
        audio_sample_rate=sample_rate,
        audio_offset=audio_start - (first.time or 0.0) if audio_duration is not None else 0.0,
        rotation=rotation,
        variable_frame_rate=variable,
    )


def contact_sheet(frames_THWC: np.ndarray, path: str, cols: int = 8, max_frames: int = 64) -> None:
    """Writes a PNG grid of up to `max_frames` evenly spaced frames, `cols` per row (black where the grid runs out)."""
    frames_THWC = np.asarray(frames_THWC)
    _check_frames(frames_THWC, even=False)
    if cols < 1:
        raise VideoError(f"cols must be >= 1, got {cols}")
    picks = np.unique(np.linspace(0, len(frames_THWC) - 1, min(max_frames, len(frames_THWC))).round().astype(int))
    chosen = frames_THWC[picks]
    rows = -(-len(chosen) // cols)
    _, h, w, _ = chosen.shape
    grid = np.zeros((rows * h, min(cols, len(chosen)) * w, 3), np.uint8)
    for k, image in enumerate(chosen):
        r, c = divmod(k, cols)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = image
    with _atomic_path(path) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")

