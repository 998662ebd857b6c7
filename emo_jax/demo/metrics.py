"""What the demo measures on generated videos: identity, lip sync, and continuity across clip boundaries (the
measures themselves are emo_jax/eval/clips.py's; the demo's mouths have one colour, MOUTH)."""
from __future__ import annotations

import numpy as np

from emo_jax.demo.synthetic import MOUTH
from emo_jax.eval import clips
from emo_jax.eval.clips import continuity, identity_accuracy, pearson

__all__ = ["continuity", "identity_accuracy", "mouth_opening", "pearson"]


def mouth_opening(frames_THWC: np.ndarray) -> np.ndarray:
    """Per frame: how much of the lower half is the drawn mouth's colour (soft count, robust to blur)."""
    return clips.mouth_opening(frames_THWC, MOUTH)
