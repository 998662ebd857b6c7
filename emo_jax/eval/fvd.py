"""FVD (Unterthiner et al. 2018): the Fréchet distance between I3D logits of 16-frame clips of two sets of videos.

Clips are windows of FRAMES (16) consecutive frames, as the original FVD embeds 16-frame videos: from each video
the windows starting at frames 0, stride, 2 * stride, ... (stride 16 by default: non-overlapping, a tail shorter
than 16 frames left out). A video shorter than 16 frames gives no clip and is a counted skip. Each clip is resized
and scaled by emo_jax/eval/i3d.py's preprocess_clips (the original FVD's preprocess) and embedded by its I3D; the
features are gathered in FeatureStats batch by batch, sharded over the local devices (emo_jax/eval/extract.py).
"""
from __future__ import annotations

from collections import deque
from typing import Any, Sequence

import jax
import numpy as np

from emo_jax.eval.extract import ShardedExtractor
from emo_jax.eval.frechet import FeatureStats, frechet_distance_between
from emo_jax.eval.i3d import FEATURES, FRAMES, I3D, preprocess_clips

FEATURE = "i3d_kinetics400_logits"


class ClipWindows:
    """Cuts one video, fed frame by frame, into windows of `length` consecutive frames starting every `stride`."""

    def __init__(self, length: int = FRAMES, stride: int = FRAMES):
        if stride < 1:
            raise ValueError(f"the clip stride must be a positive number of frames, got {stride}")
        self.length, self.stride = length, stride
        self.frames = 0
        self._recent: deque[np.ndarray] = deque(maxlen=length)

    def push(self, frame_HWC: np.ndarray) -> np.ndarray | None:
        """The window [length, H, W, 3] that ends with this frame, if one does; else None."""
        self._recent.append(frame_HWC)
        self.frames += 1
        start = self.frames - self.length
        return np.stack(self._recent) if start >= 0 and start % self.stride == 0 else None

    @property
    def too_short(self) -> str | None:
        """Why this video gave no clip, or None."""
        if self.frames >= self.length:
            return None
        return f"{self.frames} frames, shorter than FVD's {self.length}-frame clips"


def i3d_extractor(module: I3D, params: Any, batch_size: int,
                  devices: Sequence[jax.Device] | None = None) -> ShardedExtractor:
    """Clips [N, 16, H, W, 3] with values 0..255 -> I3D logits [N, 400], sharded over `devices`."""
    return ShardedExtractor(lambda p, clips: module.apply({"params": p}, preprocess_clips(clips)), params,
                            batch_size, devices)


def new_stats() -> FeatureStats:
    return FeatureStats(FEATURE, FEATURES)


def fvd(generated: FeatureStats, reference: FeatureStats) -> float:
    return frechet_distance_between(generated, reference)
