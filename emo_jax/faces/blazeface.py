"""MediaPipe's BlazeFace face detectors run through the LiteRT interpreter, with their pre- and post-processing
(letterboxing, SSD anchors, box and keypoint decoding, weighted non-maximum suppression) in numpy.

Two models (emo_jax/faces/models.py fetches both):
- short range (`face_detection_short_range.tflite`, 128x128 input): faces within about 2 m of the camera, i.e.
  large in the frame (selfie, webcam, talking-head close-ups);
- full range (`face_detection_full_range_sparse.tflite`, 192x192 input): also small and distant faces.

Every fixed number below is an option of MediaPipe's face detection graphs (mediapipe 0.10.x,
mediapipe/modules/face_detection/face_detection{,_short_range,_full_range}.pbtxt):
- the image goes into the tensor keeping its aspect ratio, centred on a zero (black) border, as RGB values
  mapped from [0, 255] to [-1, 1] (ImageToTensorCalculator: keep_aspect_ratio, BORDER_ZERO, output range -1..1);
- anchors (SsdAnchorsCalculator): offsets 0.5, one aspect ratio 1.0, fixed anchor size (so every anchor is
  1 x 1 and only its centre matters); short range: strides 8, 16, 16, 16 with an interpolated-scale anchor per
  layer (16x16x2 + 8x8x6 = 896 anchors); full range: stride 4, no interpolated anchor (48x48 = 2304 anchors);
- decoding (TensorsToDetectionsCalculator): 16 values per anchor in x, y, w, h order (reverse_output_order)
  then 6 keypoints (x, y), each divided by the input size (128 or 192) and added to the anchor centre; scores
  are the logit clipped to +-100 through a sigmoid; minimum score 0.5 (short) and 0.6 (full) in MediaPipe's
  graphs, 0.5 here unless given;
- weighted non-maximum suppression (NonMaxSuppressionCalculator, WEIGHTED, IoU above 0.3): each group of
  detections overlapping the best one remaining becomes their score-weighted mean box and keypoints, with the
  best one's score.

One difference from MediaPipe: shrinking into the tensor uses area averaging (OpenCV INTER_AREA) rather than
bilinear sampling, which aliases when a 320-pixel frame becomes 128 pixels.
"""
from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

from emo_jax.faces.models import model_path

# Keypoint order of the model's output (MediaPipe's FaceKeyPoint); right/left are the person's own.
KEYPOINTS = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear_tragion", "left_ear_tragion")
NMS_IOU = 0.3
SCORE_CLIP = 100.0


class _Model(NamedTuple):
    file: str
    size: int  # square input side
    strides: tuple[int, ...]
    interpolated_anchor: bool


MODELS = {
    "short": _Model("face_detection_short_range.tflite", 128, (8, 16, 16, 16), True),
    "full": _Model("face_detection_full_range_sparse.tflite", 192, (4,), False),
}


def ssd_anchors(size: int, strides: tuple[int, ...], interpolated_anchor: bool) -> np.ndarray:
    """Anchor centres [A, 2] (x, y) in [0, 1] of the square input, in the order of the model's outputs.

    Consecutive layers with the same stride share one grid, each contributing one anchor per cell (two with the
    interpolated-scale anchor); the anchors of a cell are adjacent.
    """
    centres = []
    i = 0
    while i < len(strides):
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            j += 1
        per_cell = (j - i) * (2 if interpolated_anchor else 1)
        cells = -(-size // strides[i])
        grid = (np.arange(cells, dtype=np.float64) + 0.5) / cells
        y, x = np.meshgrid(grid, grid, indexing="ij")
        xy = np.stack([x.ravel(), y.ravel()], axis=1)
        centres.append(np.repeat(xy, per_cell, axis=0))
        i = j
    return np.concatenate(centres).astype(np.float32)


class Letterbox(NamedTuple):
    """Where an image of `height` x `width` lies in the square tensor: resized to `inner_w` x `inner_h` pixels,
    its top-left corner at (`left`, `top`)."""
    height: int
    width: int
    inner_w: int
    inner_h: int
    left: int
    top: int

    @classmethod
    def fit(cls, height: int, width: int, side: int) -> Letterbox:
        scale = side / max(height, width)
        inner_w, inner_h = max(1, round(width * scale)), max(1, round(height * scale))
        return cls(height, width, inner_w, inner_h, (side - inner_w) // 2, (side - inner_h) // 2)

    def to_image(self, xy_side: np.ndarray) -> np.ndarray:
        """Points [..., 2] in tensor pixels -> image pixels."""
        offset = np.array([self.left, self.top], np.float64)
        scale = np.array([self.width / self.inner_w, self.height / self.inner_h], np.float64)
        return (xy_side - offset) * scale


def letterbox_tensor(rgb_HW3: np.ndarray, side: int) -> tuple[np.ndarray, Letterbox]:
    """The model input [1, side, side, 3] float32 in [-1, 1] (black border) and where the image lies in it."""
    h, w = rgb_HW3.shape[:2]
    box = Letterbox.fit(h, w, side)
    shrink = box.inner_w < w or box.inner_h < h
    inner = cv2.resize(rgb_HW3, (box.inner_w, box.inner_h),
                       interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    canvas = np.zeros((side, side, 3), np.uint8)
    canvas[box.top : box.top + box.inner_h, box.left : box.left + box.inner_w] = inner
    return (canvas.astype(np.float32) / 127.5 - 1.0)[None], box


def _iou(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    """IoU of each box in [N, 4] (x0, y0, x1, y1) with one box [4]."""
    w = np.clip(np.minimum(boxes[:, 2], box[2]) - np.maximum(boxes[:, 0], box[0]), 0, None)
    h = np.clip(np.minimum(boxes[:, 3], box[3]) - np.maximum(boxes[:, 1], box[1]), 0, None)
    inter = w * h
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = areas + (box[2] - box[0]) * (box[3] - box[1]) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray,
                 iou: float = NMS_IOU) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MediaPipe's weighted NMS: best first, each detection overlapping it by IoU > `iou` (itself included) merges
    into the score-weighted mean of their boxes [N, 4] and keypoints [N, K, 2]; the group keeps the best score."""
    order = np.argsort(-scores, kind="stable")
    out_boxes, out_keypoints, out_scores = [], [], []
    while len(order):
        merge = _iou(boxes[order], boxes[order[0]]) > iou
        merge[0] = True  # a degenerate best box still leaves the queue
        group = order[merge]
        weights = scores[group].astype(np.float64)
        weights /= weights.sum()
        out_boxes.append(np.tensordot(weights, boxes[group], axes=1))
        out_keypoints.append(np.tensordot(weights, keypoints[group], axes=1))
        out_scores.append(scores[order[0]])
        order = order[~merge]
    k = keypoints.shape[1]
    return (np.asarray(out_boxes, np.float64).reshape(-1, 4), np.asarray(out_keypoints, np.float64).reshape(-1, k, 2),
            np.asarray(out_scores, np.float32))


class BlazeFaceDetector:
    """MediaPipe BlazeFace: `model` "short" (faces large in the frame) or "full" (small faces too)."""

    def __init__(self, model: str = "full", folder: str | None = None, min_score: float = 0.5, threads: int = 1):
        if model not in MODELS:
            raise ValueError(f"unknown BlazeFace model {model!r}; choose one of {sorted(MODELS)}")
        from ai_edge_litert.interpreter import Interpreter  # the optional `faces` extra

        self.name = f"blazeface_{model}"
        self._model = MODELS[model]
        self.input_side = self._model.size  # the model sees no more pixels than this a side
        self._min_score = min_score
        self._interpreter = Interpreter(model_path=model_path(self._model.file, folder), num_threads=threads)
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]["index"]
        # The two outputs told apart by their last dimension: 16 regressors, 1 score.
        outputs = {int(d["shape"][-1]): d["index"] for d in self._interpreter.get_output_details()}
        self._regressors, self._classificators = outputs[16], outputs[1]
        self.anchors = ssd_anchors(self._model.size, self._model.strides, self._model.interpolated_anchor)

    def decode(self, regressors: np.ndarray, classificators: np.ndarray,
               box: Letterbox) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw outputs ([A, 16] or [1, A, 16]; [A, 1], [1, A, 1] or [A]) -> (boxes [N, 4], keypoints [N, 6, 2],
        scores [N]) in pixels of the image `box` places, after the score threshold and weighted NMS, clipped to the
        image; a box left with no area inside it (a detection on the border) is dropped."""
        side = self._model.size
        raw = np.asarray(regressors, np.float64).reshape(-1, 16)
        logits = np.clip(np.asarray(classificators, np.float64).reshape(-1), -SCORE_CLIP, SCORE_CLIP)
        scores = 1.0 / (1.0 + np.exp(-logits))
        assert len(raw) == len(scores) == len(self.anchors), (raw.shape, scores.shape, self.anchors.shape)
        keep = scores >= self._min_score
        raw, scores, anchors = raw[keep], scores[keep], self.anchors[keep].astype(np.float64) * side
        centre, size = raw[:, 0:2] + anchors, raw[:, 2:4]
        boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
        keypoints = raw[:, 4:16].reshape(-1, 6, 2) + anchors[:, None]
        valid = (size > 0).all(axis=1)
        boxes, keypoints, scores = weighted_nms(boxes[valid], keypoints[valid], scores[valid].astype(np.float32))
        limit = np.array([box.width, box.height], np.float64)
        corners = np.clip(box.to_image(boxes.reshape(-1, 2, 2)), 0, limit).reshape(-1, 4)
        keypoints = np.clip(box.to_image(keypoints), 0, limit)
        inside = (corners[:, 2] > corners[:, 0]) & (corners[:, 3] > corners[:, 1])
        return corners[inside].astype(np.float32), keypoints[inside].astype(np.float32), scores[inside]

    def detect(self, rgb_HW3: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Faces in a uint8 RGB image: boxes [N, 4] (x0, y0, x1, y1), keypoints [N, 6, 2] (KEYPOINTS order), both
        in the image's pixels, and scores [N], best first."""
        if rgb_HW3.ndim != 3 or rgb_HW3.shape[2] != 3 or rgb_HW3.dtype != np.uint8:
            raise ValueError(f"BlazeFace takes a uint8 RGB image [H, W, 3], got {rgb_HW3.dtype} {rgb_HW3.shape}")
        tensor, box = letterbox_tensor(rgb_HW3, self._model.size)
        self._interpreter.set_tensor(self._input, tensor)
        self._interpreter.invoke()
        return self.decode(self._interpreter.get_tensor(self._regressors),
                           self._interpreter.get_tensor(self._classificators), box)

    def __call__(self, rgb_HW3: np.ndarray) -> np.ndarray:
        """Face boxes [N, 4] (x0, y0, x1, y1) in pixels of the uint8 RGB image."""
        return self.detect(rgb_HW3)[0]
