"""One input video -> segment records: resample, detect and track the face, segment, crop, measure speed, cut audio."""
from __future__ import annotations

import dataclasses
import os
from typing import Iterator

import cv2
import numpy as np

from data_pipeline.crop import Framing, frame_face, smooth_boxes
from data_pipeline.encoders import SegmentEncoders
from emo_jax.faces.detect import (ANALYSIS_SIDE, DETECTORS, FaceDetector, analysis_frame, detection_frame, shrink,
                                 track_faces)
from emo_jax.faces.head_pose import HeadPoseSpeed
from data_pipeline.schema import SegmentRecord
from data_pipeline.segments import SHOT_THRESHOLD, shot_starts, split_segments
from data_pipeline.speed import ESTIMATORS, SpeedEstimator
from emo_jax.audio.decode import load_audio
from emo_jax.errors import AudioError, VideoError
from emo_jax.video import iter_frames, video_info


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
    """Settings of emo-prepare; an output folder is only ever filled with one setting."""

    fps: float = 30.0
    size: int = 512
    detect_every: int = 5  # detection every 5th frame (6 per second at 30 fps); tracking fills the rest
    face_expand: float = 2.0  # crop side / face side of a still face: config.data.face_expand (emo-generate's too)
    box_smooth_seconds: float = 0.1  # Gaussian sigma of the temporal face-box smoothing
    min_seconds: float = 3.0
    max_seconds: float = 12.0
    shot_threshold: float = SHOT_THRESHOLD  # mean HSV change of a cut (data_pipeline/segments.py)
    jpeg_quality: int = 95
    detector: str = "blazeface"  # emo_jax/faces/detect.py DETECTORS
    # data_pipeline/speed.py ESTIMATORS; head_pose (EMO's label, degrees per frame) also stores landmarks and pose
    speed_estimator: str = "head_pose"
    # Image-motion speeds run on grey frames this long (~60 KB per frame kept); face and cut detection on RGB copies
    # this long with Haar, at BlazeFace's own input side (192) with BlazeFace; emo-generate detects on portraits at
    # the default.
    analysis_side: int = ANALYSIS_SIDE
    audio_sample_rate: int = 16000
    audio_window_seconds: float = 30.0  # wav2vec2's window on long audio: config.audio.window_seconds
    wav2vec: str = ""  # Hugging Face wav2vec2 folder: store per-frame features (schema v2); "" = none
    vae: str = ""  # diffusers AutoencoderKL folder: store per-frame latents (schema v2); "" = none

    def with_absolute_paths(self) -> "PrepareConfig":
        """The same settings with the encoder folders absolute, so a re-run from another directory matches."""
        return dataclasses.replace(self, **{k: os.path.abspath(v) for k, v in
                                            (("wav2vec", self.wav2vec), ("vae", self.vae)) if v})

    def validate(self) -> None:
        """Raises ValueError naming the setting that cannot work."""
        if self.fps <= 0 or self.size < 16 or self.size % 2:
            raise ValueError(f"--fps must be > 0 and --size an even number >= 16, got {self.fps}, {self.size}")
        if self.max_seconds < 2 * self.min_seconds:
            raise ValueError(
                f"--max-seconds ({self.max_seconds}) must be at least twice --min-seconds ({self.min_seconds}) "
                "so long runs split into pieces that are all long enough")
        if self.audio_sample_rate <= 0 or self.audio_window_seconds <= 0:
            raise ValueError(f"--audio-sample-rate and --audio-window-seconds must be > 0, got "
                             f"{self.audio_sample_rate}, {self.audio_window_seconds}")
        if self.shot_threshold <= 0:
            raise ValueError(f"--shot-threshold must be > 0 (a mean HSV change, 0-255), got {self.shot_threshold}")
        if self.detect_every < 1 or self.face_expand < 1:
            raise ValueError(f"--detect-every must be >= 1 and --face-expand >= 1, got "
                             f"{self.detect_every}, {self.face_expand}")
        if self.detector not in DETECTORS:
            raise ValueError(f"--detector {self.detector!r} is unknown; choose one of {list(DETECTORS)}")
        if self.speed_estimator not in ESTIMATORS:
            raise ValueError(
                f"--speed-estimator {self.speed_estimator!r} is unknown; choose one of {sorted(ESTIMATORS)}")
        for flag, folder in (("--wav2vec", self.wav2vec), ("--vae", self.vae)):
            if folder and not os.path.isfile(os.path.join(folder, "config.json")):
                raise ValueError(f"{flag} {folder!r} is not a model folder (no config.json in it); pass a local "
                                 "Hugging Face / diffusers folder with config.json and weights, or leave it out")


class SkipInput(Exception):
    """An input that cannot give any segment, with a short machine-readable reason and a human detail."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def _aligned_audio(path: str, audio_offset: float, num_frames: int, cfg: PrepareConfig) -> tuple[np.ndarray, bool]:
    """Mono audio on the video timeline (sample 0 plays with frame 0), padded to cover every frame.

    Returns the audio and whether more than one frame of it had to be zero-padded.
    """
    try:
        audio = load_audio(path, cfg.audio_sample_rate)
    except AudioError as e:
        raise SkipInput("no_audio", str(e)) from e
    shift = round(audio_offset * cfg.audio_sample_rate)
    audio = np.pad(audio, (shift, 0)) if shift > 0 else audio[-shift:]
    needed = round(num_frames / cfg.fps * cfg.audio_sample_rate) + 1
    padded = needed - len(audio) > cfg.audio_sample_rate / cfg.fps
    return np.pad(audio, (0, max(0, needed - len(audio)))), padded


@dataclasses.dataclass
class _Analysis:
    """Pass 1's small copies of every frame at the target fps: the RGB ones the face detector and the cut detector
    run on, grey ones for the image-motion speed estimators, with their scales relative to the source, and the
    source (width, height)."""

    grays: list[np.ndarray]
    scale: float
    detection: list[np.ndarray]
    detection_scale: float
    source_size: tuple[int, int]


def _analysis_frames(path: str, cfg: PrepareConfig, detector: FaceDetector, grey: bool) -> _Analysis:
    """`grey`: also keep the grey copies (only the image-motion speed estimators read them)."""
    out = _Analysis([], 1.0, [], 1.0, (0, 0))
    for frame in iter_frames(path, cfg.fps):
        if grey:
            gray, out.scale = analysis_frame(frame, cfg.analysis_side)
            out.grays.append(gray)
        small, out.detection_scale = detection_frame(frame, detector, cfg.analysis_side)
        out.detection.append(small)
        out.source_size = frame.shape[1], frame.shape[0]
    return out


@dataclasses.dataclass
class _Plan:
    """What pass 2 needs for one segment."""

    start: int
    end: int
    framing: Framing
    speed: np.ndarray | None  # None: measured in pass 2 on the crops (head_pose)


def _plan_segments(path: str, cfg: PrepareConfig, detector: FaceDetector,
                   estimator: SpeedEstimator | HeadPoseSpeed) -> tuple[list[_Plan], int]:
    """Pass 1: analysis of the whole video; returns the segment plans and the number of frames."""
    on_crops = isinstance(estimator, HeadPoseSpeed)
    analysis = _analysis_frames(path, cfg, detector, grey=not on_crops)
    (width, height), num_frames = analysis.source_size, len(analysis.detection)
    if num_frames < cfg.min_seconds * cfg.fps:
        raise SkipInput("too_short", f"{num_frames / cfg.fps:.2f} s at {cfg.fps} fps < --min-seconds {cfg.min_seconds}")
    starts = shot_starts(analysis.detection, cfg.shot_threshold)
    boxes = track_faces(analysis.detection, starts, detector, cfg.detect_every, max_gap=2 * cfg.detect_every)
    boxes /= analysis.detection_scale  # into the source's pixels
    analysis.detection.clear()
    has_face = np.isfinite(boxes[:, 0])
    if not has_face.any():
        raise SkipInput("no_face", f"no face found by {detector.name} in {num_frames} frames")
    ranges = split_segments(has_face, starts, cfg.fps, cfg.min_seconds, cfg.max_seconds)
    if not ranges:
        raise SkipInput("no_long_face_run", f"face in {has_face.mean():.0%} of frames but never for "
                        f"{cfg.min_seconds} s within one shot")
    plans = []
    for start, end in ranges:
        smoothed = smooth_boxes(boxes[start:end], cfg.box_smooth_seconds * cfg.fps)
        speed = None if on_crops else estimator(analysis.grays[start:end], smoothed * analysis.scale, cfg.fps)
        framing = frame_face(smoothed, width, height, cfg.face_expand, cfg.size)
        plans.append(_Plan(start, end, framing, speed))
    return plans, num_frames


# Face Mesh runs on the crops shrunk to this side: a face framed with face_expand 2 is then ~128 px, and the
# mesh's ROI (1.5 faces) ~192 px, its input side, so nothing the model could see is lost.
MESH_SIDE = 256
# The outer lip contour of MediaPipe's 468-point face mesh topology.
LIP_OUTLINE = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)


def hull_mask(points_TN3: np.ndarray, size: int) -> np.ndarray:
    """u8 [size, size]: 1 inside the union over frames of the convex hull of the points (NaN frames skip)."""
    mask = np.zeros((size, size), np.uint8)
    for points in points_TN3[:, :, :2]:
        if np.isfinite(points).all():
            cv2.fillConvexPoly(mask, cv2.convexHull(np.round(points).astype(np.int32)), 1)
    return mask


def _pose_labels(estimator: HeadPoseSpeed, crops: list[np.ndarray], framing: Framing, size: int) -> dict:
    """Speed, landmarks, head pose and lip mask of one segment from its (shrunk) crops, in the crop's pixels."""
    scale = size / crops[0].shape[0]
    labels = estimator.label(crops, framing.boxes_T4 / scale)
    pose = labels["pose"]
    pose[:, 3:] *= scale  # translation follows the pixels; angles do not
    points = labels["points"] * scale
    return {"speed": labels["speed"], "landmarks": points, "head_pose": pose,
            "lip_mask": hull_mask(points[:, LIP_OUTLINE], size), "mesh_face_mask": hull_mask(points, size)}


def _encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return data.tobytes()


def extract_segments(
    path: str, cfg: PrepareConfig, detector: FaceDetector, estimator: SpeedEstimator | HeadPoseSpeed,
    encoders: SegmentEncoders,
    handled: list[str],
) -> Iterator[SegmentRecord]:
    """Yields the input's segment records in time order; raises SkipInput for inputs that give none.

    Inputs that need care but stay usable are appended to `handled` by name: "rotated" (frames turned by
    the rotation metadata), "variable_frame_rate" (resampled by timestamps), "audio_padded" (audio ended
    more than a frame before the video; silence added).
    """
    try:
        info = video_info(path)
    except VideoError as e:
        raise SkipInput("unreadable", str(e)) from e
    if info.audio_duration is None:
        raise SkipInput("no_audio", f"{path!r} has no audio stream")
    handled.extend(name for name, flag in (("rotated", info.rotation != 0),
                                           ("variable_frame_rate", info.variable_frame_rate)) if flag)
    try:
        plans, num_frames = _plan_segments(path, cfg, detector, estimator)
        audio, padded = _aligned_audio(path, info.audio_offset, num_frames, cfg)
        if padded:
            handled.append("audio_padded")
        per_frame = cfg.audio_sample_rate / cfg.fps
        # The whole source in one go, so segment edges get features that heard the audio around them.
        features = encoders.source_features(audio[: round(num_frames * per_frame)], cfg.fps, num_frames,
                                            cfg.audio_sample_rate, cfg.audio_window_seconds)
        frames = iter_frames(path, cfg.fps)
        t = 0
        for index, plan in enumerate(plans):
            jpegs, crops = [], []
            for frame in frames:
                if plan.start <= t:
                    crop = plan.framing.frame(frame)
                    jpegs.append(_encode_jpeg(crop, cfg.jpeg_quality))
                    if plan.speed is None:
                        crops.append(shrink(crop, MESH_SIDE)[0])
                t += 1
                if t == plan.end:
                    break
            assert len(jpegs) == plan.end - plan.start, (len(jpegs), plan)
            labels = {"speed": plan.speed} if plan.speed is not None else _pose_labels(
                estimator, crops, plan.framing, cfg.size)
            del crops
            first = round(plan.start * per_frame)
            yield SegmentRecord(
                source=path,
                segment_index=index,
                start_frame=plan.start,
                fps=cfg.fps,
                size=cfg.size,
                frames_jpeg=jpegs,
                face_boxes=plan.framing.boxes_T4,
                crop_box=plan.framing.crop,
                face_mask=plan.framing.mask(),
                speed_estimator=estimator.name,
                audio=audio[first : first + round(len(jpegs) * per_frame)].astype(np.float32),
                audio_sample_rate=cfg.audio_sample_rate,
                audio_features=None if features is None else features[plan.start : plan.end],
                latents=encoders.latents(jpegs),
                **labels,
            )
    except VideoError as e:
        raise SkipInput("unreadable", str(e)) from e
