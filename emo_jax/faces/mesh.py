"""MediaPipe Face Mesh (468 3D landmarks) on rotated square crops, tracked over a video.

What follows MediaPipe's published graphs (face_landmark_cpu, face_landmark_front_cpu and their ROI subgraphs,
mediapipe 0.10.x), reimplemented here: the model sees a 192 x 192 RGB crop in [0, 1], cut from a rotated square
region of interest (ROI) with replicated borders; its second output is a face-presence logit whose sigmoid must
reach 0.5; an ROI from a detection box is the box's centre with side 1.5 x its longer side; an ROI from the
previous frame's landmarks is the centre of their (image-axis) bounding box, side 1.5 x its longer side, turned
so that the line from landmark 33 to landmark 263 (the outer eye corners) is horizontal in the crop. MediaPipe
also turns a detection's ROI by the detector's two eye keypoints; a box has none, so roi_from_box is unrotated.

Coordinates: x, y in the frame's pixels with pixel i spanning [i, i + 1) (MediaPipe's normalised coordinates
times the frame's size); z the model's relative depth (smaller is nearer the camera), scaled like x.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import cv2
import numpy as np

from emo_jax.faces.models import model_path

INPUT_SIDE = 192
NUM_LANDMARKS = 468
PRESENCE_THRESHOLD = 0.5
ROI_SCALE = 1.5
EYE_LINE = (33, 263)  # outer corners of the eye on the image's left and of the one on its right, frontal face
# Ours, not MediaPipe's: a track starting from a box first re-crops from its own landmarks this many times. The box
# ROI frames the face differently from the landmark ROIs that follow, and the ROI takes ~3 rounds to settle; poses
# read meanwhile drift by up to ~1.3 deg on a still head, which would read as a turn at every start.
START_REFINEMENTS = 3


class Roi(NamedTuple):
    """A rotated square: centre (x, y) and side in pixels; angle in radians, clockwise on screen (y is down)."""

    x: float
    y: float
    side: float
    angle: float


def roi_from_box(box_xyxy: np.ndarray) -> Roi:
    """The unrotated square ROI MediaPipe makes from a face detection box: same centre, 1.5 x the longer side."""
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    return Roi((x0 + x1) / 2, (y0 + y1) / 2, ROI_SCALE * max(x1 - x0, y1 - y0), 0.0)


def roi_from_landmarks(points: np.ndarray) -> Roi:
    """The ROI MediaPipe tracks with: the points' bounding box centre, 1.5 x its longer side, eye line level."""
    lo, hi = points[:, :2].min(axis=0), points[:, :2].max(axis=0)
    dx, dy = points[EYE_LINE[1], :2] - points[EYE_LINE[0], :2]
    centre = (lo + hi) / 2
    return Roi(float(centre[0]), float(centre[1]), ROI_SCALE * float(max(hi - lo)), float(np.arctan2(dy, dx)))


def _crop_to_image(roi: Roi) -> np.ndarray:
    """The 2 x 3 affine map from crop coordinates (0..192, pixel edges) to frame coordinates (pixel edges)."""
    k = roi.side / INPUT_SIDE
    c, s = np.cos(roi.angle), np.sin(roi.angle)
    linear = k * np.array([[c, -s], [s, c]])
    offset = np.array([roi.x, roi.y]) - linear @ np.array([INPUT_SIDE / 2, INPUT_SIDE / 2])
    return np.concatenate([linear, offset[:, None]], axis=1)


class FaceMesh:
    """Face Mesh on a LiteRT interpreter; `folder` holds the model file (see emo_jax.faces.models)."""

    def __init__(self, folder: str | None = None, threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter  # the faces extra; only this class needs it

        self._interpreter = Interpreter(model_path=model_path("face_landmark.tflite", folder), num_threads=threads)
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]["index"]
        outputs = {int(np.prod(d["shape"])): d["index"] for d in self._interpreter.get_output_details()}
        self._landmarks, self._presence = outputs[3 * NUM_LANDMARKS], outputs[1]

    def landmarks(self, rgb_HW3: np.ndarray, roi: Roi) -> tuple[np.ndarray, float]:
        """(points [468, 3] float32 in the frame's pixels, presence probability) for the face in `roi`."""
        to_image = _crop_to_image(roi)
        # warpAffine's coordinates put pixel centres on integers: shift the edge-based map by half a pixel each side.
        to_image_cv = to_image.copy()
        to_image_cv[:, 2] += to_image[:, :2] @ np.array([0.5, 0.5]) - 0.5
        crop = cv2.warpAffine(rgb_HW3, to_image_cv, (INPUT_SIDE, INPUT_SIDE),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
        self._interpreter.set_tensor(self._input, (crop[None].astype(np.float32) / 255.0))
        self._interpreter.invoke()
        raw = self._interpreter.get_tensor(self._landmarks).reshape(NUM_LANDMARKS, 3).astype(np.float64)
        logit = float(self._interpreter.get_tensor(self._presence).reshape(()))
        points = np.empty_like(raw)
        points[:, :2] = raw[:, :2] @ to_image[:, :2].T + to_image[:, 2]
        points[:, 2] = raw[:, 2] * roi.side / INPUT_SIDE
        return points.astype(np.float32), float(1.0 / (1.0 + np.exp(-np.clip(logit, -50.0, 50.0))))

    def _from_box(self, rgb_HW3: np.ndarray, box_xyxy: np.ndarray) -> tuple[np.ndarray, float]:
        """Landmarks from the box's ROI, re-cropped START_REFINEMENTS times from their own ROI while found."""
        points, presence = self.landmarks(rgb_HW3, roi_from_box(box_xyxy))
        for _ in range(START_REFINEMENTS):
            if presence < PRESENCE_THRESHOLD:
                break
            points, presence = self.landmarks(rgb_HW3, roi_from_landmarks(points))
        return points, presence

    def track(self, rgb_frames: Sequence[np.ndarray], boxes_T4: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(points [T, 468, 3] float32, NaN where no face; presence [T], 0 where no box) over a video.

        A frame whose box is NaN has no face. The first frame, and every frame after one without a face, starts
        from its box (then settles, START_REFINEMENTS); the others from the previous frame's landmarks, and retry
        from their box once when the presence falls below 0.5.
        """
        if len(boxes_T4) != len(rgb_frames):
            raise ValueError(f"{len(rgb_frames)} frames but {len(boxes_T4)} face boxes; give one box per frame")
        points = np.full((len(rgb_frames), NUM_LANDMARKS, 3), np.nan, np.float32)
        presence = np.zeros(len(rgb_frames), np.float32)
        previous = None
        for t, (frame, box) in enumerate(zip(rgb_frames, boxes_T4)):
            if not np.all(np.isfinite(box)):
                previous = None
                continue
            if previous is None:
                found, presence[t] = self._from_box(frame, box)
            else:
                found, presence[t] = self.landmarks(frame, roi_from_landmarks(previous))
                if presence[t] < PRESENCE_THRESHOLD:
                    found, presence[t] = self._from_box(frame, box)
            previous = found if presence[t] >= PRESENCE_THRESHOLD else None
            if previous is not None:
                points[t] = found
        return points, presence
