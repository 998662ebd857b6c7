"""Head pose (6-DoF) from Face Mesh landmarks, and head-rotation speed in degrees per frame: EMO's speed label.

The head frame. MediaPipe's canonical face model (its metric 3D mean face) is not in the wheel we fetch, so the
head frame is defined from the landmarks themselves. Per video, a reference shape is made by generalised
Procrustes: start from the first frame with a face, align every frame to the reference with a similarity
transform (Umeyama: scale, rotation, translation, least squares over the stable points), take the per-coordinate
median of the aligned frames, make it frontal, repeat twice. Frontal is a geometric rule: the x axis is the mean
direction from the image-left to the image-right point of ten symmetric pairs (outer and inner eye corners and
the upper face contour, forehead to cheek), y runs from forehead top (10) to chin (152) made orthogonal to x, and
z = x cross y. Each frame's pose is then its similarity fit to that reference.

Stable points. Only points that stay put on the skull while someone talks take part in the fits and the frame:
the eye corners (not the lids, which blink), the nose ridge and tip, the forehead midline and the face contour
from the forehead down to the cheeks (STABLE_POINTS). Lips, jaw, chin contour, cheeks and brows move with speech
and expression and are left out; the chin (152) only orients the reference's y axis, where a mouth opening
can tilt it by a degree or two, an offset of the absolute pitch that is the same in every frame.

Why the missing canonical model does not matter for the label: rotation speed is the angle of R_t R_{t-1}^T,
and if every R_t is replaced by R_t C for one fixed C (another choice of head frame), R_t C (R_{t-1} C)^T =
R_t R_{t-1}^T. Only the absolute angles (yaw, pitch, roll) depend on the frame.

Conventions. Camera frame: x right, y down (image), z away from the camera (Face Mesh's depth), right-handed.
R_t maps head coordinates to camera coordinates (point = s R X + t). R = Rz(roll) Ry(-yaw) Rx(-pitch) with
angles in degrees: yaw > 0 when the nose turns toward the image's right (the person looks to their left),
pitch > 0 when the nose turns up, roll > 0 when the face turns clockwise on screen (the eye line falls to the
image's right: the head tilts toward the person's left shoulder). An image rotated in its plane changes roll
only. Translation: pixels (x, y) of the reference's origin (the stable points' centroid), z relative depth in
the same scale; scale: the fit's scale (pixels per reference unit: the reference has the first frame's size).
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from emo_jax.faces.mesh import NUM_LANDMARKS, FaceMesh

# (image-left, image-right) landmarks of a frontal face: eye corners, then the face contour from forehead to cheek.
SYMMETRIC_PAIRS = ((33, 263), (133, 362), (109, 338), (67, 297), (103, 332), (54, 284), (21, 251), (162, 389),
                   (127, 356), (234, 454))
FOREHEAD, CHIN = 10, 152
NOSE_AND_MIDLINE = (10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1)
STABLE_POINTS = tuple(sorted({i for pair in SYMMETRIC_PAIRS for i in pair} | set(NOSE_AND_MIDLINE)))
_REFERENCE_ROUNDS = 2


class HeadPose(NamedTuple):
    rotations: np.ndarray  # [T, 3, 3] head -> camera, NaN where no face
    angles: np.ndarray  # [T, 3] yaw, pitch, roll in degrees
    translation: np.ndarray  # [T, 3] pixels (x, y); z relative
    scale: np.ndarray  # [T]


def _similarity_fit(ref_N3: np.ndarray, points_TN3: np.ndarray, weights_N: np.ndarray):
    """Least-squares s, R, t with points ~ s R ref + t for each frame (Umeyama 1991, weighted); batched over T."""
    w = weights_N / weights_N.sum()
    ref_mean = w @ ref_N3
    mean = np.einsum("n,tnk->tk", w, points_TN3)
    ref_c, centred = ref_N3 - ref_mean, points_TN3 - mean[:, None]
    cov = np.einsum("n,tni,nj->tij", w, centred, ref_c)
    u, d, vt = np.linalg.svd(cov)
    sign = np.sign(np.linalg.det(u) * np.linalg.det(vt))
    d[:, 2] *= sign
    u[:, :, 2] *= sign[:, None]
    rotations = u @ vt
    scale = d.sum(axis=1) / (w @ (ref_c**2).sum(axis=1))
    translation = mean - scale[:, None] * np.einsum("tij,j->ti", rotations, ref_mean)
    return scale, rotations, translation


def frontal_axes(shape_N3: np.ndarray) -> np.ndarray:
    """Rows x, y, z of the head frame of one landmark shape (see the module docstring)."""
    x = sum(d / np.linalg.norm(d) for d in (shape_N3[r] - shape_N3[l] for l, r in SYMMETRIC_PAIRS))
    x = x / np.linalg.norm(x)
    y = shape_N3[CHIN] - shape_N3[FOREHEAD]
    y = y - (y @ x) * x
    y = y / np.linalg.norm(y)
    return np.stack([x, y, np.cross(x, y)])


def _frontal(shape_N3: np.ndarray) -> np.ndarray:
    """The shape in its own head frame, origin at the stable points' centroid."""
    return (shape_N3 - shape_N3[list(STABLE_POINTS)].mean(axis=0)) @ frontal_axes(shape_N3).T


def reference_shape(points_T468x3: np.ndarray) -> np.ndarray:
    """The frontal reference [468, 3] of one video's landmarks (generalised Procrustes; needs a finite frame)."""
    points = points_T468x3[np.isfinite(points_T468x3).all(axis=(1, 2))].astype(np.float64)
    weights = np.zeros(NUM_LANDMARKS)
    weights[list(STABLE_POINTS)] = 1.0
    ref = _frontal(points[0])
    for _ in range(_REFERENCE_ROUNDS):
        scale, rotations, translation = _similarity_fit(ref, points, weights)
        aligned = np.einsum("tnj,tjk->tnk", points - translation[:, None], rotations) / scale[:, None, None]
        ref = _frontal(np.median(aligned, axis=0))
    return ref


def euler_angles(rotations: np.ndarray) -> np.ndarray:
    """(yaw, pitch, roll) in degrees [T, 3] of rotations [T, 3, 3], the module docstring's convention."""
    yaw = np.arcsin(np.clip(rotations[:, 2, 0], -1.0, 1.0))  # R[2, 0] = -sin(-yaw)
    pitch = -np.arctan2(rotations[:, 2, 1], rotations[:, 2, 2])
    roll = np.arctan2(rotations[:, 1, 0], rotations[:, 0, 0])
    return np.degrees(np.stack([yaw, pitch, roll], axis=1))


def head_pose(points_T468x3: np.ndarray) -> HeadPose:
    """Per-frame head pose from Face Mesh landmarks [T, 468, 3] (NaN frames give NaN poses)."""
    t = len(points_T468x3)
    valid = np.isfinite(points_T468x3).all(axis=(1, 2))
    pose = HeadPose(np.full((t, 3, 3), np.nan), np.full((t, 3), np.nan), np.full((t, 3), np.nan), np.full(t, np.nan))
    if valid.any():
        weights = np.zeros(NUM_LANDMARKS)
        weights[list(STABLE_POINTS)] = 1.0
        scale, rotations, translation = _similarity_fit(
            reference_shape(points_T468x3), points_T468x3[valid].astype(np.float64), weights)
        pose.rotations[valid], pose.translation[valid], pose.scale[valid] = rotations, translation, scale
        pose.angles[valid] = euler_angles(rotations)
    return pose


def _log(rotations: np.ndarray) -> np.ndarray:
    """Rotation vectors [..., 3] (axis times angle, radians) of rotations [..., 3, 3] turning less than pi."""
    axis = np.stack([rotations[..., 2, 1] - rotations[..., 1, 2], rotations[..., 0, 2] - rotations[..., 2, 0],
                     rotations[..., 1, 0] - rotations[..., 0, 1]], axis=-1)
    norm = np.linalg.norm(axis, axis=-1, keepdims=True)  # 2 sin(angle); atan2 with 2 cos(angle) stays exact
    angle = np.arctan2(norm, np.trace(rotations, axis1=-2, axis2=-1)[..., None] - 1.0)
    return axis * np.where(norm > 1e-12, angle / np.maximum(norm, 1e-12), 0.5)


def _exp(vectors: np.ndarray) -> np.ndarray:
    """Rotations [..., 3, 3] of rotation vectors [..., 3] (Rodrigues)."""
    angle = np.linalg.norm(vectors, axis=-1)[..., None, None]
    x, y, z = np.moveaxis(vectors, -1, 0)
    zero = np.zeros_like(x)
    k = np.stack([np.stack([zero, -z, y], -1), np.stack([z, zero, -x], -1), np.stack([-y, x, zero], -1)], -2)
    safe = np.maximum(angle, 1e-8)
    sin_term = np.where(angle > 1e-8, np.sin(angle) / safe, 1.0)
    cos_term = np.where(angle > 1e-8, (1 - np.cos(angle)) / safe**2, 0.5)
    return np.eye(3) + sin_term * k + cos_term * (k @ k)


def smooth_rotations(rotations: np.ndarray, frames: float) -> np.ndarray:
    """Rotations smoothed by a local linear fit: Gaussian weights (sigma `frames`, cut at 3 sigma) on rotation
    vectors relative to each frame, the fit's value at that frame applied to it.

    At frame t the neighbours' rotations relative to R_t, log(R_{t+k} R_t^T), are fitted by a + b k (weighted
    least squares) and the result is exp(a) R_t. A constant angular velocity fits exactly, so it passes unchanged
    through every frame, a run's ends included, where a weighted mean would lag; in a run's interior the weights
    are symmetric and a is their weighted mean. Fits stay within runs of finite frames: NaN frames stay NaN and
    do not spread, and nothing is fitted across them (a lost face may come back after a cut).
    """
    out = np.full(rotations.shape, np.nan)
    valid = np.isfinite(rotations).all(axis=(1, 2))
    edges = np.flatnonzero(np.diff(np.concatenate([[0], valid.astype(np.int8), [0]])))
    radius = int(np.ceil(3 * frames)) if frames > 0 else 0
    for start, end in zip(edges[0::2], edges[1::2]):
        run, n = rotations[start:end], end - start
        moments = np.zeros((n, 3))  # sums of w, w k, w k^2
        sums = np.zeros((n, 2, 3))  # sums of w v, w k v
        for k in range(-radius, radius + 1):
            j = np.arange(n) + k
            inside = (j >= 0) & (j < n)
            w = np.exp(-0.5 * (k / frames) ** 2) * inside if radius else inside.astype(np.float64)
            v = _log(run[np.clip(j, 0, n - 1)] @ np.swapaxes(run, 1, 2))
            moments += w[:, None] * np.array([1.0, k, k * k])
            sums += w[:, None, None] * np.stack([v, k * v], axis=1)
        s0, s1, s2 = moments.T[:, :, None]
        det = s0 * s2 - s1**2
        single = det <= 1e-12 * s0**2  # a run of one frame: no slope to fit, and v = 0 there
        intercept = np.where(single, 0.0, (s2 * sums[:, 0] - s1 * sums[:, 1]) / np.where(single, 1.0, det))
        out[start:end] = _exp(intercept) @ run
    return out


def rotation_speed(rotations: np.ndarray) -> np.ndarray:
    """Angle of R_t R_{t-1}^T in degrees per frame [T]; frame 0 copies frame 1; NaN where a neighbour is NaN."""
    speed = np.full(len(rotations), np.nan)
    if len(rotations) > 1:
        speed[1:] = np.degrees(np.linalg.norm(_log(rotations[1:] @ np.swapaxes(rotations[:-1], 1, 2)), axis=1))
        speed[0] = speed[1]
    return speed


def fill_gaps(speed: np.ndarray) -> np.ndarray:
    """NaN frames linearly interpolated from the nearest finite ones (held flat past the ends); 0 if none."""
    finite = np.isfinite(speed)
    if not finite.any():
        return np.zeros(len(speed), np.float32)
    index = np.arange(len(speed))
    return np.interp(index, index[finite], speed[finite]).astype(np.float32)


class HeadPoseSpeed:
    """Head-rotation speed from tracked Face Mesh landmarks, in degrees per frame (EMO's speed label).

    The unit is per frame, so the frames must come at the rate the model trains at (emo-prepare resamples
    before labelling); `fps` is accepted for the SpeedEstimator interface and not used. Rotations are
    smoothed over `smooth_frames` (Gaussian sigma, frames) before differencing; frames without a face get the
    speed interpolated from their neighbours (0 for a video with no face at all).
    """

    name = "head_pose"
    unit = "degrees_per_frame"

    def __init__(self, folder: str | None = None, smooth_frames: float = 2.0):
        self._mesh = FaceMesh(folder)
        self.smooth_frames = smooth_frames

    def label(self, rgb_frames: Sequence[np.ndarray], boxes_T4: np.ndarray) -> dict[str, np.ndarray]:
        """points [T, 468, 3] (NaN: no face), presence [T], pose [T, 6] (yaw, pitch, roll deg, tx, ty, tz),
        speed [T] (gaps filled, as __call__ gives)."""
        points, presence = self._mesh.track(rgb_frames, boxes_T4)
        pose = head_pose(points)
        speed = rotation_speed(smooth_rotations(pose.rotations, self.smooth_frames))
        return {"points": points, "presence": presence,
                "pose": np.concatenate([pose.angles, pose.translation], axis=1).astype(np.float32),
                "speed": fill_gaps(speed)}

    def __call__(self, rgb_frames: Sequence[np.ndarray], boxes_T4: np.ndarray, fps: float) -> np.ndarray:
        return self.label(rgb_frames, boxes_T4)["speed"]
