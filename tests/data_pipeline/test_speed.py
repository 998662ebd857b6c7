"""Tests for data_pipeline/speed.py: ~0 for a still head, large for a moving one, for both image-motion proxies
(the head_pose estimator, which measures rotation, is tested in test_head_pose.py)."""
import numpy as np
import pytest

from data_pipeline.speed import ESTIMATORS, make_speed_estimator
from synthetic_videos import draw_face


def _clip(shift_per_frame: float, n: int = 6):
    grays, boxes = [], []
    for t in range(n):
        image = np.full((96, 128, 3), 90, np.uint8)
        cx = 50 + shift_per_frame * t
        draw_face(image, cx, 48, 20)
        grays.append(image.mean(-1).astype(np.uint8))
        boxes.append([cx - 20, 22, cx + 20, 74])
    return grays, np.array(boxes, np.float32)


@pytest.mark.parametrize("name", sorted(set(ESTIMATORS) - {"head_pose"}))
def test_still_is_zero_and_motion_is_faster(name):
    estimator = make_speed_estimator(name)
    still = estimator(*_clip(0.0), fps=30)
    slow = estimator(*_clip(1.0), fps=30)
    fast = estimator(*_clip(3.0), fps=30)
    assert still.shape == (6,) and np.abs(still).max() < 0.05
    assert 0.3 < slow.mean() < fast.mean()  # 1 px per frame on a 40 px face at 30 fps is 0.75 widths/s


def test_unknown_estimator_is_refused():
    with pytest.raises(ValueError, match="flow"):
        make_speed_estimator("pose")
