"""EMO's small conditioning networks: audio projection, face locator, speed encoder (Hallo's names where shared)."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from emo_jax.models.layers import conv, layer_norm
from emo_jax.models.partitioning import dense_init, zeros_init


class AudioProjection(nn.Module):
    """[N, 2m+1, L, D] wav2vec features around a frame -> [N, tokens, out_dim] (Hallo's AudioProjModel layout)."""

    tokens: int = 32
    out_dim: int = 768
    hidden: int = 512
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, feats_NCLD):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, bias_init=zeros_init(("mlp",)))
        h = feats_NCLD.reshape(feats_NCLD.shape[0], -1).astype(self.dtype)
        h = nn.relu(nn.Dense(self.hidden, name="proj1", kernel_init=dense_init(("embed", "mlp")), **kw)(h))
        h = nn.relu(nn.Dense(self.hidden, name="proj2", kernel_init=dense_init(("embed", "mlp")), **kw)(h))
        h = nn.Dense(self.tokens * self.out_dim, name="proj3", kernel_init=dense_init(("embed", "mlp")), **kw)(h)
        h = h.reshape(h.shape[0], self.tokens, self.out_dim)
        return layer_norm(name="norm", dtype=self.dtype, param_dtype=self.param_dtype)(h)


class FaceLocator(nn.Module):
    """Face-region mask [B, H, W, 1] -> features added after the backbone's conv_in (zero-initialised output).

    conv_in, then per width a 3x3 conv and a stride-2 3x3 conv (`blocks.*` in Hallo's FaceLocator), then conv_out.
    """

    out_channels: int = 320
    channels: tuple[int, ...] = (16, 32, 64, 128)
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, mask_BHWC):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = nn.silu(conv(self.channels[0], name="conv_in", **kw)(mask_BHWC.astype(self.dtype)))
        for i, (c_in, c_out) in enumerate(zip(self.channels[:-1], self.channels[1:])):
            h = nn.silu(conv(c_in, name=f"blocks_{2 * i}", **kw)(h))
            h = nn.silu(conv(c_out, stride=2, name=f"blocks_{2 * i + 1}", **kw)(h))
        return conv(self.out_channels, name="conv_out", zero=True, **kw)(h)


def speed_buckets(speed_BF, centres: tuple[float, ...], radii: tuple[float, ...], context: int):
    """EMO's speed encoding: tanh((w - c_i) / r_i * 3) per bucket, for each frame and its +-context neighbours.

    Edge frames repeat the first/last speed. Returns [B, F, 2*context+1, buckets].
    """
    b, f = speed_BF.shape
    padded = jnp.concatenate([jnp.repeat(speed_BF[:, :1], context, 1), speed_BF,
                              jnp.repeat(speed_BF[:, -1:], context, 1)], axis=1)
    idx = np.arange(f)[:, None] + np.arange(2 * context + 1)[None]
    windows = padded[:, idx]
    c, r = jnp.asarray(centres, jnp.float32), jnp.asarray(radii, jnp.float32)
    return jnp.tanh((windows[..., None] - c) / r * 3.0)


class SpeedEncoder(nn.Module):
    """Per-frame head speed -> [B * F, tokens, dim] tokens that the motion modules' speed attention reads."""

    centres: tuple[float, ...]
    radii: tuple[float, ...]
    context: int = 2
    tokens: int = 4
    dim: int = 768
    hidden: int = 512
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, speed_BF):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, bias_init=zeros_init(("mlp",)))
        enc = speed_buckets(speed_BF.astype(jnp.float32), self.centres, self.radii, self.context)
        h = enc.reshape(enc.shape[0] * enc.shape[1], -1).astype(self.dtype)
        h = nn.silu(nn.Dense(self.hidden, name="proj1", kernel_init=dense_init((None, "mlp")), **kw)(h))
        h = nn.Dense(self.tokens * self.dim, name="proj2", kernel_init=dense_init(("mlp", "embed")), **kw)(h)
        h = h.reshape(h.shape[0], self.tokens, self.dim)
        return layer_norm(name="norm", dtype=self.dtype, param_dtype=self.param_dtype)(h)
