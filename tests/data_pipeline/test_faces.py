"""Tests for data_pipeline/faces.py: the Haar cascade finds the synthetic face; tracking fills between detections."""
import cv2
import numpy as np

from data_pipeline.faces import HaarFaceDetector, track_faces
from synthetic_videos import draw_face


def test_haar_detects_the_synthetic_face_where_it_is():
    image = np.full((128, 128, 3), 90, np.uint8)
    draw_face(image, 70, 60, 24)
    boxes = HaarFaceDetector()(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
    assert len(boxes) == 1
    x0, y0, x1, y1 = boxes[0]
    assert x0 < 70 < x1 and y0 < 60 < y1 and 30 < x1 - x0 < 80
    assert len(HaarFaceDetector()(np.full((128, 128), 90, np.uint8))) == 0


class _ScriptedDetector:
    """Finds a box moving right by 1 px per frame, except on the frames listed as misses."""

    name = "scripted"

    def __init__(self, misses):
        self.misses, self.calls = set(misses), []

    def __call__(self, frame):
        t = int(frame[0, 0])
        self.calls.append(t)
        return np.zeros((0, 4), np.float32) if t in self.misses else np.array([[t, 0, t + 10, 10]], np.float32)


def _frames(n):
    return [np.full((4, 4), t, np.uint8) for t in range(n)]


def test_interpolates_between_keyframes_and_bridges_one_miss():
    detector = _ScriptedDetector(misses={10})
    boxes = track_faces(_frames(21), [], detector, every=5, max_gap=10)
    assert sorted(detector.calls) == [0, 5, 10, 15, 20]
    np.testing.assert_allclose(boxes[:, 0], np.arange(21))  # exact, as the box moves linearly


def test_long_loss_and_shot_changes_are_not_bridged():
    boxes = track_faces(_frames(31), [], _ScriptedDetector(misses={10, 15}), every=5, max_gap=10)
    assert np.isfinite(boxes[:8, 0]).all() and np.isnan(boxes[8:18, 0]).all() and np.isfinite(boxes[18:, 0]).all()
    detector = _ScriptedDetector(misses=set())
    boxes = track_faces(_frames(20), [12], detector, every=5, max_gap=10)
    assert {11, 12} <= set(detector.calls)  # both sides of the cut are detected, not interpolated across
    np.testing.assert_allclose(boxes[:, 0], np.arange(20))
