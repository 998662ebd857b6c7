"""Per-frame head-rotation speed estimators behind one small interface.

EMO conditions its speed layers on head-rotation speed. emo-prepare's default, "head_pose"
(emo_jax/faces/head_pose.py), is that label: the angle between consecutive head poses from tracked Face Mesh
landmarks, in degrees per frame, the unit of the model's speed buckets (model.speed.unit); it runs in pass 2 on
the segment's crop frames and also gives the landmarks and the head pose the records store. The two
image-motion proxies below need no model files; both are in face widths per second (scale-free, so crops and
resolutions agree), a unit the model's buckets are not in:

- "flow" (default): dense Farneback optical flow between consecutive frames inside the previous frame's face
  box (one fixed window, so head translation and rotation both move the texture in it). The speed is the
  median flow magnitude over the window's most textured quarter of pixels: flat skin carries no motion
  signal, and the median ignores the mouth, which moves while the head is still. Yaw and pitch move the
  face texture and count; in-plane roll counts through the motion of the features around the centre.
- "box": the motion of the face box itself (centre shift plus change of size). Cheaper and blind to
  rotation in place; kept as a baseline to compare against.

A still head gives ~0 (< 0.05 in the tests); the tests' head swaying 22 px at 1 Hz with a 60 px face
gives ~1.4 on average. Ranges on real footage are to be measured on the prepared data before the speed
buckets (centres c_i, radii r_i) are chosen. Frame 0 has no predecessor and copies frame 1's value.
"""
from __future__ import annotations

from typing import Protocol, Sequence

import cv2
import numpy as np

from emo_jax.faces.detect import require_litert
from emo_jax.faces.head_pose import HeadPoseSpeed

_PATCH = 64  # flow is computed on the face window resized to 64 x 64: enough detail, cheap on a CPU


class SpeedEstimator(Protocol):
    """Maps grey frames and per-frame face boxes (finite, in those frames' pixels) to speed [T]."""

    name: str
    unit: str  # what the speeds measure, compared with the model's model.speed.unit before stage 3 trains

    def __call__(self, gray_frames: Sequence[np.ndarray], boxes_T4: np.ndarray, fps: float) -> np.ndarray: ...


def _first_from_second(speed: np.ndarray) -> np.ndarray:
    if len(speed) > 1:
        speed[0] = speed[1]
    return speed.astype(np.float32)


class FlowSpeed:
    """Optical-flow speed proxy (see module docstring)."""

    name = "flow"
    unit = "face_widths_per_second"

    def __call__(self, gray_frames: Sequence[np.ndarray], boxes_T4: np.ndarray, fps: float) -> np.ndarray:
        speed = np.zeros(len(gray_frames), np.float64)
        for t in range(1, len(gray_frames)):
            x0, y0, x1, y1 = np.round(boxes_T4[t - 1]).astype(int)
            h, w = gray_frames[t].shape
            x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
            if x1 - x0 < 4 or y1 - y0 < 4:
                continue
            a = cv2.resize(gray_frames[t - 1][y0:y1, x0:x1], (_PATCH, _PATCH), interpolation=cv2.INTER_AREA)
            b = cv2.resize(gray_frames[t][y0:y1, x0:x1], (_PATCH, _PATCH), interpolation=cv2.INTER_AREA)
            flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 9, 3, 5, 1.1, 0)
            texture = np.hypot(cv2.Sobel(a, cv2.CV_32F, 1, 0), cv2.Sobel(a, cv2.CV_32F, 0, 1))
            textured = texture >= np.quantile(texture, 0.75)
            if texture.max() > 0:
                speed[t] = np.median(np.hypot(flow[..., 0], flow[..., 1])[textured]) / _PATCH * fps
        return _first_from_second(speed)


class BoxSpeed:
    """Face-box motion speed proxy (see module docstring)."""

    name = "box"
    unit = "face_widths_per_second"

    def __call__(self, gray_frames: Sequence[np.ndarray], boxes_T4: np.ndarray, fps: float) -> np.ndarray:
        centre = (boxes_T4[:, :2] + boxes_T4[:, 2:]) / 2
        side = np.maximum(boxes_T4[:, 2] - boxes_T4[:, 0], boxes_T4[:, 3] - boxes_T4[:, 1])
        speed = np.zeros(len(boxes_T4), np.float64)
        speed[1:] = (np.hypot(*np.diff(centre, axis=0).T) + np.abs(np.diff(side))) / side[:-1] * fps
        return _first_from_second(speed)


ESTIMATORS: dict[str, type] = {"head_pose": HeadPoseSpeed, "flow": FlowSpeed, "box": BoxSpeed}


def make_speed_estimator(name: str) -> SpeedEstimator | HeadPoseSpeed:
    """The estimator registered under `name`."""
    if name not in ESTIMATORS:
        raise ValueError(f"unknown speed estimator {name!r}; choose one of {sorted(ESTIMATORS)}")
    if name == "head_pose":
        require_litert("the head_pose speed estimator (Face Mesh)", "--speed-estimator flow")
    return ESTIMATORS[name]()
