"""UNet/VAE building blocks named like diffusers' modules so that checkpoints map one to one."""
from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from emo_jax.models.partitioning import conv_init, dense_init, ones_init, zeros_init


def conv(features: int, kernel: int = 3, stride: int = 1, name: str | None = None, zero: bool = False,
         dtype: Any = jnp.float32, param_dtype: Any = jnp.float32) -> Conv2D:
    """A 2D convolution with torch's symmetric padding (kernel // 2)."""
    pad = kernel // 2
    return Conv2D(features, kernel, stride, ((pad, pad), (pad, pad)), zero=zero, name=name, dtype=dtype,
                  param_dtype=param_dtype)


# Outputs with fewer pixels than this run as one matmul over gathered patches instead of XLA's convolution: on
# a CPU, XLA ran a 3x3 conv of [24, 2, 2, 256] at 9 GFLOP/s (12.9 ms) and the same patches matmul in 1.0 ms;
# from 4x4 up its convolution is as fast or faster (benchmarks/cpu_shapes.py). SD1.5 at 512 px never gets there
# (its smallest level is 8x8); small latents do.
PATCHES_BELOW_PIXELS = 16


class Conv2D(nn.Module):
    """flax.linen.Conv's parameters ("kernel" [k, k, in, out], "bias" [out]) and result, NHWC, with explicit
    padding; an output smaller than PATCHES_BELOW_PIXELS is computed as a matmul over its k x k patches."""

    features: int
    kernel: int = 3
    stride: int = 1
    padding: tuple[tuple[int, int], tuple[int, int]] = ((1, 1), (1, 1))
    zero: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_NHWC):
        k, s = self.kernel, self.stride
        kinit = zeros_init((None, None, "conv_in", "conv_out")) if self.zero else conv_init()
        kernel = self.param("kernel", kinit, (k, k, x_NHWC.shape[-1], self.features), self.param_dtype)
        bias = self.param("bias", zeros_init(("conv_out",)), (self.features,), self.param_dtype)
        x, kernel, bias = (jnp.asarray(a, self.dtype) for a in (x_NHWC, kernel, bias))
        (top, bottom), (left, right) = self.padding
        out_h = (x.shape[1] + top + bottom - k) // s + 1
        out_w = (x.shape[2] + left + right - k) // s + 1
        if k > 1 and out_h * out_w < PATCHES_BELOW_PIXELS:
            padded = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
            patches = jnp.concatenate([padded[:, i:i + s * (out_h - 1) + 1:s, j:j + s * (out_w - 1) + 1:s]
                                       for i in range(k) for j in range(k)], axis=-1)
            y = patches @ kernel.reshape(-1, self.features)
        else:
            y = jax.lax.conv_general_dilated(x, kernel, (s, s), self.padding,
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + bias


def group_norm(groups: int, eps: float, name: str | None = None, dtype: Any = jnp.float32,
               param_dtype: Any = jnp.float32) -> nn.GroupNorm:
    # Two-pass variance: the fast E[x^2]-E[x]^2 form loses the 1e-4 parity with torch on large activations.
    return nn.GroupNorm(num_groups=groups, epsilon=eps, name=name, dtype=dtype, param_dtype=param_dtype,
                        use_fast_variance=False, scale_init=ones_init(("norm",)), bias_init=zeros_init(("norm",)))


def layer_norm(eps: float = 1e-5, name: str | None = None, dtype: Any = jnp.float32,
               param_dtype: Any = jnp.float32) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=eps, name=name, dtype=dtype, param_dtype=param_dtype, use_fast_variance=False,
                        scale_init=ones_init(("norm",)), bias_init=zeros_init(("norm",)))


def timestep_embedding(t_B: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
    """Sinusoidal embedding as SD1.5 uses it (flip_sin_to_cos=True, downscale_freq_shift=0): [cos, sin]."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = jnp.asarray(t_B, jnp.float32)[:, None] * freqs[None]
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


class TimestepEmbedding(nn.Module):
    """linear_1 -> silu -> linear_2 (diffusers' TimestepEmbedding)."""

    dim: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        dense = functools.partial(nn.Dense, self.dim, dtype=self.dtype, param_dtype=self.param_dtype,
                                  kernel_init=dense_init(("embed", "mlp")), bias_init=zeros_init(("mlp",)))
        return dense(name="linear_2")(nn.silu(dense(name="linear_1")(x)))


class ResnetBlock2D(nn.Module):
    """GroupNorm-SiLU-conv twice, with an optional time embedding added in between (diffusers' ResnetBlock2D)."""

    out_channels: int
    groups: int = 32
    eps: float = 1e-5
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_NHWC, temb_NE=None):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = nn.silu(group_norm(self.groups, self.eps, name="norm1", **kw)(x_NHWC))
        h = conv(self.out_channels, name="conv1", **kw)(h)
        if temb_NE is not None:
            temb = nn.Dense(self.out_channels, name="time_emb_proj", kernel_init=dense_init(("mlp", "conv_out")),
                            bias_init=zeros_init(("conv_out",)), **kw)(nn.silu(temb_NE))
            h = h + temb[:, None, None, :]
        h = nn.silu(group_norm(self.groups, self.eps, name="norm2", **kw)(h))
        h = conv(self.out_channels, name="conv2", **kw)(h)
        if x_NHWC.shape[-1] != self.out_channels:
            x_NHWC = conv(self.out_channels, kernel=1, name="conv_shortcut", **kw)(x_NHWC)
        return x_NHWC + h


class Downsample2D(nn.Module):
    """Stride-2 3x3 conv; `pad_right` gives the VAE's asymmetric (0, 1) padding instead of SD's (1, 1)."""

    channels: int
    pad_right: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_NHWC):
        padding = ((0, 1), (0, 1)) if self.pad_right else ((1, 1), (1, 1))
        return Conv2D(self.channels, 3, 2, padding, name="conv", dtype=self.dtype,
                      param_dtype=self.param_dtype)(x_NHWC)


class Upsample2D(nn.Module):
    """Nearest-neighbour x2 then a 3x3 conv."""

    channels: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_NHWC):
        x = jnp.repeat(jnp.repeat(x_NHWC, 2, axis=1), 2, axis=2)
        return conv(self.channels, name="conv", dtype=self.dtype, param_dtype=self.param_dtype)(x)


class GEGLU(nn.Module):
    """Linear to 2x the inner width, split into value and gate, value * gelu(gate)."""

    inner: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        h = nn.Dense(self.inner * 2, name="proj", dtype=self.dtype, param_dtype=self.param_dtype,
                     kernel_init=dense_init(("embed", "mlp")), bias_init=zeros_init(("mlp",)))(x)
        value, gate = jnp.split(h, 2, axis=-1)
        return value * nn.gelu(gate, approximate=False)


class FeedForward(nn.Module):
    """diffusers' FeedForward with GEGLU: net.0 (GEGLU), net.2 (Linear back to the model width)."""

    dim: int
    mult: int = 4
    zero_init_out: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        h = GEGLU(self.dim * self.mult, name="net_0", dtype=self.dtype, param_dtype=self.param_dtype)(x)
        out_init = zeros_init(("mlp", "embed")) if self.zero_init_out else dense_init(("mlp", "embed"))
        return nn.Dense(self.dim, name="net_2", dtype=self.dtype, param_dtype=self.param_dtype,
                        kernel_init=out_init, bias_init=zeros_init(("embed",)))(h)
