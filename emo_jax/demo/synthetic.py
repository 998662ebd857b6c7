"""Known-answer talking heads: drawn identities whose mouth opening follows the audio's loudness, frame by frame.

Each identity differs in face shape, skin, hair (colour and style) and background. The audio is speech-like:
voiced syllables (harmonic stacks at a speaker's pitch) at about four per second, grouped into phrases with
pauses. For every video frame the mouth opening is the audio's normalised loudness in that frame's window, and
the head sways sideways with a known period, so speed and lip sync have ground truth.
"""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from emo_jax.eval.clips import loudness_per_frame

SAMPLE_RATE = 16000
# Near-black: no skin, hair or background colour comes close, and the eyes and brows lie in the upper half.
MOUTH = (12, 12, 12)


@dataclasses.dataclass(frozen=True)
class Identity:
    name: str
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    background: tuple[int, int, int]
    width: float  # face half-width relative to the frame side
    aspect: float  # face height / width
    hair_style: int  # 0 short cap, 1 long sides, 2 tall top
    pitch: float  # speaker's f0 in Hz


def make_identities(count: int, seed: int = 0) -> list[Identity]:
    """`count` clearly different identities (colours spread around the hue circle, shapes alternating)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        hue = int(180 * i / count)
        bg = cv2.cvtColor(np.uint8([[[hue, 120, 200]]]), cv2.COLOR_HSV2RGB)[0, 0]
        hair = cv2.cvtColor(np.uint8([[[(hue + 90) % 180, 200, 70 + 40 * (i % 3)]]]), cv2.COLOR_HSV2RGB)[0, 0]
        skin = (int(235 - 25 * (i % 4)), int(200 - 30 * (i % 3)), int(175 - 35 * ((i + 1) % 3)))
        out.append(Identity(
            name=f"id{i}", skin=skin, hair=tuple(int(v) for v in hair), background=tuple(int(v) for v in bg),
            width=0.17 + 0.02 * (i % 3), aspect=1.2 + 0.1 * ((i + 1) % 3), hair_style=i % 3,
            pitch=float(rng.uniform(110, 230))))
    return out


def speech_audio(seconds: float, pitch: float, seed: int) -> np.ndarray:
    """Voiced syllables at speech rate with pauses; float32 mono at 16 kHz, peak about 0.5."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * SAMPLE_RATE))
    envelope = np.zeros(n, np.float32)
    t = float(rng.uniform(0.1, 0.4))
    while t < seconds:
        for _ in range(int(rng.integers(2, 6))):  # a phrase of 2-5 syllables
            length = float(rng.uniform(0.12, 0.26))
            start, stop = int(t * SAMPLE_RATE), min(n, int((t + length) * SAMPLE_RATE))
            if start >= n:
                break
            shape = np.sin(np.linspace(0, np.pi, stop - start)) ** 1.5
            envelope[start:stop] = np.maximum(envelope[start:stop], float(rng.uniform(0.5, 1.0)) * shape)
            t += length + float(rng.uniform(0.03, 0.12))
        t += float(rng.uniform(0.3, 0.8))  # pause between phrases
    times = np.arange(n) / SAMPLE_RATE
    f0 = pitch * (1 + 0.03 * np.sin(2 * np.pi * 5 * times))
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    noise = 0.01 * rng.standard_normal(n)
    return (0.45 * envelope * voiced / 1.6 + noise).astype(np.float32)


def draw_head(image: np.ndarray, ident: Identity, cx: float, cy: float, mouth_open: float) -> None:
    """Draws one identity's head; the mouth's height is proportional to mouth_open in [0, 1]."""
    side = image.shape[0]
    s = ident.width * side
    h = s * ident.aspect
    c = lambda v: int(round(v))  # noqa: E731
    if ident.hair_style == 1:
        cv2.rectangle(image, (c(cx - 1.15 * s), c(cy - 0.9 * h)), (c(cx + 1.15 * s), c(cy + 0.8 * h)), ident.hair, -1)
    top = 1.35 if ident.hair_style == 2 else 1.1
    cv2.ellipse(image, (c(cx), c(cy - 0.2 * h)), (c(1.1 * s), c(top * h)), 0, 0, 360, ident.hair, -1)
    cv2.ellipse(image, (c(cx), c(cy)), (c(s), c(h)), 0, 0, 360, ident.skin, -1)
    for ex in (cx - 0.42 * s, cx + 0.42 * s):
        ey = cy - 0.25 * h
        cv2.ellipse(image, (c(ex), c(ey)), (c(0.2 * s), c(0.1 * s)), 0, 0, 360, (35, 35, 35), -1)
        cv2.line(image, (c(ex - 0.25 * s), c(ey - 0.22 * s)), (c(ex + 0.25 * s), c(ey - 0.22 * s)), (30, 30, 30),
                 max(1, c(s / 12)))
    cv2.line(image, (c(cx), c(cy - 0.1 * h)), (c(cx), c(cy + 0.2 * h)), (150, 120, 100), max(1, c(s / 15)))
    mouth_h = 0.06 * s + 0.5 * s * float(np.clip(mouth_open, 0, 1))
    cv2.ellipse(image, (c(cx), c(cy + 0.55 * h)), (c(0.5 * s), c(mouth_h)), 0, 0, 360, MOUTH, -1)


def head_track(num_frames: int, fps: float, side: int, seed: int) -> np.ndarray:
    """Horizontal head centre per frame: a sway of known amplitude and period (the ground-truth speed)."""
    rng = np.random.default_rng(seed)
    amplitude = rng.uniform(0.02, 0.05) * side  # small enough that the fixed crop stays close to the face
    period = rng.uniform(2.0, 4.0)
    t = np.arange(num_frames) / fps
    return side / 2 + amplitude * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))


def render_video(ident: Identity, audio: np.ndarray, fps: float, side: int, seed: int) -> np.ndarray:
    """Frames [T, side, side, 3] uint8 for the audio: mouth follows loudness, head sways."""
    num_frames = int(round(len(audio) / SAMPLE_RATE * fps))
    mouth = loudness_per_frame(audio, fps, num_frames)
    xs = head_track(num_frames, fps, side, seed)
    frames = np.empty((num_frames, side, side, 3), np.uint8)
    for k in range(num_frames):
        frames[k] = ident.background
        draw_head(frames[k], ident, xs[k], side * 0.5, mouth[k])
    return frames


def reference_image(ident: Identity, side: int) -> np.ndarray:
    """The identity at rest: centred, mouth nearly closed."""
    image = np.empty((side, side, 3), np.uint8)
    image[:] = ident.background
    draw_head(image, ident, side / 2, side * 0.5, 0.1)
    return image
