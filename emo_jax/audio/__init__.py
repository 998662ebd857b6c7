"""The audio path: decoding, the frozen wav2vec2 encoder and per-video-frame audio features."""
from emo_jax.audio.decode import load_audio, normalize_audio

__all__ = ["load_audio", "normalize_audio"]
