"""Decoding any audio or video file's sound track to 16 kHz mono float32, with PyAV."""
from __future__ import annotations

import os

import av
import numpy as np

from emo_jax.errors import AudioError


def load_audio(path: str, sample_rate: int = 16000) -> np.ndarray:
    """Decodes the first audio stream of `path` (wav, mp3, flac, m4a, mp4, mkv, mov, ...) to mono float32 [n]."""
    if not os.path.isfile(path):
        raise AudioError(f"audio file {path!r} does not exist; pass the path of an audio or video file")
    if os.path.getsize(path) == 0:
        raise AudioError(f"audio file {path!r} is empty (0 bytes); pass a file that holds sound")
    try:
        container = av.open(path)
    except av.FFmpegError as e:
        raise AudioError(f"cannot open {path!r} as an audio or video file: {e}") from e
    with container:
        if not container.streams.audio:
            raise AudioError(f"{path!r} has no audio stream; pass a file with a sound track")
        stream = container.streams.audio[0]
        # Resample only in time and keep every channel: the downmix below is a plain channel mean, whereas
        # libswresample's stereo->mono matrix (0.707 per channel, unnormalised for float output) changes the level.
        resampler = av.AudioResampler(format="fltp", rate=sample_rate)
        chunks = []
        try:
            for frame in container.decode(stream):
                chunks.extend(f.to_ndarray() for f in resampler.resample(frame))
            chunks.extend(f.to_ndarray() for f in resampler.resample(None))
        except av.FFmpegError as e:
            raise AudioError(f"cannot decode the audio of {path!r}: {e}") from e
    if not chunks or sum(c.shape[1] for c in chunks) == 0:
        raise AudioError(f"{path!r} has an audio stream but no samples in it; pass a file that holds sound")
    samples = np.concatenate([c.mean(axis=0) for c in chunks]).astype(np.float32)
    finite = np.isfinite(samples)
    if not finite.all():  # float WAVs store NaN and Inf as they are; every feature computed from them is NaN
        first = int(np.argmin(finite))
        raise AudioError(f"{path!r} holds {int(samples.size - finite.sum())} non-finite samples (NaN or Inf), the "
                         f"first at {first / sample_rate:.3f} s; the file is damaged; re-encode or replace it")
    return samples


def normalize_audio(x: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance, as Wav2Vec2FeatureExtractor(do_normalize=True): (x - mean) / sqrt(var + 1e-7)."""
    x = np.asarray(x, dtype=np.float32)
    return ((x - x.mean()) / np.sqrt(x.var() + 1e-7)).astype(np.float32)
