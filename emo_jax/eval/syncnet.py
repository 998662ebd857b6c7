"""SyncNet (Chung and Zisserman 2016), the lip-sync network behind the SyncNet confidence that EMO's Table 1 reports,
as Flax modules (NHWC audio, NDHWC lips), with the inputs and the offset search of joonson/syncnet_python.

What syncnet_python does (SyncNetModel.S, SyncNetInstance.evaluate, run_pipeline.py; weights `syncnet_v2.model`,
which the user supplies, loaded by emo_jax/interop/syncnet_import.py):
- Video at 25 fps (`ffmpeg -r 25`), audio mono 16 kHz 16-bit PCM. S3FD face boxes are tracked; the box half-size
  s = max(w, h) / 2 and its centre are median-filtered over 13 frames; each frame, padded by int(s * 1.8) pixels of
  grey 110, is cropped to rows [cy - s, cy + 1.8 s) and columns [cx - 1.4 s, cx + 1.4 s) (crop scale 0.4) and
  resized to 224x224 (cv2 bilinear). The crop is mostly the face's lower part, but the network takes all of it:
  224x224 pixels, not the lower half. Frames go in as cv2 reads them: BGR, 0..255 floats, no normalisation.
- MFCCs by python_speech_features.mfcc with its defaults, on the int16 sample values: pre-emphasis 0.97, frames of
  400 samples every 160 (25 ms / 10 ms; the last frame zero-padded), no window function (rectangular, not Hamming),
  power spectrum |rfft_512|^2 / 512, 26 triangular mel filters on FFT bins floor(513 * f / 16000) from 0 to 8 kHz,
  log, DCT-II (orthonormal) keeping 13, lifter 22, then coefficient 0 replaced by the log of the frame's total
  power. 100 MFCC frames a second: 4 per video frame.
- Window i (i = 0 .. min(frames, samples // 640) - 6, one fewer than would fit) pairs video frames [i, i + 5) with
  MFCC frames [4i, 4i + 20): 5 frames [5, 224, 224, 3] against a 13x20 MFCC patch. Each gives a 1024-d embedding
  (batch norm in inference mode, eps 1e-5; embeddings are not normalised).
- Offset search (vshift 15): the audio embeddings are padded with 15 zero vectors at each end; video window i is
  compared with audio windows i - 15 .. i + 15 by Euclidean distance (torch's pairwise_distance, which adds 1e-6 to
  the difference); the distances are averaged over i into one curve of 31 values; offset = 15 - argmin (positive:
  the video shows what the audio said `offset` frames earlier), min_dist = the curve's minimum, confidence =
  median(curve) - min_dist.

What we do differently: our own face track replaces S3FD (face_crops takes its boxes and crops as run_pipeline
does), and frames reach the network as decoded, without syncnet_python's round trip through an XVID .avi and
JPEG frames, so numbers differ from its by that compression; a video not at 25 fps must be resampled to 25 fps
first, and audio resampled to 16 kHz and quantised to 16 bits as ffmpeg does (pcm16).
"""
from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import cv2
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from scipy import fft

FPS, SAMPLE_RATE = 25, 16000
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
MFCC_PER_FRAME = 4
WINDOW_FRAMES, WINDOW_MFCC = 5, 20
NUM_CEPSTRA, NUM_FILTERS, NFFT = 13, 26, 512
FRAME_LEN, FRAME_STEP = 400, 160  # 25 ms and 10 ms at 16 kHz
CROP_SIZE = 224
CROP_SCALE, CROP_PAD_VALUE, BOX_SMOOTHING = 0.4, 110, 13
EMBEDDING = 1024
VSHIFT = 15
PRECISION = jax.lax.Precision.HIGHEST


def pcm16(waveform: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] -> the int16 values (as float64) that ffmpeg's pcm_s16le holds: x * 32768 rounded
    to nearest, clipped."""
    return np.clip(np.rint(np.asarray(waveform, np.float64) * 32768.0), -32768, 32767)


def mel_filterbank() -> np.ndarray:
    """[26, 257] triangular filters, python_speech_features' get_filterbanks for 16 kHz and a 512-point FFT."""
    to_mel = lambda hz: 2595.0 * np.log10(1.0 + hz / 700.0)  # noqa: E731
    mels = np.linspace(to_mel(0.0), to_mel(SAMPLE_RATE / 2), NUM_FILTERS + 2)
    edges = np.floor((NFFT + 1) * 700.0 * (10.0 ** (mels / 2595.0) - 1.0) / SAMPLE_RATE).astype(int)
    bank = np.zeros((NUM_FILTERS, NFFT // 2 + 1))
    for j, (lo, mid, hi) in enumerate(zip(edges, edges[1:], edges[2:])):
        bins = np.arange(lo, mid)
        bank[j, bins] = (bins - lo) / (mid - lo)
        bins = np.arange(mid, hi)
        bank[j, bins] = (hi - bins) / (hi - mid)
    return bank


def mfcc(samples: np.ndarray) -> np.ndarray:
    """16 kHz mono samples on the int16 scale [n] -> MFCCs [T, 13], T = 1 + ceil((n - 400) / 160) (1 for n <= 400),
    python_speech_features.mfcc with its defaults, in float64."""
    x = np.asarray(samples, np.float64)
    assert x.ndim == 1 and x.size, f"mfcc takes mono samples [n], got shape {x.shape}"
    x = np.append(x[0], x[1:] - 0.97 * x[:-1])
    count = 1 if x.size <= FRAME_LEN else 1 + int(np.ceil((x.size - FRAME_LEN) / FRAME_STEP))
    x = np.concatenate([x, np.zeros((count - 1) * FRAME_STEP + FRAME_LEN - x.size)])
    frames = x[np.arange(count)[:, None] * FRAME_STEP + np.arange(FRAME_LEN)]
    power = np.square(np.abs(np.fft.rfft(frames, NFFT))) / NFFT
    eps = np.finfo(np.float64).eps
    energy = power.sum(axis=1)
    energy = np.where(energy == 0, eps, energy)
    bands = power @ mel_filterbank().T
    bands = np.where(bands == 0, eps, bands)
    cepstra = fft.dct(np.log(bands), type=2, axis=1, norm="ortho")[:, :NUM_CEPSTRA]
    cepstra *= 1.0 + 11.0 * np.sin(np.pi * np.arange(NUM_CEPSTRA) / 22.0)  # lifter 22
    cepstra[:, 0] = np.log(energy)
    return cepstra


def _median_filter(x: np.ndarray) -> np.ndarray:
    """scipy.signal.medfilt(x, 13): the median of 13 values around each, zeros beyond the ends."""
    reach = BOX_SMOOTHING // 2
    return np.median(np.lib.stride_tricks.sliding_window_view(np.pad(x, reach), BOX_SMOOTHING), axis=-1)


def face_crops(frames_THWC: np.ndarray, boxes_T4: np.ndarray) -> np.ndarray:
    """Frames [T, H, W, C] uint8 and one face box (x1, y1, x2, y2) per frame -> [T, 224, 224, C] uint8 crops, cut
    as run_pipeline.py's crop_video cuts them (see the module doc). Its smoothing, scipy's medfilt, pads the track
    with zero boxes, so the first and last 6 frames take the smallest nearby box and a track needs 7 frames."""
    boxes = np.asarray(boxes_T4, np.float64)
    assert boxes.shape == (len(frames_THWC), 4), f"one box per frame: {boxes.shape} for {len(frames_THWC)} frames"
    if len(boxes) <= BOX_SMOOTHING // 2:
        raise ValueError(f"face_crops needs a face track of at least {BOX_SMOOTHING // 2 + 1} frames (the 13-frame "
                         f"median would turn the boxes to zero); got {len(boxes)}")
    half = _median_filter(np.maximum(boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]) / 2)
    cy = _median_filter((boxes[:, 1] + boxes[:, 3]) / 2)
    cx = _median_filter((boxes[:, 0] + boxes[:, 2]) / 2)
    crops = []
    for frame, s, y, x in zip(frames_THWC, half, cy, cx):
        pad = int(s * (1 + 2 * CROP_SCALE))
        padded = np.pad(frame, ((pad, pad), (pad, pad), (0, 0)), constant_values=CROP_PAD_VALUE)
        y, x = y + pad, x + pad
        face = padded[int(y - s):int(y + s * (1 + 2 * CROP_SCALE)),
                      int(x - s * (1 + CROP_SCALE)):int(x + s * (1 + CROP_SCALE))]
        crops.append(cv2.resize(face, (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_LINEAR))
    return np.stack(crops)


def window_count(num_frames: int, num_samples: int) -> int:
    """How many 5-frame windows syncnet_python scores: min(frames, samples // 640) - 5 (0 if too short)."""
    return max(0, min(num_frames, num_samples // SAMPLES_PER_FRAME) - WINDOW_FRAMES)


def audio_windows(mfcc_TC: np.ndarray, starts: Sequence[int]) -> np.ndarray:
    """MFCC patches [N, 13, 20, 1] (cepstra x time, as the network's NHWC input) of the windows at video frames
    `starts`."""
    first = [MFCC_PER_FRAME * i for i in starts]
    return np.stack([mfcc_TC[f:f + WINDOW_MFCC].T[..., None] for f in first]).astype(np.float32)


def lip_windows(crops_THWC_rgb: np.ndarray, starts: Sequence[int]) -> np.ndarray:
    """5-frame stacks [N, 5, 224, 224, 3] of RGB crops at `starts`, turned to the BGR 0..255 floats the network was
    trained on."""
    return np.stack([crops_THWC_rgb[i:i + WINDOW_FRAMES, ..., ::-1] for i in starts]).astype(np.float32)


class FrozenBatchNorm(nn.Module):
    """torch's BatchNorm in eval mode: (x - mean) / sqrt(var + 1e-5) * scale + bias."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        mean = self.param("mean", nn.initializers.zeros, (c,))
        var = self.param("var", nn.initializers.ones, (c,))
        return (x - mean) * jax.lax.rsqrt(var + 1e-5) * scale + bias


class ConvBN(nn.Module):
    """Convolution with bias (`conv`), batch norm (`bn`), ReLU."""

    features: int
    kernel: Sequence[int]
    stride: Sequence[int] | None = None
    padding: Sequence[tuple[int, int]] | str = "VALID"
    precision: Any = PRECISION

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.Conv(self.features, tuple(self.kernel), strides=self.stride, padding=self.padding,
                    precision=self.precision, name="conv")(x)
        return nn.relu(FrozenBatchNorm(name="bn")(x))


class Head(nn.Module):
    """512 -> 512 (`fc1`, batch norm `bn`, ReLU) -> 1024 (`fc2`)."""

    precision: Any = PRECISION

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.relu(FrozenBatchNorm(name="bn")(nn.Dense(512, precision=self.precision, name="fc1")(x)))
        return nn.Dense(EMBEDDING, precision=self.precision, name="fc2")(x)


def _flat(x: jax.Array) -> jax.Array:
    assert x.shape[1:-1] == (1,) * (x.ndim - 2), f"input size leaves {x.shape[1:-1]} positions, not one"
    return x.reshape(x.shape[0], -1)


class AudioEncoder(nn.Module):
    """MFCC patches [N, 13, 20, 1] -> embeddings [N, 1024]."""

    precision: Any = PRECISION

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        block = lambda c, k, name, pad=((1, 1), (1, 1)): ConvBN(  # noqa: E731
            c, k, padding=pad, precision=self.precision, name=name)
        x = block(64, (3, 3), "conv1")(x.astype(jnp.float32))  # its 1x1 max pool changes nothing
        x = block(192, (3, 3), "conv2")(x)
        x = nn.max_pool(x, (3, 3), (1, 2))
        x = block(384, (3, 3), "conv3")(x)
        x = block(256, (3, 3), "conv4")(x)
        x = block(256, (3, 3), "conv5")(x)
        x = nn.max_pool(x, (3, 3), (2, 2))
        x = block(512, (5, 4), "conv6", "VALID")(x)
        return Head(self.precision, name="head")(_flat(x))


class LipEncoder(nn.Module):
    """5-frame BGR crops [N, 5, 224, 224, 3] with values 0..255 -> embeddings [N, 1024]."""

    precision: Any = PRECISION

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        same = ((0, 0), (1, 1), (1, 1))
        block = lambda c, k, name, stride=None, pad=same: ConvBN(  # noqa: E731
            c, k, stride, pad, precision=self.precision, name=name)
        x = block(96, (5, 7, 7), "conv1", (1, 2, 2), "VALID")(x.astype(jnp.float32))
        x = nn.max_pool(x, (1, 3, 3), (1, 2, 2))
        x = block(256, (1, 5, 5), "conv2", (1, 2, 2))(x)
        x = nn.max_pool(x, (1, 3, 3), (1, 2, 2), padding=same)
        x = block(256, (1, 3, 3), "conv3")(x)
        x = block(256, (1, 3, 3), "conv4")(x)
        x = block(256, (1, 3, 3), "conv5")(x)
        x = nn.max_pool(x, (1, 3, 3), (1, 2, 2))
        x = block(512, (1, 6, 6), "conv6", pad="VALID")(x)
        return Head(self.precision, name="head")(_flat(x))


class SyncNet(nn.Module):
    """The two encoders (`audio`, `lip`); __call__ embeds both, embed_audio and embed_lip one each."""

    precision: Any = PRECISION

    def setup(self):
        self.audio = AudioEncoder(self.precision)
        self.lip = LipEncoder(self.precision)

    def __call__(self, mfcc_N13201: jax.Array, lips_N5HWC: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.audio(mfcc_N13201), self.lip(lips_N5HWC)

    def embed_audio(self, mfcc_N13201: jax.Array) -> jax.Array:
        return self.audio(mfcc_N13201)

    def embed_lip(self, lips_N5HWC: jax.Array) -> jax.Array:
        return self.lip(lips_N5HWC)


def embed_clip(module: SyncNet, params: dict, samples: np.ndarray, crops_THWC_rgb: np.ndarray,
               batch: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """(audio, video) embeddings [N, 1024] of every window of a clip: 16 kHz samples on the int16 scale, and its
    224x224 RGB face crops at 25 fps."""
    count = window_count(len(crops_THWC_rgb), len(samples))
    if count == 0:
        raise ValueError(f"SyncNet needs at least {WINDOW_FRAMES + 1} frames ({(WINDOW_FRAMES + 1) / FPS:.2f} s) of "
                         f"video and audio; got {len(crops_THWC_rgb)} frames and {len(samples)} samples")
    cepstra = mfcc(samples)
    audio_fn = jax.jit(lambda x: module.apply({"params": params}, x, method=SyncNet.embed_audio))
    lip_fn = jax.jit(lambda x: module.apply({"params": params}, x, method=SyncNet.embed_lip))
    audio, video = [], []
    for first in range(0, count, batch):
        starts = range(first, min(count, first + batch))
        audio.append(np.asarray(audio_fn(audio_windows(cepstra, starts))))
        video.append(np.asarray(lip_fn(lip_windows(crops_THWC_rgb, starts))))
    return np.concatenate(audio), np.concatenate(video)


class SyncResult(NamedTuple):
    offset: int  # frames; positive: the video shows what the audio said that many frames earlier
    confidence: float  # median(mean distance curve) - min_dist
    min_dist: float  # the curve's minimum
    distances_TS: np.ndarray  # [windows, 2 * vshift + 1]: window i against audio window i - vshift + j


def sync_offset(audio_emb_TD: np.ndarray, video_emb_TD: np.ndarray, vshift: int = VSHIFT) -> SyncResult:
    """syncnet_python's offset search over -vshift..vshift frames (audio zero-padded at both ends)."""
    audio = np.asarray(audio_emb_TD, np.float64)
    video = np.asarray(video_emb_TD, np.float64)
    if audio.ndim != 2 or audio.shape != video.shape:
        raise ValueError(f"sync_offset needs audio and video embeddings of one shape [windows, dim]; got "
                         f"{audio.shape} and {video.shape}")
    span = 2 * vshift + 1
    padded = np.pad(audio, ((vshift, vshift), (0, 0)))
    distances = np.stack([np.linalg.norm(video - padded[j:j + len(video)] + 1e-6, axis=-1) for j in range(span)],
                         axis=1)
    curve = distances.mean(axis=0)
    best = int(np.argmin(curve))
    median = np.sort(curve)[(span - 1) // 2]  # torch.median: the lower middle value
    return SyncResult(vshift - best, float(median - curve[best]), float(curve[best]), distances)
