"""emo-eval's face metrics on one video at a time: F-SIM (emo_jax/eval/face_identity.py), E-FID's per-frame
expression coefficients (emo_jax/eval/face_recon.py) and the landmark E-FID proxy's features
(emo_jax/eval/landmark_expression.py), from one decoding of the video.

Per video: its frames (at --fps, or as stored) are held for that video; BlazeFace (full-range, short-range where
full-range finds nothing) runs on every frame and the largest face's box is kept, with no interpolation: a frame
without a detection has no face. F-SIM describes each frame's box with dlib; Face Mesh tracks the boxes
(FaceMesh.track) and its landmarks give the proxy's features and the five points that align each frame's crop for
Deep3DFaceRecon. Frames without a face (no box, or Face Mesh's presence below 0.5) are counted and not scored.

Also emo-eval's preprocessing entries for these metrics and F-SIM's JSON entry (frames pooled over all videos).
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from emo_jax.eval import weights
from emo_jax.eval.extract import ShardedExtractor

DETECTOR = "blazeface"
PROXY = "E-FID (landmark proxy)"  # its own JSON entry, beside Table 1's columns
PROXY_NOTE = ("not comparable with the paper's E-FID or any published number: Face Mesh landmark features, not "
              "Deep3DFaceRecon's expression coefficients")


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


def face_preprocessing(reference_images: bool, efid_batch: int, folder: str) -> dict[str, Any]:
    """emo-eval's preprocessing entries for the face metrics; `reference_images`: F-SIM's portraits come from
    --reference-images; `folder`: the weights folder."""
    from emo_jax.eval.face_identity import SAME_PERSON_DISTANCE

    return {
        "faces": {"detector": f"{DETECTOR} (BlazeFace full-range, short-range where it finds none) on every "
                              "frame, the largest face; no interpolation: a frame without a detection has no face",
                  "landmarks": "MediaPipe Face Mesh tracked from the boxes (emo_jax/faces/mesh.py); a frame where "
                               "its presence is below 0.5 has no landmarks",
                  "decoding": "each video decoded once for the three face metrics, its frames held meanwhile"},
        "F-SIM": {"network": "dlib_face_recognition_resnet_model_v1 (128-d), dlib's 5-point shape predictor on the "
                             "detector's box, get_face_chip 150 px, padding 0.25",
                  "reference": "the image of the same name in --reference-images" if reference_images
                  else "the first frame of the paired reference video (the portrait the clip started from)",
                  "frames": "every generated frame; frames without a face counted (no_face), not scored",
                  "value": "mean cosine similarity of the descriptors over all scored frames of all videos (frames "
                           "pooled, not a mean of per-video means); mean_distance likewise, Euclidean",
                  "same_person": f"frames within dlib's Euclidean distance {SAME_PERSON_DISTANCE}"},
        "E-FID": {"network": "Deep3DFaceRecon_pytorch's ResNet-50 face reconstruction (epoch_20.pth, net_recon), "
                             "3DMM expression coefficients 80:144, 64-d",
                  "alignment": "five points from Face Mesh (eye-corner midpoints, nose tip 4, mouth corners 61/291) "
                               "fitted to similarity_Lm3D_all.mat's five standard points (align_img: scale and "
                               "translation), 224x224 crop, PIL bicubic, [0, 1]",
                  "frames": "every frame of both sides with landmarks; others counted, not scored",
                  "distance": "Fréchet distance between the two sides' per-frame coefficients",
                  "batch": efid_batch, "weights_sha256": efid_digests(folder)},
        PROXY: {"features": "Face Mesh landmarks in the head frame (head_pose's similarity fit, divided by the "
                            "reference shape's size), 107 expressive points (lips, jaw, brows, eyelids), 321-d",
                "frames": "every frame of both sides with landmarks; others counted, not scored",
                "distance": "Fréchet distance between the two sides' per-frame features", "note": PROXY_NOTE},
    }


@functools.lru_cache(maxsize=None)
def _sha256_cached(path: str, mtime: float) -> str:
    return weights.sha256_of(path)


def efid_digests(folder: str) -> dict[str, str] | None:
    """The sha256 of E-FID's two user-supplied files, None unless both are in `folder`."""
    paths = [os.path.join(folder, n) for n in (weights.FACE_RECON_FILE, weights.STANDARD_POINTS_FILE)]
    if not all(os.path.isfile(p) for p in paths):
        return None
    return {os.path.basename(p): _sha256_cached(p, os.path.getmtime(p)) for p in paths}


def fsim_entry(fsim: dict[str, list], folder: str) -> dict[str, Any]:
    """F-SIM's entry: the cosine similarity and distance averaged over all scored frames of all videos (frames
    pooled; the Table 1 value is the mean cosine), the frame counts, each video's numbers and the skipped pairs."""
    from emo_jax.eval.face_identity import NETWORK, SAME_PERSON_DISTANCE

    scored, skipped = fsim["scored"], fsim["skipped"]
    faces = sum(r["faces_found"] for r in scored)
    entry: dict[str, Any] = {"value": None, "status": "computed", "network": NETWORK}
    if faces:
        entry["value"] = sum(r["mean_cosine"] * r["faces_found"] for r in scored if r["faces_found"]) / faces
        entry["mean_distance"] = sum(r["mean_distance"] * r["faces_found"] for r in scored if r["faces_found"]) / faces
    else:
        entry["status"] = (f"not computed: no face found in any generated frame of the {len(scored)} videos with a "
                           f"reference face ({len(skipped)} skipped)")
    same = sum(r["same_person"] for r in scored)
    return dict(entry, videos={"generated": len(scored)},
                frames={"generated": sum(r["frames"] for r in scored), "scored": faces,
                        "no_face": sum(r["no_face"] for r in scored), "same_person": same},
                same_person_distance=SAME_PERSON_DISTANCE, per_video=scored,
                skipped={"count": len(skipped), "videos": skipped},
                weights_sha256={name: weights.sha256_of(os.path.join(folder, name)) for name in weights.DLIB_SHA256})
