import cv2
import numpy as np
import pytest

from emo_jax.faces.head_pose import (STABLE_POINTS, HeadPoseSpeed, euler_angles, fill_gaps, frontal_axes, head_pose,
                                     rotation_speed, smooth_rotations)
from tests.faces.test_mesh import BACKGROUND, SIDE, face_box, face_image


def rotation(axis, degrees: float) -> np.ndarray:
    """Rodrigues: the rotation by `degrees` about `axis` (right-handed)."""
    k = np.asarray(axis, np.float64) / np.linalg.norm(axis)
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    a = np.radians(degrees)
    return np.eye(3) + np.sin(a) * K + (1 - np.cos(a)) * K @ K


def shape(seed: int = 0) -> np.ndarray:
    """468 points about the size of a face 100 px wide, in no particular arrangement."""
    return np.random.default_rng(seed).normal(0.0, 30.0, (468, 3))


def moving(rotations, scales=None, shifts=None, seed: int = 0) -> np.ndarray:
    """Frames s R X + t of one shape X, float32 as Face Mesh gives them."""
    n = len(rotations)
    scales = np.ones(n) if scales is None else scales
    shifts = np.zeros((n, 3)) if shifts is None else shifts
    x = shape(seed)
    return np.stack([s * x @ r.T + t for r, s, t in zip(rotations, scales, shifts)])


def relative_angles(rotations: np.ndarray) -> np.ndarray:
    """Degrees between each rotation and the first."""
    rel = rotations @ rotations[0].T
    return np.degrees(np.arccos(np.clip((np.trace(rel, axis1=1, axis2=2) - 1) / 2, -1, 1)))


def test_known_similarity_transforms_are_recovered():
    rng = np.random.default_rng(1)
    truth = np.stack([rotation(rng.normal(size=3), rng.uniform(0, 40)) for _ in range(12)])
    scales, shifts = rng.uniform(0.5, 2.0, 12), rng.uniform(-200, 200, (12, 3))
    pose = head_pose(moving(truth, scales, shifts))
    for t in range(12):
        error = (pose.rotations[t] @ pose.rotations[0].T) @ (truth[t] @ truth[0].T).T
        assert np.degrees(np.arccos(np.clip((np.trace(error) - 1) / 2, -1, 1))) < 1e-4
    np.testing.assert_allclose(pose.scale / pose.scale[0], scales / scales[0], rtol=1e-6)
    centroid = shape()[list(STABLE_POINTS)].mean(axis=0)
    expected = scales[:, None] * np.einsum("tij,j->ti", truth, centroid) + shifts
    np.testing.assert_allclose(pose.translation, expected, atol=1e-6 * 200)


def test_euler_angles_follow_the_documented_convention():
    yaw, pitch, roll = 15.0, -7.0, 25.0
    # R = Rz(roll) Ry(-yaw) Rx(-pitch); camera x right, y down, z away from the camera.
    r = rotation([0, 0, 1], roll) @ rotation([0, 1, 0], -yaw) @ rotation([1, 0, 0], -pitch)
    np.testing.assert_allclose(euler_angles(r[None])[0], [yaw, pitch, roll], atol=1e-9)
    nose = np.array([0.0, 0.0, -1.0])  # in front of the face: toward the camera
    assert (rotation([0, 1, 0], -yaw) @ nose)[0] > 0  # yaw > 0 turns the nose to the image's right
    assert (rotation([1, 0, 0], -pitch) @ nose)[1] > 0  # pitch < 0 turns it down (y is down)
    assert (rotation([0, 0, 1], roll) @ [1.0, 0, 0])[1] > 0  # roll > 0: the eye line falls to the right


def test_frontal_reference_has_identity_pose():
    x = shape(3)
    frontal = (x - x[list(STABLE_POINTS)].mean(0)) @ frontal_axes(x).T
    truth = rotation([0, 0, 1], 12.0) @ rotation([0, 1, 0], -20.0)  # roll 12, yaw 20
    pose = head_pose(np.stack([frontal, frontal @ truth.T]))
    np.testing.assert_allclose(pose.angles, [[0, 0, 0], [20, 0, 12]], atol=1e-6)


def test_yaw_pitch_roll_up_to_60_degrees_are_recovered_within_half_a_degree_with_landmark_noise():
    x = shape(4)
    frontal = (x - x[list(STABLE_POINTS)].mean(0)) @ frontal_axes(x).T
    truth = np.array([[0, 0, 0], [60, 0, 0], [-60, 0, 0], [0, 60, 0], [0, -60, 0], [0, 0, 60], [0, 0, -60],
                      [45, -30, 20], [-35, 40, -50], [60, 30, -30]], np.float64)
    frames = np.stack([frontal @ (rotation([0, 0, 1], r) @ rotation([0, 1, 0], -y) @ rotation([1, 0, 0], -p)).T
                       for y, p, r in truth])
    np.testing.assert_allclose(head_pose(frames).angles, truth, atol=1e-6)
    # With noise the geometric frontal frame itself moves a little (a constant offset of every frame's angles, up
    # to ~0.7 degrees here); the turns between frames, which the speed is made of, stay within half a degree.
    noisy = frames + np.random.default_rng(5).normal(0.0, 0.3, frames.shape)  # ~0.3 px on a ~100 px face
    found = head_pose(noisy).rotations
    true = np.stack([rotation([0, 0, 1], r) @ rotation([0, 1, 0], -y) @ rotation([1, 0, 0], -p) for y, p, r in truth])
    error = np.einsum("tij,tkj->tik", found @ found[0].T, true)  # (R_t R_0^T) (T_t)^T, T_0 = identity
    assert np.degrees(np.arccos(np.clip((np.trace(error, axis1=1, axis2=2) - 1) / 2, -1, 1))).max() < 0.5


@pytest.mark.parametrize("axis", [[0, 1, 0], [1, 0, 0], [0, 0, 1], [1, -2, 0.5]])
def test_constant_turn_reads_its_rate_after_smoothing(axis):
    truth = np.stack([rotation(axis, 2.0 * t) @ rotation([1, 1, 0], 10) for t in range(40)])
    rotations = head_pose(moving(truth)).rotations
    np.testing.assert_allclose(rotation_speed(rotations), 2.0, atol=1e-4)
    smoothed = rotation_speed(smooth_rotations(rotations, 2.0))
    np.testing.assert_allclose(smoothed, 2.0, atol=1e-4)  # the ends too: a local linear fit does not lag


def test_still_head_reads_zero_and_noise_is_damped():
    still = moving(np.stack([rotation([0, 1, 0], 5.0)] * 30))
    assert np.abs(rotation_speed(smooth_rotations(head_pose(still).rotations, 2.0))).max() < 1e-6
    noisy = still + np.random.default_rng(4).normal(0.0, 0.5, still.shape)  # half-pixel landmark noise
    raw = rotation_speed(head_pose(noisy).rotations)
    smooth = rotation_speed(smooth_rotations(head_pose(noisy).rotations, 2.0))
    assert 0.02 < np.median(raw) < 0.5
    assert np.median(smooth) < np.median(raw) / 4
    assert smooth.max() < np.median(raw) / 2  # the first and last frames too: the local linear fit smooths there
    turning = moving(np.stack([rotation([0, 1, 0], 2.0 * t) for t in range(30)]))
    turning += np.random.default_rng(5).normal(0.0, 0.5, turning.shape)
    np.testing.assert_allclose(rotation_speed(smooth_rotations(head_pose(turning).rotations, 2.0)), 2.0,
                               atol=0.15)


def test_nan_frames_stay_local():
    # A cut in the gap: after it the head is turned 40 degrees more, which must not blur into the first run.
    points = moving(np.stack([rotation([0, 1, 1], 1.5 * t + 40.0 * (t > 22)) for t in range(50)]))
    points[[0, 22, 23]] = np.nan
    pose = head_pose(points)
    lost = ~np.isfinite(pose.rotations).all(axis=(1, 2))
    assert lost.nonzero()[0].tolist() == [0, 22, 23]
    smoothed = smooth_rotations(pose.rotations, 2.0)
    assert (~np.isfinite(smoothed).all(axis=(1, 2))).nonzero()[0].tolist() == [0, 22, 23]
    speed = rotation_speed(smoothed)
    assert np.isnan(speed).nonzero()[0].tolist() == [0, 1, 22, 23, 24]
    # Within each run the smoothing leaves a constant turn alone, up to the run's ends.
    np.testing.assert_allclose(speed[np.isfinite(speed)], 1.5, atol=1e-4)
    filled = fill_gaps(speed)
    assert np.isfinite(filled).all() and filled.dtype == np.float32
    np.testing.assert_allclose(filled[[0, 1]], speed[2], rtol=1e-6)
    assert fill_gaps(np.full(5, np.nan)).tolist() == [0.0] * 5


def test_relative_rotation_does_not_depend_on_the_head_frame():
    truth = np.stack([rotation([1, 2, 3], 3.0 * t) for t in range(10)])
    pose = head_pose(moving(truth))
    other = pose.rotations @ rotation([0, 1, 0], 33.0)  # the same motion in another head frame
    np.testing.assert_allclose(rotation_speed(other), rotation_speed(pose.rotations), atol=1e-9)
    np.testing.assert_allclose(relative_angles(pose.rotations), relative_angles(truth), atol=1e-4)


@pytest.mark.parametrize("rate", [0.0, 2.0])
def test_head_pose_speed_reads_a_drawn_face_turning_in_the_image_plane(rate):
    """End to end with the real Face Mesh: the drawn face turned counter-clockwise by `rate` degrees each frame."""
    frames = [cv2.warpAffine(face_image(), cv2.getRotationMatrix2D((SIDE / 2, SIDE / 2), rate * t, 1.0), (SIDE, SIDE),
                             borderValue=(BACKGROUND,) * 3) for t in range(24)]
    boxes = np.stack([face_box()] * 24)
    boxes[10] = np.nan  # no face found there: its speed is filled from its neighbours
    estimator = HeadPoseSpeed()
    assert (estimator.name, estimator.unit) == ("head_pose", "degrees_per_frame")
    label = estimator.label(frames, boxes)
    assert {k: v.shape for k, v in label.items()} == {"points": (24, 468, 3), "presence": (24,), "pose": (24, 6),
                                                       "speed": (24,)}
    assert np.isnan(label["pose"][10]).all() and np.isfinite(np.delete(label["pose"], 10, axis=0)).all()
    assert label["speed"].dtype == np.float32 and np.isfinite(label["speed"]).all()
    np.testing.assert_allclose(label["speed"], rate, atol=0.2)
    found = np.arange(24) != 10
    slope = np.polyfit(np.arange(24)[found], label["pose"][found, 2], 1)[0]
    assert slope == pytest.approx(-rate, abs=0.15)  # roll is clockwise on screen: it falls
    np.testing.assert_array_equal(estimator(frames, boxes, 30.0), label["speed"])
