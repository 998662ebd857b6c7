"""Per-video-frame audio features: wav2vec2 hidden states at 50 Hz, resampled to the video rate, with context.

Layers. EMO concatenates "the features of all blocks" of wav2vec2; Hallo takes the 12 transformer layers. Both
read as the num_hidden_layers transformer outputs, which is the default here (DESIGN: 5 x 12 x 768 per frame);
`include_embedding_layer=True` adds the encoder's input (hidden_states[0]) in front.

Time. Encoder frame j sees samples [j * hop, j * hop + field) (hop 320, field 400 at 16 kHz) and is placed at
the centre of that span; video frame k is at k / fps. Each video frame linearly interpolates the two encoder
frames around its time (edges repeat). Hallo instead stretches its 50 Hz conv features end to end
(align_corners=True), which drifts by up to one encoder frame; timestamps keep every frame rate aligned.

Long audio. Self-attention in wav2vec2 is global, so memory grows with the square of the length; long files are
encoded in windows of `window_seconds` that each see `overlap_seconds` more audio on both sides, which is cropped.
The convolutions (feature extractor, positional conv) are reproduced exactly when the overlap covers the
positional conv's half-width, and base models' group norm uses whole-file statistics gathered in a first pass.
Attention to audio beyond the overlap is what a window cannot see: windowed features equal whole-file ones
exactly only when the audio fits one window, and approximate them otherwise.

Streaming. audio_feature_stream yields the per-video-frame features block by block as the windows are encoded,
holding one window's encoder frames and video frames at a time; with an AudioTrack (emo_jax/audio/decode.py) the
samples are decoded again for each pass (group-norm statistics, encoding) instead of held. Its blocks joined are
audio_features of the same audio, bit for bit: the same windows, interpolation weights and context indices.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from emo_jax.audio.decode import AudioTrack, normalize_audio
from emo_jax.audio.wav2vec2 import Wav2Vec2Config, Wav2Vec2Model

SAMPLE_RATE = 16000
# Single-window inputs are padded up to a multiple of this many seconds, so clips of many lengths share few
# compiled shapes; padded frames are masked, so the result equals the unpadded one.
_BUCKET_SECONDS = 2.0


def video_frame_count(num_samples: int, fps: float, sample_rate: int = SAMPLE_RATE) -> int:
    """round(duration * fps), halves rounding up: the number of video frames the audio spans."""
    return int(math.floor(num_samples * fps / sample_rate + 0.5))


def encoder_timing(config: Wav2Vec2Config, sample_rate: int = SAMPLE_RATE) -> tuple[float, float]:
    """(seconds between encoder frames, time of encoder frame 0) — the centre of its receptive field."""
    return config.hop_samples / sample_rate, (config.receptive_field_samples - 1) / 2 / sample_rate


def _positions(frames: np.ndarray, fps: float, hop_seconds: float, offset_seconds: float, length: int) -> np.ndarray:
    """Where video frames `frames` fall among `length` encoder frames (fractional index, edges clipped)."""
    return np.clip((frames / fps - offset_seconds) / hop_seconds, 0.0, length - 1)


def _interpolate(x: np.ndarray, pos: np.ndarray, length: int, first: int = 0) -> np.ndarray:
    """Linear interpolation at `pos` of encoder frames of which x holds [first, first + len(x)) of `length`."""
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, length - 1)
    w = (pos - lo).astype(np.float32).reshape((-1,) + (1,) * (x.ndim - 1))
    return x[lo - first] * (1.0 - w) + x[hi - first] * w


def resample_to_fps(x: np.ndarray, num_frames: int, fps: float, hop_seconds: float, offset_seconds: float) -> np.ndarray:
    """Linear interpolation over time of x [L, ...] (frame j at offset + j * hop) to video frames k / fps."""
    if len(x) == 0:
        raise ValueError("no encoder frames to resample: the audio is shorter than one wav2vec2 frame (25 ms)")
    return _interpolate(x, _positions(np.arange(num_frames), fps, hop_seconds, offset_seconds, len(x)), len(x))


def _with_context(x: np.ndarray, frames: np.ndarray, context: int, length: int, first: int = 0) -> np.ndarray:
    """Frames `frames` of `length`, each with its neighbours (edges repeated), from x holding [first, ...)."""
    idx = np.clip(frames[:, None] + np.arange(-context, context + 1)[None, :], 0, length - 1)
    return x[idx - first]


def add_context(x: np.ndarray, context: int) -> np.ndarray:
    """x [T, ...] -> [T, 2 * context + 1, ...]: each frame with its neighbours, edge frames repeated."""
    return _with_context(x, np.arange(len(x)), context, len(x))


@functools.lru_cache(maxsize=8)
def _compiled(module: Wav2Vec2Model):
    """Jitted window functions, one per encoder; jit compiles once per window shape."""

    def encode(params, x_1S, valid_frames, conv0_stats):
        out = module.apply(params, x_1S, valid_frames, conv0_stats)
        return jnp.stack(out.hidden_states, axis=2)[0]  # [T, layers + 1, D]

    def moments(params, x_1S, valid):
        y_TC = module.apply(params, x_1S, method=Wav2Vec2Model.first_conv)[0]
        mask = (jnp.arange(y_TC.shape[0]) < valid)[:, None]
        mean = jnp.sum(jnp.where(mask, y_TC, 0.0), axis=0) / valid
        return mean, jnp.sum(jnp.where(mask, jnp.square(y_TC - mean), 0.0), axis=0)

    return jax.jit(encode), jax.jit(moments)


class _Reader:
    """Spans [start, start + length) of a stream of sample blocks, zero-padded past its end; starts never go back,
    so only the samples from the last start on are held."""

    def __init__(self, blocks: Iterator[np.ndarray]):
        self._blocks = blocks
        self._buffer = np.zeros(0, np.float32)
        self._first = 0  # sample index of _buffer[0]

    def span(self, start: int, length: int) -> np.ndarray:
        """Samples [1, length] from `start`."""
        assert start >= self._first, (start, self._first)
        pieces = [self._buffer]
        held = len(self._buffer)
        while self._first + held < start + length and (block := next(self._blocks, None)) is not None:
            pieces.append(block)
            held += len(block)
        self._buffer = (np.concatenate(pieces) if len(pieces) > 1 else self._buffer)[start - self._first :]
        self._first = start
        chunk = self._buffer[:length]
        return np.pad(chunk, (0, length - len(chunk)))[None]


def _conv0_stats(reader: _Reader, num_samples: int, config, params, moments_fn,
                 chunk_samples: int) -> tuple[jax.Array, jax.Array]:
    """Whole-file mean and (biased) variance over time of the first conv, per channel, in bounded chunks."""
    k, s = config.conv_kernel[0], config.conv_stride[0]
    total = (num_samples - k) // s + 1
    per_chunk = (chunk_samples - k) // s + 1
    count, mean, m2 = 0, 0.0, 0.0
    for first in range(0, total, per_chunk):
        n = min(per_chunk, total - first)
        c_mean, c_m2 = (np.asarray(a, np.float64) for a in moments_fn(params, reader.span(first * s, chunk_samples), n))
        # Chan et al.'s pairwise update: merges chunk moments without the cancellation of sum-of-squares.
        delta = c_mean - mean
        mean = mean + delta * n / (count + n)
        m2 = m2 + c_m2 + np.square(delta) * count * n / (count + n)
        count += n
    shape = (1, 1, -1)
    return jnp.asarray(mean.reshape(shape), jnp.float32), jnp.asarray((m2 / count).reshape(shape), jnp.float32)


def _window_plan(total: int, window: int, overlap: int, frames: int) -> list[tuple[int, int, int]]:
    """(first frame encoded, first frame kept, end of kept frames) per window of `frames` encoder frames."""
    if total <= frames:
        return [(0, 0, total)]
    # Interior windows see `overlap` frames on both sides; at the file's ends a window shifts inwards instead of
    # being padded, so every multi-window call has the same shape and no padding.
    return [
        (min(max(k - overlap, 0), total - frames), k, min(k + window, total)) for k in range(0, total, window)
    ]


def _hidden_blocks(track: AudioTrack, normalize: bool, encoder: Wav2Vec2Model, params: Any, window_seconds: float,
                   overlap_seconds: float, sample_rate: int) -> tuple[int, Iterator[np.ndarray]]:
    """(L, the encoder frames of the track; its hidden states [n, num_hidden_layers + 1, hidden] as consecutive
    blocks, one per window). Arguments are checked now, the audio is read as the blocks are."""
    config = encoder.config
    hop, field = config.hop_samples, config.receptive_field_samples
    rate = sample_rate / hop
    total = config.num_frames(track.num_samples)
    if total == 0:
        raise ValueError(f"audio of {track.num_samples} samples is shorter than one wav2vec2 frame ({field} samples)")
    window, overlap = round(window_seconds * rate), round(overlap_seconds * rate)
    half_pos = config.num_conv_pos_embeddings // 2
    if window < 1 or overlap < half_pos:
        raise ValueError(
            f"window_seconds={window_seconds} and overlap_seconds={overlap_seconds} give {window} and {overlap} frames;"
            f" need at least 1 and {half_pos} (the positional conv's half-width, {half_pos / rate:.2f} s)"
        )
    frames = window + 2 * overlap
    if total <= frames:
        bucket = round(_BUCKET_SECONDS * rate)
        frames = min(frames, -(-total // bucket) * bucket)
    samples = (frames - 1) * hop + field

    def blocks() -> Iterator[np.ndarray]:
        encode_fn, moments_fn = _compiled(encoder)
        stats = None
        if config.feat_extract_norm == "group":  # a pass of its own: the statistics are of the whole file
            stats = _conv0_stats(_Reader(track.blocks(normalize)), track.num_samples, config, params, moments_fn,
                                 samples)
        reader = _Reader(track.blocks(normalize))
        for start, keep_start, keep_end in _window_plan(total, window, overlap, frames):
            valid = min(frames, total - start)
            hidden = np.asarray(encode_fn(params, reader.span(start * hop, samples), valid, stats))
            yield hidden[keep_start - start : keep_end - start]

    return total, blocks()


def encode_hidden_states(
    audio_16k: np.ndarray,
    encoder: Wav2Vec2Model,
    params: Any,
    *,
    window_seconds: float = 20.0,
    overlap_seconds: float = 5.0,
    sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """All encoder hidden states at 50 Hz, [L, num_hidden_layers + 1, hidden], encoded window by window."""
    _, blocks = _hidden_blocks(AudioTrack.from_array(audio_16k), False, encoder, params, window_seconds,
                               overlap_seconds, sample_rate)
    return np.concatenate(list(blocks))


@dataclasses.dataclass
class FeatureStream:
    """Per-video-frame features [num_frames, 2 * context + 1, layers, hidden] float32 of a whole track, yielded
    once, in order, as blocks of frames (about one encoder window each)."""

    num_frames: int
    blocks: Iterator[np.ndarray]

    def __len__(self) -> int:
        return self.num_frames

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.blocks


def _feature_blocks(hidden_blocks: Iterator[np.ndarray], num_hidden: int, num_frames: int, fps: float,
                    timing: tuple[float, float], context: int, drop_embedding: bool) -> Iterator[np.ndarray]:
    """resample_to_fps then add_context, block by block, holding only the encoder and video frames still needed."""
    hidden, first = np.zeros(0, np.float32), 0  # encoder frames [first, first + len(hidden))
    resampled, resampled_first = np.zeros(0, np.float32), 0  # video frames without context, likewise
    done = emitted = 0  # video frames resampled, and yielded with their context
    for block in hidden_blocks:
        block = block[:, 1:] if drop_embedding else block
        hidden = np.concatenate([hidden, block]) if len(hidden) else block
        known = first + len(hidden)
        # Video frames whose two encoder frames are known: a bound from the frame times, then the exact test.
        last = known == num_hidden
        bound = num_frames if last else min(num_frames, math.ceil(((known - 1) * timing[0] + timing[1]) * fps) + 1)
        pos = _positions(np.arange(done, bound), fps, *timing, num_hidden)
        end = bound if last else done + int(np.sum(np.floor(pos) + 1 <= known - 1))
        if end > done:
            pos = pos[: end - done]
            new = _interpolate(hidden, pos, num_hidden, first)
            resampled = np.concatenate([resampled, new]) if len(resampled) else new
            # Later video frames interpolate from this one's lower encoder frame on.
            lo = int(np.floor(pos[-1]))
            hidden, first, done = hidden[lo - first :], lo, end
        ready = num_frames if done == num_frames else max(emitted, done - context)
        if ready > emitted:
            yield _with_context(resampled, np.arange(emitted, ready), context, num_frames, resampled_first)
            keep = max(ready - context, 0)
            resampled, resampled_first, emitted = resampled[keep - resampled_first :], keep, ready
    assert emitted == num_frames, (emitted, num_frames)


def audio_feature_stream(
    audio: np.ndarray | AudioTrack,
    fps: float,
    encoder: Wav2Vec2Model,
    params: Any,
    *,
    context: int = 2,
    include_embedding_layer: bool = False,
    normalize: bool = True,
    window_seconds: float = 20.0,
    overlap_seconds: float = 5.0,
    sample_rate: int = SAMPLE_RATE,
) -> FeatureStream:
    """Mono audio at `sample_rate` (16 kHz for the released wav2vec2 models), an array or an AudioTrack read as it
    goes -> the features of audio_features, computed window by window as the blocks are read, so memory stays
    the same for any length. Arguments are checked now, the audio is read as the blocks are."""
    track = audio if isinstance(audio, AudioTrack) else AudioTrack.from_array(audio)
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if context < 0:
        raise ValueError(f"context must be >= 0 frames, got {context}")
    num_hidden, hidden = _hidden_blocks(track, normalize, encoder, params, window_seconds, overlap_seconds,
                                        sample_rate)
    num_frames = video_frame_count(track.num_samples, fps, sample_rate)
    timing = encoder_timing(encoder.config, sample_rate)
    return FeatureStream(num_frames, _feature_blocks(hidden, num_hidden, num_frames, fps, timing, context,
                                                     not include_embedding_layer))


def audio_features(
    audio_16k: np.ndarray,
    fps: float,
    encoder: Wav2Vec2Model,
    params: Any,
    *,
    context: int = 2,
    include_embedding_layer: bool = False,
    normalize: bool = True,
    window_seconds: float = 20.0,
    overlap_seconds: float = 5.0,
    sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """Mono audio at `sample_rate` (16 kHz for the released wav2vec2 models) -> [round(duration * fps),
    2 * context + 1, layers, hidden] float32 features, the whole track at once (audio_feature_stream yields the
    same numbers block by block)."""
    audio_16k = np.asarray(audio_16k, np.float32)
    if audio_16k.ndim != 1:
        raise ValueError(f"audio must be mono [samples], got shape {audio_16k.shape}; load it with load_audio")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if context < 0:
        raise ValueError(f"context must be >= 0 frames, got {context}")
    if normalize:
        audio_16k = normalize_audio(audio_16k)
    hidden = encode_hidden_states(
        audio_16k, encoder, params, window_seconds=window_seconds, overlap_seconds=overlap_seconds,
        sample_rate=sample_rate,
    )
    if not include_embedding_layer:
        hidden = hidden[:, 1:]
    num_frames = video_frame_count(len(audio_16k), fps, sample_rate)
    timing = encoder_timing(encoder.config, sample_rate)
    return add_context(resample_to_fps(hidden, num_frames, fps, *timing), context)
