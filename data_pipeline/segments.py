"""Shot-change detection and splitting a video into 3-12 s segments with a face throughout."""
from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np


def shot_starts(gray_frames: Sequence[np.ndarray], threshold: float = 0.4, bins: int = 32) -> list[int]:
    """First frames of new shots (hard cuts): where the grey histogram moves by more than `threshold`.

    The distance is half the L1 distance of normalised histograms (0 = same, 1 = disjoint); a hard cut
    between scenes scores well above 0.4 while motion within a shot rarely passes 0.2. Fades are not cuts.
    """
    starts, previous = [], None
    for t, gray in enumerate(gray_frames):
        hist = cv2.calcHist([gray], [0], None, [bins], [0, 256]).ravel()
        hist /= max(hist.sum(), 1.0)
        if previous is not None and 0.5 * np.abs(hist - previous).sum() > threshold:
            starts.append(t)
        previous = hist
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
