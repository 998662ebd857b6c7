"""Known-answer talking heads: drawn identities whose mouth opening follows the audio's loudness, frame by frame.

Each identity differs in face shape, skin, hair (colour and style) and background. The audio is speech-like:
voiced syllables (harmonic stacks at a speaker's pitch) at about four per second, grouped into phrases with
pauses. For every video frame the mouth opening is the audio's normalised loudness in that frame's window, and
the head sways and rolls (tilts in the image plane) at known speeds, so speed and lip sync have ground truth.
"""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from emo_jax.eval.clips import loudness_per_frame

SAMPLE_RATE = 16000
# Near-black: no skin, hair or background colour comes close, and the eyes and brows lie in the upper half.
MOUTH = (12, 12, 12)
EYES = (35, 35, 35)  # eyes; the brows are (30, 30, 30)
NOSE = (150, 120, 100)


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
        bg = cv2.cvtColor(np.uint8([[[hue, 140, 150]]]), cv2.COLOR_HSV2RGB)[0, 0]
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
        cv2.ellipse(image, (c(ex), c(ey)), (c(0.2 * s), c(0.1 * s)), 0, 0, 360, EYES, -1)
        cv2.line(image, (c(ex - 0.25 * s), c(ey - 0.22 * s)), (c(ex + 0.25 * s), c(ey - 0.22 * s)), (30, 30, 30),
                 max(1, c(s / 12)))
    cv2.line(image, (c(cx), c(cy - 0.1 * h)), (c(cx), c(cy + 0.2 * h)), NOSE, max(1, c(s / 15)))
    mouth_h = 0.06 * s + 0.5 * s * float(np.clip(mouth_open, 0, 1))
    cv2.ellipse(image, (c(cx), c(cy + 0.55 * h)), (c(0.5 * s), c(mouth_h)), 0, 0, 360, MOUTH, -1)


# True roll speeds (degrees per frame) the videos are drawn at, a still head up to fast shakes, and the swing's ends.
# The roll is meant to be the largest change of a 32 px crop that the speed label can explain: at the earlier
# 0-3 deg/frame, an 18 degree swing and a full sway, the rank correlation of a 12-frame clip's true speed with its
# crop's mean frame change was 0.21 (15 videos); at 0-6 deg/frame, 30 degrees and half the sway, 0.54 (0.71
# without sway, 0.75 without sway and mouth: those two carry lip sync and the face locator). emo-prepare's
# head_pose label reads a 30 degree swing at 1/2/3/4/5/6 deg/frame as 1.01/1.97/2.92/3.81/4.30/4.82 (the turning
# points, smoothed, slow the fast swings): monotonic, as the speed layers need.
ROLL_SPEEDS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0)
ROLL_AMPLITUDE = 30.0  # degrees: the head tilts between -30 and +30, turning back at the ends
# The roll's speed changes every 1/ROLL_SEGMENTS of a video (every 20 frames of the demo's 8 s at 15 fps), so most
# training clips' speed differs from their motion frames': the label, not the previous clip, says how fast to turn.
ROLL_SEGMENTS = 6
SWAY = 0.5  # of the earlier sway's amplitude (a face moving inside its crop, which the face locator must follow)


@dataclasses.dataclass(frozen=True)
class HeadMotion:
    """Per-frame head pose of a drawn video: centre (pixels of the drawing) and in-plane roll (degrees)."""

    cx: np.ndarray
    cy: np.ndarray
    roll: np.ndarray
    roll_speed: np.ndarray  # |d roll / d frame| as drawn: the ground truth of the speed label


def roll_track(speeds_T: np.ndarray, phase: float) -> np.ndarray:
    """Roll angles [T] of a head turning at |speeds_T| degrees per frame between -/+ROLL_AMPLITUDE (a triangle wave
    whose slope is the speed; `phase` in [0, 1) says where in the swing it starts)."""
    period = 4 * ROLL_AMPLITUDE  # degrees of travel per full swing
    travel = phase * period + np.concatenate([[0.0], np.cumsum(speeds_T[1:])])
    u = np.mod(travel, period) / period  # 0..1 along the swing
    return ROLL_AMPLITUDE * np.where(u < 0.5, 4 * u - 1, 3 - 4 * u)


def head_motion(num_frames: int, fps: float, side: int, seed: int) -> HeadMotion:
    """A drawn head's motion: a slow sway in x and y (so the face moves inside its crop from clip to clip, which the
    face locator must follow) and a roll whose speed changes ROLL_SEGMENTS times, each time to one of ROLL_SPEEDS
    (the speed layers' ground truth)."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_frames) / fps
    ax, ay = SWAY * rng.uniform(0.05, 0.09) * side, SWAY * rng.uniform(0.02, 0.04) * side
    px, py = rng.uniform(3.0, 5.0), rng.uniform(2.5, 4.0)
    cx = side / 2 + ax * np.sin(2 * np.pi * t / px + rng.uniform(0, 2 * np.pi))
    cy = side / 2 + ay * np.sin(2 * np.pi * t / py + rng.uniform(0, 2 * np.pi))
    segment = np.minimum(np.arange(num_frames) * ROLL_SEGMENTS // max(num_frames, 1), ROLL_SEGMENTS - 1)
    speed = rng.choice(ROLL_SPEEDS, size=ROLL_SEGMENTS)[segment].astype(np.float64)
    return HeadMotion(cx, cy, roll_track(speed, float(rng.uniform())), speed)


def rotate_about(image: np.ndarray, cx: float, cy: float, degrees: float, fill: tuple[int, int, int]) -> np.ndarray:
    """The image turned by `degrees` (counter-clockwise on screen) about (cx, cy), uncovered corners `fill`."""
    if degrees == 0:
        return image
    m = cv2.getRotationMatrix2D((float(cx), float(cy)), float(degrees), 1.0)
    return cv2.warpAffine(image, m, image.shape[1::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=tuple(int(v) for v in fill))


def render_video(ident: Identity, audio: np.ndarray, fps: float, side: int, seed: int,
                 motion: HeadMotion | None = None) -> np.ndarray:
    """Frames [T, side, side, 3] uint8 for the audio: mouth follows loudness, head sways and rolls (head_motion's, or
    the `motion` given)."""
    num_frames = int(round(len(audio) / SAMPLE_RATE * fps))
    mouth = loudness_per_frame(audio, fps, num_frames)
    motion = motion or head_motion(num_frames, fps, side, seed)
    frames = np.empty((num_frames, side, side, 3), np.uint8)
    for k in range(num_frames):
        frames[k] = ident.background
        draw_head(frames[k], ident, motion.cx[k], motion.cy[k], mouth[k])
        frames[k] = rotate_about(frames[k], motion.cx[k], motion.cy[k], motion.roll[k], ident.background)
    return frames


def reference_image(ident: Identity, side: int) -> np.ndarray:
    """The identity at rest: centred, mouth nearly closed."""
    image = np.empty((side, side, 3), np.uint8)
    image[:] = ident.background
    draw_head(image, ident, side / 2, side * 0.5, 0.1)
    return image
