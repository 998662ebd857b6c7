"""Measures of generated clips that need no network: identity against reference frames, lip sync as a correlation,
continuity across clip boundaries, and the loudness and mouth-colour readings the lip-sync measure compares.
The demo (emo_jax/demo/) and emo-train's periodic evaluation (emo_jax/train/evaluate.py) use them."""
from __future__ import annotations

import cv2
import numpy as np

SAMPLE_RATE = 16000


def mouth_opening(frames_THWC: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """Per frame: how much of the lower half has the mouth's `colour` (soft count, robust to blur)."""
    lower = frames_THWC[:, frames_THWC.shape[1] // 2:].astype(np.float32)
    dist = np.linalg.norm(lower - np.asarray(colour, np.float32), axis=-1)
    return np.clip(1.0 - dist / 60.0, 0.0, None).sum(axis=(1, 2))


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; 0 when either side is constant (no signal is no sync)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.std() < 1e-9 or b.std() < 1e-9:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def _blur(x: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(x.astype(np.float32), (0, 0), sigmaX=max(1.0, x.shape[0] / 16))


def identity_accuracy(frames_THWC: np.ndarray, own: int, references: list[np.ndarray]) -> float:
    """Fraction of frames closer (blurred L1) to their own identity's reference than to every other one."""
    refs = [_blur(r) for r in references]
    hits = 0
    for frame in frames_THWC:
        f = _blur(frame)
        dists = [float(np.abs(f - r).mean()) for r in refs]
        hits += int(np.argmin(dists) == own)
    return hits / max(1, len(frames_THWC))


def frame_changes(frames_T: np.ndarray) -> np.ndarray:
    """[T - 1]: mean |difference| between frames t and t + 1, over every other axis (pixels and channels)."""
    diffs = np.abs(np.diff(np.asarray(frames_T, np.float32), axis=0))
    return diffs.reshape(len(diffs), -1).mean(axis=1)


def continuity(frames_THWC: np.ndarray, clip_frames: int) -> tuple[float, float]:
    """(mean |frame change| across clip boundaries, mean |frame change| inside clips)."""
    diffs = frame_changes(frames_THWC)
    boundary = np.zeros(len(diffs), bool)
    boundary[clip_frames - 1::clip_frames] = True  # diff k is between frames k and k + 1
    inside = diffs[~boundary]
    return (float(diffs[boundary].mean()) if boundary.any() else float("nan"),
            float(inside.mean()) if len(inside) else float("nan"))


def loudness_per_frame(audio: np.ndarray, fps: float, num_frames: int) -> np.ndarray:
    """RMS of each video frame's audio window, scaled to [0, 1] by the clip's 95th percentile."""
    out = np.zeros(num_frames, np.float32)
    for k in range(num_frames):
        a, b = int(round(k * SAMPLE_RATE / fps)), int(round((k + 1) * SAMPLE_RATE / fps))
        seg = audio[a:b]
        out[k] = np.sqrt(np.mean(seg ** 2)) if len(seg) else 0.0
    scale = np.percentile(out, 95) or 1.0
    return np.clip(out / scale, 0.0, 1.0)
