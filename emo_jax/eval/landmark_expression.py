"""Landmark E-FID (proxy): a Fréchet distance of expression features made from Face Mesh landmarks, for when the
Deep3DFaceRecon weights (emo_jax/eval/face_recon.py) are not at hand. NOT comparable with EMO's E-FID or any
published number: the features are ours, not 3DMM expression coefficients.

Per video, the landmarks [T, 468, 3] (emo_jax/faces/mesh.py) are brought into the head frame by the same
similarity alignment that head pose uses (emo_jax/faces/head_pose.py: a generalised-Procrustes reference shape,
each frame's least-squares scale, rotation and translation to it over the points that do not move with
expression), divided by the reference's size (the root-mean-square distance of those stable points from their
centroid), and the points that carry expression are kept: lips (outer and inner), jaw (the face contour below the
cheeks), brows, and eyelids (the eye contours without their corners), 107 points, flattened x, y, z into 321
values per frame. Pose, position and size of the head thus drop out; identity (face shape) does not.
"""
from __future__ import annotations

import numpy as np

from emo_jax.faces.head_pose import STABLE_POINTS, head_pose, reference_shape
from emo_jax.eval.frechet import FeatureStats, frechet_distance_between

# Face Mesh indices (MediaPipe's face mesh topology). Lips: outer ring, then inner ring.
LIPS = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146,
        78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95)
JAW = (93, 132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361, 323)
BROWS = (70, 63, 105, 66, 107, 55, 65, 52, 53, 46, 336, 296, 334, 293, 300, 276, 283, 282, 295, 285)
EYELIDS = (246, 161, 160, 159, 158, 157, 173, 155, 154, 153, 145, 144, 163, 7,
           398, 384, 385, 386, 387, 388, 466, 249, 390, 373, 374, 380, 381, 382)
EXPRESSIVE_POINTS = LIPS + JAW + BROWS + EYELIDS
DIM = 3 * len(EXPRESSIVE_POINTS)
FEATURE = "face_mesh_expression_proxy"


def landmark_expression(points_T468x3: np.ndarray) -> np.ndarray:
    """Expression features [T, 321] (float64) of one video's Face Mesh landmarks [T, 468, 3]; NaN rows where a
    frame has no face (drop them before FeatureStats.add)."""
    points = np.asarray(points_T468x3, np.float64)
    if points.ndim != 3 or points.shape[1:] != (468, 3):
        raise ValueError(f"landmark_expression takes Face Mesh landmarks [T, 468, 3]; got shape {points.shape}")
    features = np.full((len(points), DIM), np.nan)
    valid = np.isfinite(points).all(axis=(1, 2))
    if not valid.any():
        return features
    pose = head_pose(points)
    reference = reference_shape(points)
    size = np.sqrt(np.mean(np.sum(reference[list(STABLE_POINTS)] ** 2, axis=1)))  # its origin is their centroid
    # points = s R ref + t, so the frame in the reference's coordinates is R^T (points - t) / s.
    head = np.einsum("tnj,tjk->tnk", points[valid] - pose.translation[valid, None], pose.rotations[valid])
    head /= pose.scale[valid, None, None] * size
    features[valid] = head[:, EXPRESSIVE_POINTS].reshape(int(valid.sum()), DIM)
    return features


def new_stats() -> FeatureStats:
    return FeatureStats(FEATURE, DIM)


def add_video(stats: FeatureStats, points_T468x3: np.ndarray) -> None:
    """Adds one video's features, frames without a face left out."""
    features = landmark_expression(points_T468x3)
    stats.add(features[np.isfinite(features).all(axis=1)])


def landmark_efid(generated: FeatureStats, reference: FeatureStats) -> float:
    """Landmark E-FID (proxy), not comparable with published E-FID."""
    return frechet_distance_between(generated, reference)
