"""emo-eval's face metrics on one video at a time: F-SIM (emo_jax/eval/face_identity.py), E-FID's per-frame
expression coefficients (emo_jax/eval/face_recon.py) and the landmark E-FID proxy's features
(emo_jax/eval/landmark_expression.py), from one decoding of the video.

Per video: its frames (at --fps, or as stored) are held for that video; BlazeFace (full-range, short-range where
full-range finds nothing) runs on every frame and the largest face's box is kept, with no interpolation: a frame
without a detection has no face. F-SIM describes each frame's box with dlib; Face Mesh tracks the boxes
(FaceMesh.track) and its landmarks give the proxy's features and the five points that align each frame's crop for
Deep3DFaceRecon. Frames without a face (no box, or Face Mesh's presence below 0.5) are counted and not scored.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from emo_jax.errors import ConfigError
from emo_jax.eval import weights
from emo_jax.eval.extract import ShardedExtractor

DETECTOR = "blazeface"


@dataclass
class FaceFrames:
    """One video's face analysis: frames, boxes [T, 4] and landmarks [T, 468, 3] (NaN where no face), F-SIM's
    descriptors (None where no box, or when F-SIM is not computed) and E-FID's expression coefficients [T, 64]
    (NaN rows where no landmarks; None when E-FID is not computed)."""

    frames: int
    boxes: np.ndarray
    points: np.ndarray
    descriptors: list | None
    expression: np.ndarray | None


class FaceAnalyser:
    """The detector and Face Mesh, with dlib's descriptor (F-SIM) and Deep3DFaceRecon (E-FID) where loaded."""

    def __init__(self, detector, mesh, descriptor=None, recon: ShardedExtractor | None = None,
                 standard_5x3: np.ndarray | None = None):
        assert (recon is None) == (standard_5x3 is None)
        self.detector, self.mesh, self.descriptor = detector, mesh, descriptor
        self.recon, self.standard = recon, standard_5x3

    def largest_face(self, rgb_HW3: np.ndarray) -> np.ndarray:
        """The largest face's box [4] in the frame's pixels, NaN where the detector finds none."""
        from emo_jax.faces.detect import detection_frame, largest

        small, scale = detection_frame(rgb_HW3, self.detector)
        boxes = self.detector(small)
        return largest(boxes) / scale if len(boxes) else np.full(4, np.nan)

    def describe(self, rgb_HW3: np.ndarray) -> np.ndarray | None:
        """F-SIM's descriptor of the image's largest face, None where there is none."""
        box = self.largest_face(rgb_HW3)
        return None if np.isnan(box).any() else self.descriptor.describe(rgb_HW3, box)

    def analyse(self, frames: Sequence[np.ndarray], describe: bool = True) -> FaceFrames:
        """Boxes, landmarks, E-FID's coefficients where loaded, and F-SIM's descriptors where loaded and
        `describe` (a reference video needs none)."""
        boxes = np.stack([self.largest_face(f) for f in frames]) if len(frames) else np.zeros((0, 4))
        points, _ = self.mesh.track(frames, boxes)
        descriptors = None
        if self.descriptor is not None and describe:
            descriptors = [None if np.isnan(box).any() else self.descriptor.describe(frame, box)
                           for frame, box in zip(frames, boxes)]
        expression = None
        if self.recon is not None:
            expression = expression_of(frames, points, self.recon, self.standard)
        return FaceFrames(len(frames), boxes, points, descriptors, expression)


def expression_of(frames: Sequence[np.ndarray], points_T468x3: np.ndarray, recon: ShardedExtractor,
                  standard_5x3: np.ndarray) -> np.ndarray:
    """Deep3DFaceRecon's expression coefficients [T, 64] of each frame's aligned crop, NaN rows where a frame has
    no landmarks."""
    from emo_jax.eval.face_recon import EXPRESSION, align_face, five_points_from_mesh

    found = np.flatnonzero(np.isfinite(points_T468x3).all(axis=(1, 2)))
    out = np.full((len(frames), EXPRESSION.stop - EXPRESSION.start), np.nan)
    if len(found):
        crops = np.stack([align_face(frames[t], five_points_from_mesh(points_T468x3[t]), standard_5x3)
                          for t in found])
        out[found] = recon(crops)
    return out


def recon_extractor(params: Any, batch: int, devices: Sequence[jax.Device] | None = None) -> ShardedExtractor:
    """Aligned uint8 crops [N, 224, 224, 3] -> expression coefficients [N, 64], sharded over `devices`."""
    from emo_jax.eval.face_recon import expression_coefficients

    return ShardedExtractor(lambda p, crops: expression_coefficients(p, crops.astype(jnp.float32) / 255.0), params,
                            batch, devices)


def _missing(folder: str, names: Sequence[str]) -> list[str]:
    return [n for n in names if not os.path.isfile(os.path.join(folder, n))]


def load_face_metrics(folder: str, batch: int = 32, devices: Sequence[jax.Device] | None = None
                      ) -> tuple[FaceAnalyser | None, dict[str, str]]:
    """(the analyser with what `folder` allows, None when the face models cannot run), {'F-SIM' / 'E-FID' /
    'E-FID (landmark proxy)': 'not computed: <why>; <what to do>'} for each face metric that cannot be computed."""
    from emo_jax.faces.detect import make_detector
    from emo_jax.faces.mesh import FaceMesh

    missing: dict[str, str] = {}
    try:
        detector, mesh = make_detector(DETECTOR), FaceMesh()
    except ConfigError as e:
        why = f"not computed: the face tracker cannot run: {e}"
        return None, {"F-SIM": why, "E-FID": why, "E-FID (landmark proxy)": why}
    descriptor = None
    dlib_files = _missing(folder, weights.DLIB_SHA256)
    if dlib_files:
        missing["F-SIM"] = (f"not computed: {', '.join(dlib_files)} missing in {folder}; fetch "
                            f"{'them' if len(dlib_files) > 1 else 'it'} with `{weights.dlib_fetch_command(folder)}`")
    else:
        from emo_jax.eval.face_identity import FaceDescriptor

        try:
            descriptor = FaceDescriptor(folder, DETECTOR)
        except ConfigError as e:
            missing["F-SIM"] = f"not computed: {e}"
    recon = standard = None
    recon_files = _missing(folder, [weights.FACE_RECON_FILE, weights.STANDARD_POINTS_FILE])
    if recon_files:
        missing["E-FID"] = (f"not computed: {', '.join(recon_files)} missing in {folder} (user supplied); "
                            f"{weights.face_recon_get_line(folder, recon_files)}")
    else:
        from emo_jax.eval.face_recon import load_standard_points
        from emo_jax.interop.face_recon_import import load_face_recon

        _, params = load_face_recon(os.path.join(folder, weights.FACE_RECON_FILE))
        recon = recon_extractor(params, batch, devices)
        standard = load_standard_points(os.path.join(folder, weights.STANDARD_POINTS_FILE))
    return FaceAnalyser(detector, mesh, descriptor, recon, standard), missing
