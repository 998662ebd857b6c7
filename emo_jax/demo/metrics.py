"""What the demo measures on generated videos: identity, lip sync, and continuity across clip boundaries (the
measures themselves are emo_jax/eval/clips.py's; the demo's mouths have one colour, MOUTH), the head's roll and
its velocity, and where the face is."""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from emo_jax.demo.synthetic import EYES, MOUTH, NOSE, Identity
from emo_jax.eval import clips
from emo_jax.eval.clips import continuity, identity_accuracy, pearson
from emo_jax.faces.head_pose import rotation_speed, smooth_rotations

__all__ = ["FacePose", "continuity", "face_patches", "face_pixels", "face_pose", "face_pose_of", "head_roll",
           "identity_accuracy", "mouth_opening", "pearson", "roll_velocity", "share_inside"]


def mouth_opening(frames_THWC: np.ndarray) -> np.ndarray:
    """Per frame: how much of the lower half is the drawn mouth's colour (soft count, robust to blur)."""
    return clips.mouth_opening(frames_THWC, MOUTH)


@dataclasses.dataclass(frozen=True)
class FacePose:
    """Where the drawn face is in each frame: its centroid and half-extent along x and y (pixels; NaN: no face)."""

    cx: np.ndarray
    cy: np.ndarray
    half_w: np.ndarray
    half_h: np.ndarray


def face_pixels(frames_THWC: np.ndarray, ident: Identity) -> np.ndarray:
    """bool [T, H, W]: the pixels whose nearest colour among the identity's drawing (skin, hair, background, eyes,
    mouth, nose) is the skin or the nose. Nearest-colour labelling, not a fixed tolerance: a generated frame's
    colours drift (a tiny VAE's skin comes out tens of levels off) but stay closer to their own than to the rest."""
    palette = np.asarray([ident.skin, NOSE, ident.hair, ident.background, EYES, MOUTH], np.float32)
    dist = np.linalg.norm(frames_THWC.astype(np.float32)[..., None, :] - palette, axis=-1)
    return dist.argmin(axis=-1) < 2


def face_patches(frames_THWC: np.ndarray, ident: Identity) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per frame, (xs, ys) of the largest connected patch of face pixels (face_pixels; stray pixels where hair
    meets background blend to a skin-like colour); empty where there are none. face_pose and share_inside read
    these, so a video's pixels are labelled once for both."""
    out = []
    for mask in face_pixels(frames_THWC, ident):
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        if count < 2:
            out.append((np.zeros(0, np.int64), np.zeros(0, np.int64)))
            continue
        ys, xs = np.nonzero(labels == 1 + int(stats[1:, cv2.CC_STAT_AREA].argmax()))
        out.append((xs, ys))
    return out


def face_pose(frames_THWC: np.ndarray, ident: Identity) -> FacePose:
    """face_pose_of the frames' face patches (face_patches)."""
    return face_pose_of(face_patches(frames_THWC, ident))


def face_pose_of(patches: list[tuple[np.ndarray, np.ndarray]]) -> FacePose:
    """Per frame, the convex hull of its face patch: the drawn face is a filled ellipse and the hull closes the
    eyes and mouth into it, so the hull's moments give its centroid and 2 standard deviations along x and y (a
    filled ellipse's semi-axes). A frame without face pixels gives NaN."""
    out = np.full((4, len(patches)), np.nan)
    for k, (xs, ys) in enumerate(patches):
        if len(xs) < 3:
            continue
        # The hull of the pixels' squares (centres +- 0.5), so a face of a few pixels keeps its area.
        corners = np.concatenate([np.stack([xs + dx, ys + dy], 1) for dx in (0, 1) for dy in (0, 1)]).astype(np.float32)
        m = cv2.moments(cv2.convexHull(corners - 0.5))
        if m["m00"] > 0:
            out[:, k] = (m["m10"] / m["m00"], m["m01"] / m["m00"], 2 * np.sqrt(m["mu20"] / m["m00"]),
                         2 * np.sqrt(m["mu02"] / m["m00"]))
    return FacePose(*out)


def share_inside(patches: list[tuple[np.ndarray, np.ndarray]], box: tuple[float, float, float, float]) -> np.ndarray:
    """Per frame [T], the share of its face patch's pixels (face_patches) whose centres lie inside box (x0, y0, x1,
    y1, pixel edges); NaN without face pixels. Pixels, not the hull's 2-sd extent: a generated face is a blotchy
    patch, not an ellipse, and its moments overstate where its edge is."""
    out = np.full(len(patches), np.nan)
    for k, (xs, ys) in enumerate(patches):
        if len(xs):
            cx, cy = xs + 0.5, ys + 0.5
            out[k] = np.mean((cx > box[0]) & (cx < box[2]) & (cy > box[1]) & (cy < box[3]))
    return out


def head_roll(frames_THWC: np.ndarray, reference_HWC: np.ndarray, max_angle: float = 40.0,
              step: float = 1.0) -> np.ndarray:
    """Per frame, the in-plane head angle (degrees, counter-clockwise on screen positive) relative to the reference
    crop: the centre of the reference (where emo-generate frames the face), turned by every angle in +-max_angle,
    is matched anywhere in the frame (normalised cross-correlation over the three channels, which ignores a colour
    drift's offset and scale); the best angle is refined by a parabola through its neighbours' scores. A frame
    whose best angle is an end of the range (no turn within it matches better than a bigger one might) is NaN:
    unreadable, not a reading of +-max_angle."""
    side = reference_HWC.shape[0]
    half = int(round(0.65 * side)) // 2
    centre = side / 2
    angles = np.arange(-max_angle, max_angle + step / 2, step)
    blur = lambda x: cv2.GaussianBlur(x.astype(np.float32), (0, 0), 0.7)  # noqa: E731
    ref = blur(reference_HWC)
    templates = []
    for a in angles:
        turned = cv2.warpAffine(ref, cv2.getRotationMatrix2D((centre, centre), float(a), 1.0), (side, side),
                                flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        c = int(centre)
        templates.append(turned[c - half:c + half, c - half:c + half])
    out = np.zeros(len(frames_THWC))
    for k, frame in enumerate(frames_THWC):
        f = blur(frame)
        scores = np.array([cv2.matchTemplate(f, t, cv2.TM_CCOEFF_NORMED).max() for t in templates])
        j = int(scores.argmax())
        if not 0 < j < len(angles) - 1:
            out[k] = np.nan
            continue
        left, mid, right = scores[j - 1:j + 2]
        curve = left - 2 * mid + right
        shift = 0.5 * (left - right) / curve if curve < 0 else 0.0
        out[k] = angles[j] + shift * step
    return out


def roll_velocity(roll_T: np.ndarray, smooth_frames: float = 2.0) -> np.ndarray:
    """|d roll| per frame [T] in degrees, by emo-prepare's own head_pose speed label (HeadPoseSpeed): the roll as a
    rotation about the view axis, smoothed over `smooth_frames` (the label's sigma) and differenced, so a measured
    velocity is in the unit and on the scale of the speeds the model was trained and driven with. NaN where a frame
    or its neighbour is unreadable (NaN roll)."""
    rad = np.radians(np.asarray(roll_T, np.float64))
    cos, sin, zero, one = np.cos(rad), np.sin(rad), np.zeros_like(rad), np.ones_like(rad)
    rotations = np.stack([np.stack([cos, -sin, zero], -1), np.stack([sin, cos, zero], -1),
                          np.stack([zero, zero, one], -1)], -2)
    return rotation_speed(smooth_rotations(rotations, smooth_frames))
