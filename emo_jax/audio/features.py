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
"""
from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from emo_jax.audio.decode import normalize_audio
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


def resample_to_fps(x: np.ndarray, num_frames: int, fps: float, hop_seconds: float, offset_seconds: float) -> np.ndarray:
    """Linear interpolation over time of x [L, ...] (frame j at offset + j * hop) to video frames k / fps."""
    if len(x) == 0:
        raise ValueError("no encoder frames to resample: the audio is shorter than one wav2vec2 frame (25 ms)")
    pos = np.clip((np.arange(num_frames) / fps - offset_seconds) / hop_seconds, 0.0, len(x) - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, len(x) - 1)
    w = (pos - lo).astype(np.float32).reshape((-1,) + (1,) * (x.ndim - 1))
    return x[lo] * (1.0 - w) + x[hi] * w


def add_context(x: np.ndarray, context: int) -> np.ndarray:
    """x [T, ...] -> [T, 2 * context + 1, ...]: each frame with its neighbours, edge frames repeated."""
    idx = np.clip(np.arange(len(x))[:, None] + np.arange(-context, context + 1)[None, :], 0, len(x) - 1)
    return x[idx]


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


def _padded(audio: np.ndarray, start: int, length: int) -> np.ndarray:
    chunk = audio[start : start + length]
    return np.pad(chunk, (0, length - len(chunk)))[None]


def _conv0_stats(audio, config, params, moments_fn, chunk_samples) -> tuple[jax.Array, jax.Array]:
    """Whole-file mean and (biased) variance over time of the first conv, per channel, in bounded chunks."""
    k, s = config.conv_kernel[0], config.conv_stride[0]
    total = (len(audio) - k) // s + 1
    per_chunk = (chunk_samples - k) // s + 1
    count, mean, m2 = 0, 0.0, 0.0
    for first in range(0, total, per_chunk):
        n = min(per_chunk, total - first)
        c_mean, c_m2 = (np.asarray(a, np.float64) for a in moments_fn(params, _padded(audio, first * s, chunk_samples), n))
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
    config = encoder.config
    hop, field = config.hop_samples, config.receptive_field_samples
    rate = sample_rate / hop
    total = config.num_frames(len(audio_16k))
    if total == 0:
        raise ValueError(f"audio of {len(audio_16k)} samples is shorter than one wav2vec2 frame ({field} samples)")
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
    encode_fn, moments_fn = _compiled(encoder)
    stats = None
    if config.feat_extract_norm == "group":
        stats = _conv0_stats(audio_16k, config, params, moments_fn, samples)
    out = np.empty((total, config.num_hidden_layers + 1, config.hidden_size), np.float32)
    for start, keep_start, keep_end in _window_plan(total, window, overlap, frames):
        valid = min(frames, total - start)
        hidden = np.asarray(encode_fn(params, _padded(audio_16k, start * hop, samples), valid, stats))
        out[keep_start:keep_end] = hidden[keep_start - start : keep_end - start]
    return out


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
    2 * context + 1, layers, hidden] float32 features."""
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
