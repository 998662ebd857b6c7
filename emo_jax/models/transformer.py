"""Spatial transformer: SD's Transformer2DModel, its blocks extended with reference- and audio-attention."""
from __future__ import annotations

import flax.linen as nn

from emo_jax.models.attention import Attention
from emo_jax.models.condition import UNetCondition
from emo_jax.models.layers import FeedForward, conv, group_norm, layer_norm
from emo_jax.models.partitioning import constrain
from emo_jax.models.unet_config import UNetConfig, rematted


class TransformerBlock(nn.Module):
    """self-attention (+ReferenceNet tokens) -> text or reference cross-attention -> audio-attention -> FF.

    Returns the block output and its self-attention input (norm1(x)): what a ReferenceNet hands the backbone.
    """

    dim: int
    cfg: UNetConfig

    @nn.compact
    def __call__(self, x_NLC, text_NSD=None, ref_NSC=None, ref_keep_N=None, audio_NKD=None, audio_keep_N=None):
        cfg = self.cfg
        kw = dict(dtype=cfg.compute_dtype, param_dtype=cfg.weights_dtype)
        attn = lambda name, **a: Attention(self.dim, cfg.heads, **cfg.attention_options,
                                           name=name, **a, **kw)
        h = layer_norm(name="norm1", **kw)(x_NLC)
        feature = h
        concat_ref = ref_NSC if cfg.reference_mode == "concat" else None
        x_NLC = x_NLC + attn("attn1")(h, extra_kv_BSC=concat_ref, extra_keep_B=ref_keep_N)
        if cfg.text_cross_attention:
            x_NLC = x_NLC + attn("attn2", context_dim=cfg.cross_attention_dim)(layer_norm(name="norm2", **kw)(x_NLC),
                                                                               text_NSD)
        elif cfg.reference_mode == "cross":
            out = attn("attn2")(layer_norm(name="norm2", **kw)(x_NLC), ref_NSC)
            if ref_keep_N is not None:
                out = out * ref_keep_N[:, None, None].astype(out.dtype)
            x_NLC = x_NLC + out
        if cfg.audio_attention:
            # Zero-initialised output: a fresh model is exactly the image model.
            out = attn("audio_attn", context_dim=cfg.audio_dim, zero_init_out=True)(
                layer_norm(name="norm_audio", **kw)(x_NLC), audio_NKD)
            if audio_keep_N is not None:
                out = out * audio_keep_N[:, None, None].astype(out.dtype)
            x_NLC = x_NLC + out
        x_NLC = x_NLC + FeedForward(self.dim, name="ff", **kw)(layer_norm(name="norm3", **kw)(x_NLC))
        return constrain(x_NLC, ("batch", "length", "act_embed")), feature


class Transformer2D(nn.Module):
    """GroupNorm -> 1x1 conv in -> transformer block -> 1x1 conv out, plus the residual.

    Returns the output and the block's self-attention input (what a ReferenceNet hands the backbone).
    """

    dim: int
    cfg: UNetConfig

    @nn.compact
    def __call__(self, x_NHWC, cond: UNetCondition, ref_NLC=None):
        cfg = self.cfg
        kw = dict(dtype=cfg.compute_dtype, param_dtype=cfg.weights_dtype)
        n, hgt, wid, c = x_NHWC.shape
        h = group_norm(cfg.norm_groups, 1e-6, name="norm", **kw)(x_NHWC)
        h = conv(self.dim, kernel=1, name="proj_in", **kw)(h).reshape(n, hgt * wid, self.dim)
        block_cls = rematted(TransformerBlock, cfg.remat_policy) if cfg.remat else TransformerBlock
        h, feature = block_cls(self.dim, cfg, name="transformer_blocks_0")(
            h, cond.text, ref_NLC, cond.ref_keep, cond.audio, cond.audio_keep)
        h = conv(c, kernel=1, name="proj_out", **kw)(h.reshape(n, hgt, wid, self.dim))
        return x_NHWC + h, feature
