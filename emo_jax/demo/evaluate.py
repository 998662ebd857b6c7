"""Generation on held-out audio with emo-generate's pieces, and the demo's measures of what came out."""
from __future__ import annotations

import dataclasses
import os

import ml_collections
import numpy as np

from emo_jax import encoders
from emo_jax.audio.decode import load_audio
from emo_jax.audio.features import audio_features
from emo_jax.demo.metrics import continuity, identity_accuracy, mouth_opening, pearson
from emo_jax.demo.synthetic import loudness_per_frame
from emo_jax.models.vae_codec import VAECodec
from emo_jax.sample.generate import detect_face, frame_reference
from emo_jax.sample.sampler import Sampler
from emo_jax.train.checkpoint import restore_model
from emo_jax.video.image import read_image
from emo_jax.video.io import contact_sheet, write_video

SHEET_COLUMNS = 12  # the reference crop, then 11 evenly spaced generated frames per row
SHEET_ZOOM = 4  # 32 px frames are too small to judge by eye


@dataclasses.dataclass(frozen=True)
class VideoResult:
    """The measures of one identity's generated video on its held-out audio."""

    identity: str
    frames: int
    identity_accuracy: float
    lip_sync: float  # pearson(mouth opening, loudness) with the real audio
    lip_sync_control: float  # the same, generated from the audio zeroed (silence)
    boundary_change: float  # mean |frame change| across clip boundaries
    inside_change: float  # mean |frame change| inside clips


class Generator:
    """emo-generate's path from portrait + audio to frames, loaded once for many videos."""

    def __init__(self, config: ml_collections.ConfigDict, checkpoint: str):
        self.config = config
        self.sampler = Sampler(config, restore_model(checkpoint, config))
        self.w2v, self.w2v_params, _ = encoders.audio_encoder(config)
        vae_module, vae_params, _ = encoders.vae(config)
        self.codec = VAECodec(vae_module, vae_params, chunk=config.model.clip_frames)

    def reference(self, portrait_path: str) -> tuple[np.ndarray, np.ndarray]:
        """(reference crop [S, S, 3] as the model sees it, face mask) of a portrait file, as emo-generate makes them."""
        image, c = read_image(portrait_path), self.config
        return frame_reference(image, detect_face(image, portrait_path, "haar"), c.data.size, c.data.face_expand,
                               c.sample.mask_expand)

    def frames(self, reference: np.ndarray, mask: np.ndarray, audio: np.ndarray, seed: int) -> np.ndarray:
        """uint8 frames [T, S, S, 3] for 16 kHz audio, T = round(duration * fps)."""
        c, s = self.config, self.config.sample
        ref = self.sampler.reference(self.codec.encode(reference[None]))
        features = audio_features(audio, c.data.fps, self.w2v, self.w2v_params, context=c.model.audio.context,
                                  window_seconds=c.audio.window_seconds)
        latents = self.sampler.sample(ref, features, mask, seed, s.ref_scale, s.audio_scale)
        return self.codec.decode(latents)


def _sheet_row(reference: np.ndarray, frames: np.ndarray) -> np.ndarray:
    picks = np.linspace(0, len(frames) - 1, SHEET_COLUMNS - 1).round().astype(int)
    return np.concatenate([reference[None], frames[picks]])


def generate_and_measure(config: ml_collections.ConfigDict, checkpoint: str, names: list[str], portraits: list[str],
                         audio_paths: list[str], out_dir: str, seed: int = 0) -> list[VideoResult]:
    """Generates every identity on its held-out audio and on silence; writes mp4s and contact_sheet.png."""
    gen = Generator(config, checkpoint)
    fps, f = config.data.fps, config.model.clip_frames
    refs = [gen.reference(p) for p in portraits]
    crops = [r for r, _ in refs]
    results, rows = [], []
    os.makedirs(out_dir, exist_ok=True)
    for k, (name, (reference, mask), path) in enumerate(zip(names, refs, audio_paths)):
        audio = load_audio(path)
        # The same noise seed for both: whatever differs between the two videos came from the audio.
        video = gen.frames(reference, mask, audio, seed)
        silent = gen.frames(reference, mask, np.zeros_like(audio), seed)
        write_video(os.path.join(out_dir, f"{name}.mp4"), video, fps, audio=audio)
        write_video(os.path.join(out_dir, f"{name}_silent.mp4"), silent, fps, audio=np.zeros_like(audio))
        loud = loudness_per_frame(audio, fps, len(video))
        boundary, inside = continuity(video, f)
        results.append(VideoResult(
            identity=name, frames=len(video), identity_accuracy=identity_accuracy(video, k, crops),
            lip_sync=pearson(mouth_opening(video), loud), lip_sync_control=pearson(mouth_opening(silent), loud),
            boundary_change=boundary, inside_change=inside))
        rows += [_sheet_row(reference, video), _sheet_row(reference, silent)]
    sheet = np.concatenate(rows)
    sheet = sheet.repeat(SHEET_ZOOM, axis=1).repeat(SHEET_ZOOM, axis=2)
    contact_sheet(sheet, os.path.join(out_dir, "contact_sheet.png"), cols=SHEET_COLUMNS, max_frames=len(sheet))
    return results
