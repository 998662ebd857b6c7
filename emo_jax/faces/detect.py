"""Offline face detection on every k-th frame, with interpolation between detections.

Detectors (emo-prepare's --detector, emo-generate's too), each called on a uint8 RGB frame and returning boxes
[N, 4] (x0, y0, x1, y1) in its pixels:
- "blazeface" (default): BlazeFace full-range, and short-range on the frames where full-range finds no face
  (full-range missed a large frontal face on 5 of 122 frames of a real clip that short-range found);
- "blazeface_full" and "blazeface_short": MediaPipe's BlazeFace (emo_jax/faces/blazeface.py), the
  detector EMO labelled its data with. On real portraits and talking-head footage it is 7x (full) and 15x
  (short) faster than Haar per frame and finds the rotated and small faces that Haar misses (benchmarks/faces.py);
- "haar": OpenCV's frontal-face Haar cascade, the detector before BlazeFace; it needs no model files, so it stays
  for runs without them (the CPU demo draws its faces frontal and upright).
"""
from __future__ import annotations

import os
from typing import Protocol, Sequence

import cv2
import numpy as np

from emo_jax.errors import ConfigError

_CASCADE = "haarcascade_frontalface_default.xml"
# Longer side of the grey frames detection runs on (emo-prepare's --analysis-side default, emo-generate's too).
ANALYSIS_SIDE = 320


def shrink(frame_HW3: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    """(the frame with its longer side at most `side` pixels, by area averaging; its scale relative to the frame)."""
    h, w = frame_HW3.shape[:2]
    scale = min(1.0, side / max(h, w))
    if scale < 1.0:
        frame_HW3 = cv2.resize(frame_HW3, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    return frame_HW3, scale


def analysis_frame(frame_HW3: np.ndarray, side: int = ANALYSIS_SIDE) -> tuple[np.ndarray, float]:
    """(uint8 grey copy of the RGB frame, its longer side at most `side` pixels; its scale relative to the frame):
    what emo-prepare finds cuts and measures image motion on."""
    small, scale = shrink(frame_HW3, side)
    return cv2.cvtColor(small, cv2.COLOR_RGB2GRAY), scale


def detection_frame(frame_HW3: np.ndarray, detector: "FaceDetector",
                    side: int = ANALYSIS_SIDE) -> tuple[np.ndarray, float]:
    """(the RGB copy of a frame that `detector` runs on, its scale relative to the frame): shrunk to the detector's
    own input side where it has one (BlazeFace sees no more than that), else to `side`.

    emo-prepare's video frames and emo-generate's portrait go through this one copy, so the same picture gives
    the same face box to both.
    """
    return shrink(frame_HW3, getattr(detector, "input_side", None) or side)


class FaceDetector(Protocol):
    """Maps a uint8 RGB frame to face boxes [N, 4] (x0, y0, x1, y1) in its pixels."""

    name: str

    def __call__(self, rgb_HW3: np.ndarray) -> np.ndarray: ...


class HaarFaceDetector:
    """OpenCV's frontal-face Haar cascade, the one detector whose model ships inside opencv-python-headless 4.x.

    OpenCV 5 removed CascadeClassifier and its xml files, hence the pin opencv-python-headless==4.14.0.94.
    """

    name = "haar_frontalface_default"

    def __init__(self, min_size_fraction: float = 0.1, min_neighbors: int = 5):
        path = os.path.join(getattr(getattr(cv2, "data", None), "haarcascades", ""), _CASCADE)
        if not hasattr(cv2, "CascadeClassifier") or not os.path.isfile(path):
            raise RuntimeError(
                f"OpenCV {cv2.__version__} ships no Haar face cascade ({_CASCADE}); "
                "install opencv-python-headless==4.14.0.94 (OpenCV 5 dropped it)"
            )
        self._cascade = cv2.CascadeClassifier(path)
        self._min_size_fraction = min_size_fraction
        self._min_neighbors = min_neighbors

    def __call__(self, rgb_HW3: np.ndarray) -> np.ndarray:
        """Face boxes [N, 4] (x0, y0, x1, y1) in pixels of the uint8 RGB image."""
        gray = cv2.cvtColor(rgb_HW3, cv2.COLOR_RGB2GRAY)
        side = max(24, int(self._min_size_fraction * min(gray.shape)))
        found = self._cascade.detectMultiScale(
            cv2.equalizeHist(gray), scaleFactor=1.1, minNeighbors=self._min_neighbors, minSize=(side, side))
        boxes = np.asarray(found, dtype=np.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        return boxes


def require_litert(what: str, instead: str = "") -> None:
    """Raises ConfigError when ai-edge-litert, which runs MediaPipe's models, is not installed; `instead` names an
    option that needs no model, if the caller has one."""
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError:
        raise ConfigError(f"{what} runs MediaPipe's model on ai-edge-litert, which is not installed: pip install -c "
                          "constraints.txt -e '.[faces]' (then python -m emo_jax.faces.models)"
                          + (f", or choose {instead}" if instead else "")) from None


class FallbackDetector:
    """One detector, and a second one on the frames where the first finds no face."""

    def __init__(self, name: str, first: FaceDetector, second: FaceDetector):
        self.name, self.first, self.second = name, first, second
        self.input_side = getattr(first, "input_side", None)

    def __call__(self, rgb_HW3: np.ndarray) -> np.ndarray:
        boxes = self.first(rgb_HW3)
        return boxes if len(boxes) else self.second(rgb_HW3)


DETECTORS = ("blazeface", "blazeface_full", "blazeface_short", "haar")


def make_detector(name: str, threads: int = 1) -> FaceDetector:
    """The detector registered under `name` (DETECTORS); BlazeFace's model files come from
    emo_jax/faces/models.py's folder ($EMO_JAX_FACE_MODELS)."""
    if name == "haar":
        return HaarFaceDetector()
    if name not in DETECTORS:
        raise ValueError(f"unknown face detector {name!r}; choose one of {list(DETECTORS)}")
    require_litert(f"the {name} face detector", "--detector haar")
    from emo_jax.faces.blazeface import BlazeFaceDetector

    if name == "blazeface":
        return FallbackDetector(name, BlazeFaceDetector("full", threads=threads),
                                BlazeFaceDetector("short", threads=threads))
    return BlazeFaceDetector(name.removeprefix("blazeface_"), threads=threads)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of each box in a [N, 4] with the single box b [4]."""
    w = np.clip(np.minimum(a[:, 2], b[2]) - np.maximum(a[:, 0], b[0]), 0, None)
    h = np.clip(np.minimum(a[:, 3], b[3]) - np.maximum(a[:, 1], b[1]), 0, None)
    inter = w * h
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def largest(boxes: np.ndarray) -> np.ndarray:
    """The largest of the boxes [N >= 1, 4]: the speaker, usually."""
    return boxes[int(np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))]


def _pick(boxes: np.ndarray, previous: np.ndarray | None) -> np.ndarray | None:
    """The tracked face: the box overlapping the previous one most, else the largest."""
    if not len(boxes):
        return None
    if previous is not None:
        overlap = _iou(boxes, previous)
        if overlap.max() > 0.3:
            return boxes[int(overlap.argmax())]
    return largest(boxes)


def track_faces(
    frames: Sequence[np.ndarray],
    shot_starts: Sequence[int],
    detector: FaceDetector,
    every: int,
    max_gap: int,
) -> np.ndarray:
    """Per-frame face boxes [T, 4], NaN where no face is tracked.

    Detects on every `every`-th frame and on each shot's first and last frame; within a shot, frames between
    two detections at most `max_gap` frames apart are linearly interpolated (so one missed detection is
    bridged), and each detection also holds for `every // 2` frames either side. Nothing crosses a shot change.
    """
    n = len(frames)
    boxes = np.full((n, 4), np.nan, np.float32)
    bounds = sorted(set(shot_starts) | {0}) + [n]
    for start, end in zip(bounds[:-1], bounds[1:]):
        keys = sorted(set(range(start, end, every)) | {end - 1})
        found: dict[int, np.ndarray] = {}
        previous = None
        for k in keys:
            box = _pick(detector(frames[k]), previous)
            if box is not None:
                found[k] = previous = box
        detected = sorted(found)
        for a, b in zip(detected[:-1], detected[1:]):
            if b - a <= max_gap:
                w = np.linspace(0.0, 1.0, b - a + 1, dtype=np.float32)[:, None]
                boxes[a : b + 1] = (1 - w) * found[a] + w * found[b]
        for k in detected:
            lo, hi = max(start, k - every // 2), min(end, k + every // 2 + 1)
            missing = np.isnan(boxes[lo:hi, 0])
            boxes[lo:hi][missing] = found[k]
    return boxes
