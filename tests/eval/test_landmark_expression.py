"""Landmark E-FID (proxy): features free of head pose, position and size, moved by expression, and the distance."""
import numpy as np
import pytest

from emo_jax.faces.head_pose import STABLE_POINTS
from emo_jax.eval.landmark_expression import (DIM, EXPRESSIVE_POINTS, LIPS, add_video, landmark_efid,
                                              landmark_expression, new_stats)


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    a, b, c = np.radians([yaw, pitch, roll])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    ry = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ ry @ rx


def talking_face(frames: int, seed: int = 0) -> np.ndarray:
    """[T, 468, 3] landmarks of a made-up face (a fixed random shape, frontal, in pixels) whose expressive points
    move a little from frame to frame while the rest stays put."""
    rng = np.random.default_rng(seed)
    shape = rng.normal(size=(468, 3)) * [60.0, 75.0, 30.0] + [320.0, 240.0, 0.0]
    points = np.repeat(shape[None], frames, axis=0)
    points[:, list(EXPRESSIVE_POINTS)] += rng.normal(size=(frames, len(EXPRESSIVE_POINTS), 3)) * 2.0
    return points


def test_features_do_not_depend_on_head_pose_position_or_size():
    points = talking_face(8)
    features = landmark_expression(points)
    assert features.shape == (8, DIM) and np.isfinite(features).all()
    rng = np.random.default_rng(1)
    moved = np.empty_like(points)
    for t in range(len(points)):  # a different similarity per frame: the head turns, moves and nears the camera
        r = rotation(*rng.uniform(-25, 25, size=3))
        moved[t] = rng.uniform(0.5, 2.0) * points[t] @ r.T + rng.uniform(-200, 200, size=3)
    np.testing.assert_allclose(landmark_expression(moved), features, atol=1e-5, rtol=0)
    assert np.abs(features).max() > 0.1  # the features are not trivially zero


def test_the_same_similarity_on_every_frame_changes_nothing_either():
    points = talking_face(5, seed=2)
    moved = 3.0 * points @ rotation(10, -20, 35).T + [5.0, -80.0, 12.0]
    np.testing.assert_allclose(landmark_expression(moved), landmark_expression(points), atol=1e-5, rtol=0)


def test_moving_the_mouth_changes_only_the_lip_features():
    points = talking_face(6)
    before = landmark_expression(points)
    opened = points.copy()
    opened[3, [17, 14, 84, 314]] += [0.0, 12.0, 0.0]  # frame 3: the lower lip drops
    after = landmark_expression(opened)
    changed = np.abs(after - before).reshape(6, -1, 3).max(axis=2) > 1e-6  # [T, points]
    lips = np.isin(EXPRESSIVE_POINTS, [17, 14, 84, 314])
    assert changed[3, lips].all() and not changed[3, ~lips].any()
    assert not changed[[0, 1, 2, 4, 5]].any()
    assert set(LIPS).isdisjoint(STABLE_POINTS) and set(EXPRESSIVE_POINTS).isdisjoint(STABLE_POINTS)


def test_frames_without_a_face_give_nan_rows_and_are_left_out_of_the_statistics():
    points = talking_face(6)
    points[2] = np.nan
    features = landmark_expression(points)
    assert np.isnan(features[2]).all() and np.isfinite(np.delete(features, 2, axis=0)).all()
    stats = new_stats()
    add_video(stats, points)
    assert stats.count == 5
    assert np.isnan(landmark_expression(np.full((3, 468, 3), np.nan))).all()
    with pytest.raises(ValueError, match=r"\[T, 468, 3\]"):
        landmark_expression(np.zeros((3, 478, 3)))


def test_landmark_efid_is_zero_for_the_same_videos_and_grows_with_a_changed_expression():
    videos = [talking_face(40, seed=s) for s in range(3)]
    real, same, wider = new_stats(), new_stats(), new_stats()
    for points in videos:
        add_video(real, points)
        add_video(same, points)
        smiling = points.copy()
        smiling[:, [61, 291]] += [[[-6.0, -3.0, 0.0], [6.0, -3.0, 0.0]]]  # mouth corners out and up
        add_video(wider, smiling)
    assert abs(landmark_efid(same, real)) < 1e-8
    assert landmark_efid(wider, real) > 1e-3
