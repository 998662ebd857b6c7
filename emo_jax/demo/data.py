"""The demo's known-answer files: training videos (mp4 with audio), held-out speech (wav) and rest-pose portraits."""
from __future__ import annotations

import dataclasses
import os
import wave

import cv2
import ml_collections
import numpy as np

from emo_jax.demo.synthetic import SAMPLE_RATE, Identity, make_identities, reference_image, render_video, speech_audio
from emo_jax.video.io import write_video

# Seeds of held-out speech start here; training videos use seeds below it, so no held-out track was ever heard.
HELDOUT_SEED = 10_000


@dataclasses.dataclass(frozen=True)
class DemoData:
    """Paths of everything the demo drew, per identity in identity order."""

    identities: list[Identity]
    videos: list[str]  # every training video, all identities
    heldout_audio: list[str]  # one wav per identity
    heldout_waves: list[np.ndarray]  # the same tracks as float32 [samples] (the measure's ground truth)


def write_wav(path: str, audio: np.ndarray) -> None:
    """16-bit mono wav at 16 kHz (any audio reader, emo-generate's included, opens it)."""
    pcm = np.round(np.clip(audio, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(path, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(SAMPLE_RATE)
        f.writeframes(pcm.tobytes())


def write_demo_data(root: str, config: ml_collections.ConfigDict) -> DemoData:
    """Draws identities x videos_per_identity talking-head mp4s and one held-out speech track per identity."""
    d, fps = config.demo, config.data.fps
    identities = make_identities(d.identities)
    videos, heldout, waves = [], [], []
    for folder in ("videos", "heldout"):
        os.makedirs(os.path.join(root, folder), exist_ok=True)
    for i, ident in enumerate(identities):
        for v in range(d.videos_per_identity):
            seed = i * d.videos_per_identity + v
            audio = speech_audio(d.video_seconds, ident.pitch, seed=seed)
            path = os.path.join(root, "videos", f"{ident.name}_{v}.mp4")
            write_video(path, render_video(ident, audio, fps, d.render_side, seed=seed), fps, audio=audio)
            videos.append(path)
        audio = speech_audio(d.heldout_seconds, ident.pitch, seed=HELDOUT_SEED + i)
        path = os.path.join(root, "heldout", f"{ident.name}.wav")
        write_wav(path, audio)
        heldout.append(path)
        waves.append(audio)
    return DemoData(identities, videos, heldout, waves)


def write_portrait(path: str, ident: Identity, side: int) -> str:
    """The identity at rest, drawn as in its training videos (side x side, the whole scene, no crop), as PNG;
    returns the path. emo-generate frames it by the rule emo-prepare framed the videos with."""
    cv2.imwrite(path, cv2.cvtColor(reference_image(ident, side), cv2.COLOR_RGB2BGR))
    return path
