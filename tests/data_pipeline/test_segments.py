"""Tests for data_pipeline/segments.py."""
import numpy as np

from data_pipeline.segments import shot_starts, split_segments


def test_runs_split_at_cuts_and_face_loss_and_short_runs_dropped():
    has_face = np.ones(100, bool)
    has_face[40:45] = False  # face lost
    segments = split_segments(has_face, starts=[70], fps=10, min_seconds=2, max_seconds=4)
    assert segments == [(0, 40), (45, 70), (70, 100)]
    # [45, 60) is 1.5 s, under the 2 s minimum.
    assert split_segments(has_face, starts=[20, 60], fps=10, min_seconds=2, max_seconds=4) == [
        (0, 20), (20, 40), (60, 100)]


def test_long_runs_become_near_equal_pieces_within_limits():
    segments = split_segments(np.ones(250, bool), starts=[], fps=10, min_seconds=3, max_seconds=12)
    assert segments == [(0, 83), (83, 167), (167, 250)]


def _scene(colour, n: int, flash: int = -1) -> list[np.ndarray]:
    """n frames of a coloured gradient drifting 1 px per frame; frame `flash` 40% brighter."""
    base = np.clip(np.asarray(colour, np.float32) * np.linspace(0.5, 1.0, 48)[None, :, None], 0, 255)
    frames = [np.roll(np.repeat(base, 32, axis=0), t, axis=1).astype(np.uint8) for t in range(n)]
    if flash >= 0:
        frames[flash] = np.clip(frames[flash] * 1.4, 0, 255).astype(np.uint8)
    return frames


def test_hard_cuts_are_found_and_motion_and_a_flash_are_not():
    warm, cool, green = (170, 100, 50), (60, 110, 180), (70, 170, 90)
    frames = _scene(warm, 20, flash=8) + _scene(cool, 20) + _scene(green, 20)
    assert shot_starts(frames) == [20, 40]
    # a second cut within 15 frames of the first is the same transition (PySceneDetect's minimum scene length)
    assert shot_starts(_scene(warm, 20) + _scene(cool, 5) + _scene(green, 20)) == [20]
    # the same content, only brighter or darker throughout: a lighting change, no cut
    assert shot_starts(_scene(warm, 10) + _scene((119, 70, 35), 10)) == []
