"""Shot-change detection and splitting a video into 3-12 s segments with a face throughout."""
from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np


# PySceneDetect's ContentDetector defaults (the paper cut its videos with PySceneDetect): the mean change of 8-bit
# hue, saturation and value between consecutive frames, averaged over the three, reaching 27 is a cut; a cut within
# 15 frames of the previous one is not a new one.
SHOT_THRESHOLD = 27.0
MIN_SHOT_FRAMES = 15


def shot_starts(rgb_frames: Sequence[np.ndarray], threshold: float = SHOT_THRESHOLD,
                min_frames: int = MIN_SHOT_FRAMES) -> list[int]:
    """First frames of new shots (hard cuts), by PySceneDetect's content measure (above).

    Hue and saturation keep a flash or a lighting change, which moves only the value, under the threshold; on real
    talking-head footage spliced with known cuts (benchmarks/shots.py) this finds every cut, including one between
    two moments of the same person and background, where the grey-histogram distance it replaces missed two of
    four and cut at a flash. Fades are not cuts.
    """
    starts, previous, last = [], None, None
    for t, frame in enumerate(rgb_frames):
        hsv = cv2.cvtColor(frame, cv2.COLOR_RGB2HSV).astype(np.int16)
        if previous is not None:
            change = np.abs(hsv - previous).mean()
            if change >= threshold and (last is None or t - last >= min_frames):
                starts.append(t)
                last = t
        previous = hsv
    return starts


def split_segments(
    has_face: np.ndarray, starts: Sequence[int], fps: float, min_seconds: float, max_seconds: float
) -> list[tuple[int, int]]:
    """[start, end) frame ranges: maximal runs with a face and no cut, cut into near-equal pieces <= max_seconds.

    Runs shorter than min_seconds are dropped. With max_seconds >= 2 * min_seconds every piece of a long
    run is at least max_seconds / 2 long, so no piece falls under the minimum.
    """
    assert max_seconds >= 2 * min_seconds, (min_seconds, max_seconds)
    min_len, max_len = math.ceil(min_seconds * fps), math.floor(max_seconds * fps)
    cut = np.zeros(len(has_face) + 1, bool)
    cut[list(starts)] = True
    segments, run_start = [], None
    for t in range(len(has_face) + 1):
        inside = t < len(has_face) and bool(has_face[t])
        if run_start is not None and (not inside or cut[t]):
            length = t - run_start
            if length >= min_len:
                pieces = math.ceil(length / max_len)
                edges = np.linspace(run_start, t, pieces + 1).round().astype(int)
                segments.extend((int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]))
            run_start = None
        if inside and run_start is None:
            run_start = t
    return segments
