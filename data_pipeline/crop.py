"""Face framing, the one rule emo-prepare's segments and emo-generate's portraits share: the square crop window
around the face, crop-and-resize, the face boxes in crop pixels, and the face mask."""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d


def smooth_boxes(boxes_T4: np.ndarray, sigma_frames: float) -> np.ndarray:
    """Gaussian smoothing along time; removes the detector's frame-to-frame jitter. All boxes must be finite."""
    assert np.isfinite(boxes_T4).all()
    if sigma_frames <= 0 or len(boxes_T4) < 2:
        return boxes_T4.astype(np.float32)
    return gaussian_filter1d(boxes_T4.astype(np.float64), sigma_frames, axis=0, mode="nearest").astype(np.float32)


def crop_window(boxes_T4: np.ndarray, width: int, height: int, expand: float) -> np.ndarray:
    """A square crop window (x0, y0, x1, y1) inside the width x height frame, fixed for all the boxes.

    It holds the union of the face boxes plus a margin of (expand - 1) / 2 median face sides on each side, so a
    still face (or a portrait's single box) fills 1 / expand of the crop. The window is fixed rather than
    following the face because head motion is what the temporal and speed layers learn: a tracking crop would
    erase it.
    """
    union = np.array([boxes_T4[:, 0].min(), boxes_T4[:, 1].min(), boxes_T4[:, 2].max(), boxes_T4[:, 3].max()])
    face_side = float(np.median(np.maximum(boxes_T4[:, 2] - boxes_T4[:, 0], boxes_T4[:, 3] - boxes_T4[:, 1])))
    side = max(union[2] - union[0], union[3] - union[1]) + (expand - 1.0) * face_side
    side = int(round(min(side, width, height)))
    cx, cy = (union[0] + union[2]) / 2, (union[1] + union[3]) / 2
    x0 = int(round(np.clip(cx - side / 2, 0, width - side)))
    y0 = int(round(np.clip(cy - side / 2, 0, height - side)))
    return np.array([x0, y0, x0 + side, y0 + side], np.float32)


def crop_resize(frame_HWC: np.ndarray, crop: np.ndarray, size: int) -> np.ndarray:
    """The crop window of the frame resized to size x size (area filter when shrinking)."""
    x0, y0, x1, y1 = (int(v) for v in crop)
    patch = frame_HWC[y0:y1, x0:x1]
    shrink = patch.shape[0] > size
    return cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


def to_crop_pixels(boxes_T4: np.ndarray, crop: np.ndarray, size: int) -> np.ndarray:
    """Boxes in source pixels -> pixels of the size x size cropped frame, clipped to it."""
    scale = size / float(crop[2] - crop[0])
    offset = np.array([crop[0], crop[1], crop[0], crop[1]], np.float32)
    return np.clip((boxes_T4 - offset) * scale, 0, size).astype(np.float32)


def union_mask(boxes_T4: np.ndarray, size: int, grow: float = 1.0) -> np.ndarray:
    """uint8 [size, size] mask, 1 on every pixel any of the boxes touches, each box first grown `grow` times
    about its centre (and clipped to the frame)."""
    margin = (boxes_T4[:, 2:] - boxes_T4[:, :2]) * ((grow - 1.0) / 2)  # zero at grow 1: the boxes bit for bit
    grown = np.clip(boxes_T4 + np.concatenate([-margin, margin], axis=1), 0, size)
    mask = np.zeros((size, size), np.uint8)
    for x0, y0, x1, y1 in grown:
        mask[int(np.floor(y0)) : int(np.ceil(y1)), int(np.floor(x0)) : int(np.ceil(x1))] = 1
    return mask


@dataclasses.dataclass(frozen=True)
class Framing:
    """Where a face sits in the model's size x size frames: the crop window (x0, y0, x1, y1) in source pixels and
    the face boxes [T, 4] in pixels of the cropped, resized frames."""

    crop: np.ndarray
    size: int
    boxes_T4: np.ndarray

    def frame(self, image_HWC: np.ndarray) -> np.ndarray:
        """A source frame (or the portrait) as the model sees it: [size, size, C]."""
        return crop_resize(image_HWC, self.crop, self.size)

    def mask(self, grow: float = 1.0) -> np.ndarray:
        """The face mask, uint8 [size, size]: the union of the face boxes, each grown `grow` times."""
        return union_mask(self.boxes_T4, self.size, grow)


def frame_face(boxes_T4: np.ndarray, width: int, height: int, expand: float, size: int) -> Framing:
    """The framing of the face boxes [T, 4] (source pixels) of a width x height source: a segment's face track in
    emo-prepare, a portrait's single box in emo-generate. `expand` is config.data.face_expand."""
    crop = crop_window(boxes_T4, width, height, expand)
    return Framing(crop, size, to_crop_pixels(boxes_T4, crop, size))
