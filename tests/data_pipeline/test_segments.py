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


def test_hard_cut_is_found_and_motion_is_not():
    dark, bright = np.full((8, 8), 40, np.uint8), np.full((8, 8), 200, np.uint8)
    moving = [np.roll(np.tile(np.arange(8, dtype=np.uint8) * 30, (8, 1)), k, axis=1) for k in range(3)]
    assert shot_starts([dark, dark, bright, bright] + moving) == [2, 4]
