"""The frozen encoders emo-prepare may run: wav2vec2 audio features per source and VAE latents per segment."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from data_pipeline.schema import decode_jpeg
from emo_jax.audio.features import audio_features
from emo_jax.audio.wav2vec2 import Wav2Vec2Model
from emo_jax.interop.vae_import import load_vae
from emo_jax.interop.wav2vec2_import import load_wav2vec2
from emo_jax.models.vae_codec import VAECodec


class SegmentEncoders:
    """wav2vec2 and/or VAE from local folders ("" = not used), loaded once and kept for every input."""

    def __init__(self, wav2vec_folder: str, vae_folder: str, vae_chunk: int = 8):
        self.wav2vec: tuple[Wav2Vec2Model, Any] | None = None
        self.codec: VAECodec | None = None
        if wav2vec_folder:
            module, params, _ = load_wav2vec2(wav2vec_folder)
            self.wav2vec = (module, params)
        if vae_folder:
            module, params, _ = load_vae(vae_folder)
            self.codec = VAECodec(module, params, chunk=vae_chunk)

    def source_features(self, audio: np.ndarray, fps: float, num_frames: int, sample_rate: int,
                        window_seconds: float) -> np.ndarray | None:
        """[num_frames, L, D] float16 features of a whole source's audio (sample 0 plays with frame 0), or None."""
        if self.wav2vec is None:
            return None
        module, params = self.wav2vec
        features = audio_features(audio, fps, module, params, context=0, window_seconds=window_seconds,
                                  sample_rate=sample_rate)[:, 0]
        assert len(features) == num_frames, (features.shape, num_frames)
        return features.astype(np.float16)

    def latents(self, frames_jpeg: Sequence[bytes]) -> np.ndarray | None:
        """[T, h, w, C] float16 scaled VAE means of the decoded JPEG frames, or None."""
        if self.codec is None:
            return None
        return self.codec.encode(np.stack([decode_jpeg(j) for j in frames_jpeg])).astype(np.float16)
