"""Synthetic talking-head videos: a drawn face the Haar cascade detects, a tone and a click."""
from fractions import Fraction

import av
import cv2
import numpy as np

from data_pipeline.extract import PrepareConfig

FPS = 30
SR = 16000
SIDE = 128
# A click plays during these frames, which also show a white forehead patch: the still video's first
# segment starts at frame 0, the cut video's second one at frame 90 (so its click is its frame 40).
CLICK_FRAME = 45
CUT_CLICK_FRAME = 130
TEST_CONFIG = PrepareConfig(fps=FPS, size=64, min_seconds=2.0, max_seconds=4.0)


def draw_face(image: np.ndarray, cx: float, cy: float, s: float, flash: bool = False) -> None:
    """A cartoon frontal face of half-width s: dark hair, skin oval, brows, dark eyes, nose line, mouth.

    Without the hair the Haar cascade misses this drawing at a quarter of positions and backgrounds;
    with it, it finds it at all of 135 tried (positions 42-86 px, sizes 20-28, backgrounds 40/90/200).
    """
    c = lambda v: int(round(v))  # noqa: E731
    cv2.ellipse(image, (c(cx), c(cy - 0.25 * s)), (c(1.08 * s), c(1.25 * s)), 0, 0, 360, (50, 35, 25), -1)
    cv2.ellipse(image, (c(cx), c(cy)), (c(s), c(s * 1.3)), 0, 0, 360, (230, 200, 180), -1)
    for ex in (cx - 0.42 * s, cx + 0.42 * s):
        ey = cy - 0.3 * s
        cv2.ellipse(image, (c(ex), c(ey)), (c(0.2 * s), c(0.1 * s)), 0, 0, 360, (40, 40, 40), -1)
        cv2.line(image, (c(ex - 0.25 * s), c(ey - 0.25 * s)), (c(ex + 0.25 * s), c(ey - 0.25 * s)), (30, 30, 30),
                 max(1, c(s / 12)))
    cv2.line(image, (c(cx), c(cy - 0.1 * s)), (c(cx), c(cy + 0.3 * s)), (170, 140, 120), max(1, c(s / 15)))
    cv2.ellipse(image, (c(cx), c(cy + 0.65 * s)), (c(0.4 * s), c(0.12 * s)), 0, 0, 360, (120, 50, 60), -1)
    if flash:
        cv2.rectangle(image, (c(cx - 0.3 * s), c(cy - 1.0 * s)), (c(cx + 0.3 * s), c(cy - 0.7 * s)),
                      (255, 255, 255), -1)


def face_frames(n: int, centre_x=lambda t: SIDE / 2, background: int = 90, flash_frame: int = -1,
                face: bool = True) -> np.ndarray:
    frames = np.full((n, SIDE, SIDE, 3), background, np.uint8)
    if face:
        for t in range(n):
            draw_face(frames[t], centre_x(t), SIDE / 2, 24, flash=t == flash_frame)
    return frames


def tone_with_click(seconds: float, click_frame: int | None) -> np.ndarray:
    t = np.arange(round(seconds * SR)) / SR
    audio = 0.05 * np.sin(2 * np.pi * 220 * t)
    if click_frame is not None:
        centre = round((click_frame + 0.5) * SR / FPS)
        audio[centre - 40 : centre + 40] += 0.9 * np.sign(np.sin(np.arange(80) * 1.3))
    return audio.astype(np.float32)


def write_mp4(path, frames: np.ndarray, audio: np.ndarray | None, pts_ms=None, rotation: int = 0,
              lossless: bool = False) -> str:
    """H.264 + AAC mp4 at FPS, or at explicit millisecond timestamps, with optional rotation metadata.

    lossless: quantiser 0, so equal frames decode equal (lossy P-frames differ from their I-frame by up to 39).
    """
    with av.open(str(path), "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=FPS, options={"qp": "0"} if lossless else None)
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        base = Fraction(1, 1000) if pts_ms is not None else Fraction(1, FPS)
        video.codec_context.time_base = base
        if rotation:
            video.set_display_rotation(rotation)
        sound = container.add_stream("aac", rate=SR, layout="mono") if audio is not None else None
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts, frame.time_base = (pts_ms[i] if pts_ms is not None else i), base
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if sound is not None:
            chunk = av.AudioFrame.from_ndarray(audio[None, :], format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = SR, 0
            container.mux(sound.encode(chunk))
            container.mux(sound.encode(None))
    return str(path)


def make_inputs(folder) -> dict[str, str]:
    """The good and bad inputs of the end-to-end tests, by role."""
    folder.mkdir(parents=True, exist_ok=True)
    n = 3 * FPS
    still = face_frames(n, flash_frame=CLICK_FRAME)
    moving = face_frames(n, centre_x=lambda t: SIDE / 2 + 22 * np.sin(2 * np.pi * t / FPS))
    second_shot = face_frames(n, background=200, centre_x=lambda t: 50, flash_frame=CUT_CLICK_FRAME - n)
    cut = np.concatenate([face_frames(n, background=40), second_shot])
    # Stored turned a quarter clockwise with 90 degree metadata: only a reader that rotates finds the face.
    # Irregular timestamps make it variable-frame-rate as well.
    rotated = np.rot90(face_frames(n), k=-1, axes=(1, 2))
    vfr_ms = np.cumsum([0] + [33 if i % 3 else 34 for i in range(n - 1)]).tolist()
    vfr_ms = [p + (15 if i % 10 == 5 else 0) for i, p in enumerate(vfr_ms)]
    corrupt = folder / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 16)
    return {
        "still": write_mp4(folder / "still.mp4", still, tone_with_click(3, CLICK_FRAME)),
        "moving": write_mp4(folder / "moving.mp4", moving, tone_with_click(3, None)),
        "cut": write_mp4(folder / "cut.mp4", cut, tone_with_click(6, CUT_CLICK_FRAME)),
        "rotated": write_mp4(folder / "rotated.mp4", rotated, tone_with_click(3, None), pts_ms=vfr_ms, rotation=90),
        "no_audio": write_mp4(folder / "no_audio.mp4", still, None),
        "no_face": write_mp4(folder / "no_face.mp4", face_frames(n, face=False), tone_with_click(3, None)),
        "too_short": write_mp4(folder / "too_short.mp4", still[:FPS], tone_with_click(1, None)),
        "corrupt": str(corrupt),
    }
