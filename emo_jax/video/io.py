"""Video files in and out with PyAV: H.264/AAC mp4 writing (whole, or streamed batch by batch), decoding with fps
resampling, metadata, contact sheets."""
from __future__ import annotations

import contextlib
import dataclasses
import os
import uuid
from fractions import Fraction
from typing import Iterable, Iterator

import av
import numpy as np
from PIL import Image

from emo_jax.errors import VideoError
from emo_jax.paths import require_file


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


def _mono(audio: np.ndarray) -> np.ndarray:
    """Mono float32 samples of a block (int16 scaled to [-1, 1))."""
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise VideoError(f"audio must be mono [N] samples, got shape {audio.shape}; average the channels first")
    if audio.dtype == np.int16:
        return audio.astype(np.float32) / 32768.0
    return audio.astype(np.float32)


class VideoWriter:
    """Writes an H.264 (yuv420p) mp4 batch of frames by batch, as a context manager; `audio` (an array, or blocks
    of samples in order) becomes an AAC track cut or zero-padded to the video duration, muxed as the frames come.

    The file appears at `path` only when the `with` block finishes; until then it is a temporary file beside it,
    removed on failure, so a crash never leaves a half-written video under the target name.
    """

    def __init__(self, path: str, fps: float | Fraction, width: int, height: int,
                 audio: np.ndarray | Iterable[np.ndarray] | None = None, audio_sample_rate: int = 16000,
                 crf: int = 18):
        if not path.lower().endswith(".mp4"):
            raise VideoError(f"output path {path!r} must end in .mp4")
        if width % 2 or height % 2:
            raise VideoError(f"frame size {width}x{height} must be even for yuv420p H.264; crop or resize to even "
                             "sizes")
        self.path, self.rate, self.size, self.crf = path, _as_rate(fps), (height, width), crf
        self.audio_sample_rate = audio_sample_rate
        self._audio = None if audio is None else iter([audio] if isinstance(audio, np.ndarray) else audio)
        self._pending = np.zeros(0, np.float32)  # samples read from `audio` but not yet encoded
        self.frames_written = self._samples_written = 0

    def __enter__(self) -> VideoWriter:
        self._stack = contextlib.ExitStack()
        with self._stack:
            tmp = self._stack.enter_context(_atomic_path(self.path))
            self._container = self._stack.enter_context(av.open(tmp, mode="w", format="mp4"))
            self._video = self._container.add_stream("libx264", rate=self.rate, options={"crf": str(self.crf)})
            self._video.height, self._video.width = self.size
            self._video.pix_fmt = "yuv420p"
            self._sound = None
            if self._audio is not None:
                self._sound = self._container.add_stream("aac", rate=self.audio_sample_rate, layout="mono")
            self._stack = self._stack.pop_all()
        return self

    def write(self, frames_THWC: np.ndarray) -> None:
        """Encodes uint8 [T, H, W, 3] frames after those already written, and the audio up to their end."""
        frames_THWC = np.asarray(frames_THWC)
        _check_frames(frames_THWC, even=True)
        if frames_THWC.shape[1:3] != self.size:
            raise VideoError(f"frames are {frames_THWC.shape[2]}x{frames_THWC.shape[1]}, but this video is "
                             f"{self.size[1]}x{self.size[0]}; every frame must have the writer's size")
        for image in frames_THWC:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = self.frames_written
            self._container.mux(self._video.encode(frame))
            self.frames_written += 1
        self._write_audio()

    def _write_audio(self) -> None:
        """Encodes the audio up to the end of the frames written so far (zeros where the audio has ended)."""
        if self._sound is None:
            return
        target = round(self.frames_written / self.rate * self.audio_sample_rate)
        pieces, held = [self._pending], len(self._pending)
        while held < target - self._samples_written and (block := next(self._audio, None)) is not None:
            pieces.append(_mono(block))
            held += len(pieces[-1])
        samples = np.concatenate(pieces)
        need = target - self._samples_written
        self._pending = samples[need:]
        samples = np.pad(samples[:need], (0, max(0, need - len(samples))))
        if not len(samples):
            return
        chunk = av.AudioFrame.from_ndarray(samples[None, :], format="fltp", layout="mono")
        chunk.sample_rate, chunk.pts = self.audio_sample_rate, self._samples_written
        self._container.mux(self._sound.encode(chunk))
        self._samples_written = target

    def _finish(self) -> None:
        if not self.frames_written:
            raise VideoError(f"no frames were written to {self.path!r}; write at least one frame")
        self._container.mux(self._video.encode(None))
        if self._sound is not None:
            self._container.mux(self._sound.encode(None))

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            try:
                self._finish()
            except BaseException as e:
                self._stack.__exit__(type(e), e, e.__traceback__)  # closes the file and removes it
                raise
        return self._stack.__exit__(exc_type, exc, tb)


def write_video(
    path: str,
    frames_THWC: np.ndarray,
    fps: float | Fraction,
    audio: np.ndarray | None = None,
    audio_sample_rate: int = 16000,
    crf: int = 18,
) -> None:
    """Writes an H.264 (yuv420p) mp4, with `audio` as an AAC track cut or zero-padded to the video duration."""
    frames_THWC = np.asarray(frames_THWC)
    _check_frames(frames_THWC, even=False)
    _, height, width, _ = frames_THWC.shape
    with VideoWriter(path, fps, width, height, audio, audio_sample_rate, crf) as writer:
        writer.write(frames_THWC)


def _open(path: str) -> av.container.InputContainer:
    require_file(path, "video file", "pass the path of a video file", VideoError)
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


class ContactSheet:
    """The frames a contact sheet of a `num_frames`-frame video shows (up to `max_frames`, evenly spaced), kept from
    batches added in order, so the video itself need not be held."""

    def __init__(self, num_frames: int, max_frames: int = 64):
        if num_frames < 1:
            raise VideoError("frames is empty; pass at least one frame")
        self.picks = np.unique(np.linspace(0, num_frames - 1, min(max_frames, num_frames)).round().astype(int))
        self._chosen: list[np.ndarray] = []
        self._seen = 0

    def add(self, frames_THWC: np.ndarray) -> None:
        """Keeps the picked frames among the next len(frames_THWC) frames of the video."""
        frames_THWC = np.asarray(frames_THWC)
        _check_frames(frames_THWC, even=False)
        end = self._seen + len(frames_THWC)
        picked = self.picks[(self.picks >= self._seen) & (self.picks < end)]
        self._chosen.extend(frames_THWC[k - self._seen].copy() for k in picked)
        self._seen = end

    def save(self, path: str, cols: int = 8) -> None:
        """Writes the PNG grid, `cols` frames per row (black where the grid runs out)."""
        if cols < 1:
            raise VideoError(f"cols must be >= 1, got {cols}")
        assert len(self._chosen) == len(self.picks), (self._seen, len(self._chosen), len(self.picks))
        rows = -(-len(self._chosen) // cols)
        h, w, _ = self._chosen[0].shape
        grid = np.zeros((rows * h, min(cols, len(self._chosen)) * w, 3), np.uint8)
        for k, image in enumerate(self._chosen):
            r, c = divmod(k, cols)
            grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = image
        with _atomic_path(path) as tmp:
            Image.fromarray(grid).save(tmp, format="PNG")


def contact_sheet(frames_THWC: np.ndarray, path: str, cols: int = 8, max_frames: int = 64) -> None:
    """Writes a PNG grid of up to `max_frames` evenly spaced frames, `cols` per row (black where the grid runs out)."""
    frames_THWC = np.asarray(frames_THWC)
    _check_frames(frames_THWC, even=False)
    if cols < 1:
        raise VideoError(f"cols must be >= 1, got {cols}")
    sheet = ContactSheet(len(frames_THWC), max_frames)
    sheet.add(frames_THWC)
    sheet.save(path, cols)
