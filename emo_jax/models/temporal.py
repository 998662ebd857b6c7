"""AnimateDiff-style motion module (v2 key layout), with EMO's motion frames and speed cross-attention."""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from emo_jax.models.attention import Attention
from emo_jax.models.layers import FeedForward, group_norm, layer_norm
from emo_jax.models.partitioning import dense_init, zeros_init
from emo_jax.models.unet_config import UNetConfig, rematted


def sinusoidal_positions(max_len: int, dim: int) -> np.ndarray:
    """AnimateDiff's positional encoding: even channels sin, odd channels cos, [max_len, dim]."""
    pos = np.arange(max_len, dtype=np.float32)[:, None]
    div = np.exp(np.arange(0, dim, 2, dtype=np.float32) * (-np.log(10000.0) / dim))
    pe = np.zeros((max_len, dim), np.float32)
    pe[:, 0::2] = np.sin(pos * div)
    pe[:, 1::2] = np.cos(pos * div)
    return pe


class TemporalTransformerBlock(nn.Module):
    """Two temporal self-attentions (positions added to each one's input) and a feed-forward, pre-norm."""

    dim: int
    cfg: UNetConfig

    @nn.compact
    def __call__(self, x_MFC):
        cfg = self.cfg
        kw = dict(dtype=cfg.compute_dtype, param_dtype=cfg.weights_dtype)
        frames = x_MFC.shape[1]
        if frames > cfg.temporal_max_len:
            raise ValueError(
                f"{frames} frames (motion frames included) exceed unet.temporal_max_len={cfg.temporal_max_len}; "
                "raise it (AnimateDiff v2 uses 32) or use shorter clips")
        pe = jnp.asarray(sinusoidal_positions(cfg.temporal_max_len, self.dim)[:frames], x_MFC.dtype)
        for i in range(2):
            h = layer_norm(name=f"norms_{i}", **kw)(x_MFC) + pe
            x_MFC = x_MFC + Attention(self.dim, cfg.temporal_heads, **cfg.attention_options,
                                      name=f"attention_blocks_{i}", **kw)(h)
        return x_MFC + FeedForward(self.dim, name="ff", **kw)(layer_norm(name="ff_norm", **kw)(x_MFC))


class TemporalTransformer(nn.Module):
    """GroupNorm per frame -> Linear in -> blocks over the frame axis -> Linear out (zero-initialised)."""

    dim: int
    cfg: UNetConfig

    @nn.compact
    def __call__(self, x_BFHWC):
        cfg = self.cfg
        kw = dict(dtype=cfg.compute_dtype, param_dtype=cfg.weights_dtype)
        b, f, hgt, wid, c = x_BFHWC.shape
        h = group_norm(cfg.norm_groups, 1e-6, name="norm", **kw)(x_BFHWC.reshape(b * f, hgt, wid, c))
        h = h.reshape(b, f, hgt * wid, c).transpose(0, 2, 1, 3).reshape(b * hgt * wid, f, c)
        h = nn.Dense(self.dim, name="proj_in", kernel_init=dense_init(("embed", "mlp")),
                     bias_init=zeros_init(("mlp",)), **kw)(h)
        block_cls = rematted(TemporalTransformerBlock, cfg.remat_policy) if cfg.remat else TemporalTransformerBlock
        for i in range(cfg.temporal_layers):
            h = block_cls(self.dim, cfg, name=f"transformer_blocks_{i}")(h)
        h = nn.Dense(c, name="proj_out", kernel_init=zeros_init(("mlp", "embed")), bias_init=zeros_init(("embed",)),
                     **kw)(h)
        return h.reshape(b, hgt * wid, f, c).transpose(0, 2, 1, 3).reshape(b, f, hgt, wid, c)


class MotionModule(nn.Module):
    """Temporal attention over [motion frames ; clip frames], motion frames sliced off, with EMO's speed attention
    on the clip's frames before it (cfg.speed_before_temporal) or after it."""

    dim: int
    cfg: UNetConfig

    @nn.compact
    def __call__(self, x_NHWC, num_frames: int, motion_MHWC=None, speed_NKD=None):
        cfg = self.cfg
        n, hgt, wid, c = x_NHWC.shape
        b = n // num_frames
        x_BFHWC = x_NHWC.reshape(b, num_frames, hgt, wid, c)
        if cfg.speed_attention and cfg.speed_before_temporal:
            # Before the temporal attention, so each frame's speed reaches the attention that moves features
            # across frames. After it (as first built) a frame's speed only added to that frame's features: on the
            # demo, wrong speed labels raised a stage-3 model's denoising error 0.1-3.2%, read first 2.5-6.1%
            # (benchmarks/results/condition_use_stage3_redrawn*.json).
            x_BFHWC = x_BFHWC + self._speed(x_NHWC, speed_NKD).reshape(b, num_frames, hgt, wid, c)
        full = x_BFHWC
        n_motion = 0
        if motion_MHWC is not None:
            n_motion = motion_MHWC.shape[0] // b
            full = jnp.concatenate([motion_MHWC.reshape(b, n_motion, hgt, wid, c).astype(x_BFHWC.dtype), x_BFHWC], 1)
        delta = TemporalTransformer(self.dim, cfg, name="temporal_transformer")(full)
        x_NHWC = (x_BFHWC + delta[:, n_motion:]).reshape(n, hgt, wid, c)
        if cfg.speed_attention and not cfg.speed_before_temporal:
            x_NHWC = x_NHWC + self._speed(x_NHWC, speed_NKD)
        return x_NHWC

    def _speed(self, x_NHWC, speed_NKD):
        """The speed attention's residual [N, H, W, C]: each frame's features attend to its speed tokens."""
        cfg = self.cfg
        n, hgt, wid, c = x_NHWC.shape
        kw = dict(dtype=cfg.compute_dtype, param_dtype=cfg.weights_dtype)
        out = Attention(self.dim, cfg.temporal_heads, context_dim=cfg.speed_dim, zero_init_out=True,
                        **cfg.attention_options, name="speed_attn", **kw)(
            layer_norm(name="speed_norm", **kw)(x_NHWC.reshape(n, hgt * wid, c)), speed_NKD)
        return out.reshape(n, hgt, wid, c)
