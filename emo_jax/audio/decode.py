"""Decoding any audio or video file's sound track to 16 kHz mono float32, with PyAV: whole (load_audio), or as an
AudioTrack read block by block, as often as needed, without holding its samples (open_audio).

PyAV is imported when a file is opened, not with this module: training on prepared features, the benchmarks and
the GPU image import emo_jax.audio without decoding anything."""
from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from emo_jax.errors import AudioError
from emo_jax.paths import require_file

if TYPE_CHECKING:
    import av


def _open(path: str) -> av.container.InputContainer:
    import av

    require_file(path, "audio file", "pass the path of an audio or video file", AudioError)
    if os.path.getsize(path) == 0:
        raise AudioError(f"audio file {path!r} is empty (0 bytes); pass a file that holds sound")
    try:
        container = av.open(path)
    except av.FFmpegError as e:
        raise AudioError(f"cannot open {path!r} as an audio or video file: {e}") from e
    if not container.streams.audio:
        container.close()
        raise AudioError(f"{path!r} has no audio stream; pass a file with a sound track")
    return container


def _decoded_blocks(path: str, sample_rate: int) -> Iterator[np.ndarray]:
    """Mono float32 samples of the first audio stream, one block per decoded frame, in order."""
    import av

    with _open(path) as container:
        stream = container.streams.audio[0]
        # Resample only in time and keep every channel: the downmix below is a plain channel mean, whereas
        # libswresample's stereo->mono matrix (0.707 per channel, unnormalised for float output) changes the level.
        resampler = av.AudioResampler(format="fltp", rate=sample_rate)
        try:
            for frame in container.decode(stream):
                for f in resampler.resample(frame):
                    yield f.to_ndarray().mean(axis=0).astype(np.float32)
            for f in resampler.resample(None):
                yield f.to_ndarray().mean(axis=0).astype(np.float32)
        except av.FFmpegError as e:
            raise AudioError(f"cannot decode the audio of {path!r}: {e}") from e


def _no_samples(path: str) -> AudioError:
    return AudioError(f"{path!r} has an audio stream but no samples in it; pass a file that holds sound")


def _non_finite(path: str, count: int, first: int, sample_rate: int) -> AudioError:
    # Float WAVs store NaN and Inf as they are; every feature computed from them would be NaN.
    return AudioError(f"{path!r} holds {count} non-finite samples (NaN or Inf), the first at "
                      f"{first / sample_rate:.3f} s; the file is damaged; re-encode or replace it")


def load_audio(path: str, sample_rate: int = 16000) -> np.ndarray:
    """Decodes the first audio stream of `path` (wav, mp3, flac, m4a, mp4, mkv, mov, ...) to mono float32 [n]."""
    blocks = list(_decoded_blocks(path, sample_rate))
    if not sum(len(b) for b in blocks):
        raise _no_samples(path)
    samples = np.concatenate(blocks)
    finite = np.isfinite(samples)
    if not finite.all():
        raise _non_finite(path, int(samples.size - finite.sum()), int(np.argmin(finite)), sample_rate)
    return samples


def _normalized(x: np.ndarray, mean: np.float32, var: np.float32) -> np.ndarray:
    return ((x - mean) / np.sqrt(var + 1e-7)).astype(np.float32)


def normalize_audio(x: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance, as Wav2Vec2FeatureExtractor(do_normalize=True): (x - mean) / sqrt(var + 1e-7)."""
    x = np.asarray(x, dtype=np.float32)
    return _normalized(x, x.mean(), x.var())


@dataclasses.dataclass(frozen=True)
class AudioTrack:
    """Mono float32 samples that can be read from the start any number of times, in blocks, with the whole
    track's length, mean and (biased) variance."""

    num_samples: int
    mean: np.float32
    var: np.float32
    read: Callable[[], Iterator[np.ndarray]]

    def blocks(self, normalize: bool = False) -> Iterator[np.ndarray]:
        """The samples in order; `normalize`: as normalize_audio does to the whole track."""
        for block in self.read():
            yield _normalized(block, self.mean, self.var) if normalize else block

    @classmethod
    def from_array(cls, samples: np.ndarray) -> AudioTrack:
        """A track of samples already in memory (read as one block)."""
        x = np.asarray(samples, np.float32)
        if x.ndim != 1:
            raise AudioError(f"audio must be mono [samples], got shape {x.shape}; load it with load_audio")
        return cls(len(x), x.mean(), x.var(), lambda: iter([x]))


def open_audio(path: str, sample_rate: int = 16000) -> AudioTrack:
    """The sound track of `path` as an AudioTrack: one decoding pass now counts the samples, gathers the mean and
    variance and checks every sample is finite; each read decodes the file again, so memory stays the same for
    any length (a minute of 16 kHz float32 is 3.8 MB, as load_audio holds it, and the decoder's copies more)."""
    count, mean, m2 = 0, 0.0, 0.0
    for block in _decoded_blocks(path, sample_rate):
        finite = np.isfinite(block)
        if not finite.all():
            bad = sum(int(np.size(b) - np.isfinite(b).sum()) for b in _decoded_blocks(path, sample_rate))
            raise _non_finite(path, bad, count + int(np.argmin(finite)), sample_rate)
        n = len(block)
        if not n:
            continue
        b = block.astype(np.float64)
        b_mean = b.mean()
        # Chan et al.'s pairwise update: merges block moments without the cancellation of sum-of-squares.
        delta = b_mean - mean
        mean += delta * n / (count + n)
        m2 += np.square(b - b_mean).sum() + delta * delta * count * n / (count + n)
        count += n
    if not count:
        raise _no_samples(path)
    return AudioTrack(count, np.float32(mean), np.float32(m2 / count),
                      lambda: _decoded_blocks(path, sample_rate))
