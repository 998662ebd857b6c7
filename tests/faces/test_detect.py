"""Tests for emo_jax/faces/detect.py: every detector finds the synthetic face on the frame copy it is given;
tracking fills between detections."""
import numpy as np
import pytest

from emo_jax.faces.detect import DETECTORS, FallbackDetector, detection_frame, make_detector, track_faces
from tests.data_pipeline.synthetic_videos import draw_face


@pytest.mark.parametrize("name", DETECTORS)
def test_each_detector_finds_the_synthetic_face_where_it_is(name):
    image = np.full((360, 640, 3), 90, np.uint8)
    draw_face(image, 400, 170, 60)
    detector = make_detector(name)
    small, scale = detection_frame(image, detector)
    assert max(small.shape[:2]) == round(640 * scale) and small.shape[2] == 3
    boxes = detector(small) / scale
    assert len(boxes) == 1, boxes
    x0, y0, x1, y1 = boxes[0]
    assert x0 < 400 < x1 and y0 < 170 < y1 and 70 < x1 - x0 < 200
    assert len(detector(np.full_like(small, 90))) == 0


def test_the_fallback_asks_the_second_detector_only_where_the_first_finds_nothing():
    first, second = _ScriptedDetector(misses={1, 3}), _ScriptedDetector(misses={3})
    both = FallbackDetector("both", first, second)
    found = [both(frame) for frame in _frames(5)]
    assert first.calls == [0, 1, 2, 3, 4] and second.calls == [1, 3]
    assert [len(b) for b in found] == [1, 1, 1, 0, 1] and found[1][0, 0] == 1


def test_an_unknown_detector_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="blazeface_full"):
        make_detector("mtcnn")


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
