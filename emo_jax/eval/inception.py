"""FID's Inception-v3 (pytorch-fid's `fid_inception_v3`) as a Flax module, NHWC, giving the 2048-wide pool3
features that FID is computed on.

The network is TensorFlow's 2015-12-05 Inception graph as pytorch-fid ports it (weights file
pt_inception-2015-12-05-6726825d.pth, loaded by emo_jax/interop/inception_import.py), which differs from
torchvision's Inception-v3 in its mixed blocks: the average pools of Mixed_5b-5d, Mixed_6b-6e and Mixed_7b leave the
padding out of the count (FIDInceptionA, FIDInceptionC, FIDInceptionE_1), and Mixed_7c pools by max
(FIDInceptionE_2). Every convolution is bias-free, followed by batch norm in inference mode (eps 1e-3) and a ReLU.

Preprocessing is pytorch-fid's: images in [0, 1] are resized to 299x299 bilinearly with half-pixel centres and no
antialiasing (F.interpolate(align_corners=False)), then scaled to [-1, 1]. The features go into FeatureStats
(emo_jax/eval/frechet.py); emo-eval's per-frame FID is emo_jax/eval/fid.py.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

SIZE = 299
FEATURES = 2048
# FID is compared against statistics computed in float32; reduced-precision convolutions (TF32, bf16 passes)
# would move the features by more than the differences FID is used to tell apart.
PRECISION = jax.lax.Precision.HIGHEST


def resize_for_inception(images_NHWC: jax.Array) -> jax.Array:
    """Bilinear resize to 299x299 as torch's F.interpolate(mode='bilinear', align_corners=False) does it."""
    n, h, w, c = images_NHWC.shape
    if (h, w) == (SIZE, SIZE):
        return images_NHWC
    return jax.image.resize(images_NHWC, (n, SIZE, SIZE, c), method="linear", antialias=False)


class FrozenBatchNorm(nn.Module):
    """Batch norm with its running statistics as parameters, named as torch's BatchNorm2d buffers."""

    eps: float = 1e-3

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        mean = self.param("running_mean", nn.initializers.zeros, (c,))
        var = self.param("running_var", nn.initializers.ones, (c,))
        return (x - mean) * (scale * jax.lax.rsqrt(var + self.eps)) + bias


class BasicConv(nn.Module):
    """Bias-free convolution, batch norm, ReLU (torchvision's BasicConv2d: `conv`, `bn`)."""

    features: int
    kernel: tuple[int, int]
    stride: int = 1
    padding: tuple[int, int] = (0, 0)
    precision: Any = PRECISION

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        (ph, pw) = self.padding
        x = nn.Conv(self.features, self.kernel, strides=self.stride, padding=((ph, ph), (pw, pw)), use_bias=False,
                    precision=self.precision, name="conv")(x)
        return nn.relu(FrozenBatchNorm(name="bn")(x))


def _avg_pool_3x3(x: jax.Array) -> jax.Array:
    """TensorFlow's same-padded 3x3 average: padding is left out of the count."""
    return nn.avg_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3(x: jax.Array, stride: int, padding: int) -> jax.Array:
    return nn.max_pool(x, (3, 3), (stride, stride), padding=((padding, padding), (padding, padding)))


class InceptionA(nn.Module):
    """Mixed_5b-5d: 1x1, 5x5, double 3x3 and pooled branches at 35x35."""

    pool_features: int
    precision: Any = PRECISION

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = functools.partial(BasicConv, precision=self.precision)
        b1 = conv(64, (1, 1), name="branch1x1")(x)
        b5 = conv(48, (1, 1), name="branch5x5_1")(x)
        b5 = conv(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
        b3 = conv(64, (1, 1), name="branch3x3dbl_1")(x)
        b3 = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
        b3 = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
        bp = conv(self.pool_features, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    """Mixed_6a: 35x35 -> 17x17."""

    precision: Any = PRECISION

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = functools.partial(BasicConv, precision=self.precision)
        b3 = conv(384, (3, 3), stride=2, name="branch3x3")(x)
        bd = conv(64, (1, 1), name="branch3x3dbl_1")(x)
        bd = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = conv(96, (3, 3), stride=2, name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, _max_pool_3x3(x, 2, 0)], axis=-1)


class InceptionC(nn.Module):
    """Mixed_6b-6e: factorised 7x7 branches at 17x17."""

    channels_7x7: int
    precision: Any = PRECISION

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = functools.partial(BasicConv, precision=self.precision)
        c7 = self.channels_7x7
        b1 = conv(192, (1, 1), name="branch1x1")(x)
        b7 = conv(c7, (1, 1), name="branch7x7_1")(x)
        b7 = conv(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
        b7 = conv(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
        bd = conv(c7, (1, 1), name="branch7x7dbl_1")(x)
        bd = conv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
        bd = conv(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
        bd = conv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
        bd = conv(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
        bp = conv(192, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    """Mixed_7a: 17x17 -> 8x8."""

    precision: Any = PRECISION

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = functools.partial(BasicConv, precision=self.precision)
        b3 = conv(192, (1, 1), name="branch3x3_1")(x)
        b3 = conv(320, (3, 3), stride=2, name="branch3x3_2")(b3)
        b7 = conv(192, (1, 1), name="branch7x7x3_1")(x)
        b7 = conv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = conv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = conv(192, (3, 3), stride=2, name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool_3x3(x, 2, 0)], axis=-1)


class InceptionE(nn.Module):
    """Mixed_7b (average pool) and Mixed_7c (max pool, as the FID graph has it) at 8x8."""

    max_pool: bool
    precision: Any = PRECISION

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = functools.partial(BasicConv, precision=self.precision)
        b1 = conv(320, (1, 1), name="branch1x1")(x)
        b3 = conv(384, (1, 1), name="branch3x3_1")(x)
        b3 = jnp.concatenate([conv(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                              conv(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3)], axis=-1)
        bd = conv(448, (1, 1), name="branch3x3dbl_1")(x)
        bd = conv(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate([conv(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
                              conv(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd)], axis=-1)
        pooled = _max_pool_3x3(x, 1, 1) if self.max_pool else _avg_pool_3x3(x)
        bp = conv(192, (1, 1), name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class FIDInception(nn.Module):
    """Images [N, H, W, 3] in [0, 1] -> pool3 features [N, 2048] (float32)."""

    precision: Any = PRECISION

    @nn.compact
    def __call__(self, images_NHWC: jax.Array) -> jax.Array:
        conv = functools.partial(BasicConv, precision=self.precision)
        p = dict(precision=self.precision)
        x = 2.0 * resize_for_inception(images_NHWC.astype(jnp.float32)) - 1.0
        x = conv(32, (3, 3), stride=2, name="Conv2d_1a_3x3")(x)
        x = conv(32, (3, 3), name="Conv2d_2a_3x3")(x)
        x = conv(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
        x = _max_pool_3x3(x, 2, 0)
        x = conv(80, (1, 1), name="Conv2d_3b_1x1")(x)
        x = conv(192, (3, 3), name="Conv2d_4a_3x3")(x)
        x = _max_pool_3x3(x, 2, 0)
        x = InceptionA(32, **p, name="Mixed_5b")(x)
        x = InceptionA(64, **p, name="Mixed_5c")(x)
        x = InceptionA(64, **p, name="Mixed_5d")(x)
        x = InceptionB(**p, name="Mixed_6a")(x)
        for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
            x = InceptionC(c7, **p, name=name)(x)
        x = InceptionD(**p, name="Mixed_7a")(x)
        x = InceptionE(max_pool=False, **p, name="Mixed_7b")(x)
        x = InceptionE(max_pool=True, **p, name="Mixed_7c")(x)
        return jnp.mean(x, axis=(1, 2))
