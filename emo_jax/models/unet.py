"""The UNet shared by the ReferenceNet and the backbone: SD1.5's UNet2DConditionModel, module for module.

Parameter names map onto diffusers' keys through emo_jax.interop.keys; a double underscore in a module name
stands for one level of diffusers' module nesting (`down_blocks_0__resnets_1` is `down_blocks.0.resnets.1`), which
keeps this file one flat, readable traversal instead of a class per block type. EMO's extra layers (reference- and
audio-attention in each transformer block, a motion module after each layer as in AnimateDiff) appear only when
the config switches them on, so `sd` mode is exactly SD1.5's UNet.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from emo_jax.models.layers import Downsample2D, ResnetBlock2D, TimestepEmbedding, Upsample2D, conv, group_norm
from emo_jax.models.layers import timestep_embedding
from emo_jax.models.partitioning import constrain
from emo_jax.models.temporal import MotionModule
from emo_jax.models.transformer import Transformer2D
from emo_jax.models.unet_config import UNetConfig


class _Context:
    """Per-call conditioning that the layers consume in traversal order (ReferenceNet and backbone agree on it)."""

    def __init__(self, cond: dict, collect: bool):
        self.cond = dict(cond)
        if self.cond.get("ref_tokens") is not None:
            self.cond["ref_tokens"] = list(self.cond["ref_tokens"])
        self.motion = list(cond.get("motion") or [])
        self.collect = collect
        self.motion_points: list[Any] = []


_RematResnetBlock2D = nn.remat(ResnetBlock2D)


class UNet(nn.Module):
    cfg: UNetConfig

    def _kw(self):
        return dict(dtype=self.cfg.compute_dtype, param_dtype=self.cfg.weights_dtype)

    def _resnet(self, ch: int, name: str):
        block_cls = _RematResnetBlock2D if self.cfg.remat_resnets else ResnetBlock2D
        return block_cls(ch, groups=self.cfg.norm_groups, eps=1e-5, name=name, **self._kw())

    def _motion_point(self, h, ctx: _Context, block: str, j: int):
        """Where AnimateDiff puts a motion module: record the features (ReferenceNet) or run the module."""
        if ctx.collect:
            ctx.motion_points.append(h)
        elif self.cfg.temporal:
            motion = ctx.motion.pop(0) if ctx.motion else None
            h = MotionModule(h.shape[-1], self.cfg, name=f"{block}__motion_modules_{j}")(
                h, ctx.cond["num_frames"], motion, ctx.cond.get("speed"))
        return h

    @nn.compact
    def __call__(self, x_NHWC, t_N, cond: dict | None = None, conv_in_residual=None, features_only: bool = False):
        """Predicts noise for x_NHWC at timesteps t_N; with features_only, returns the ReferenceNet features.

        cond: text [N, S, D]; ref_tokens (list, one [N, L, C] per transformer block); ref_keep [N] bool;
        audio [N, K, D]; audio_keep [N]; num_frames (frames per video, N = B * num_frames); motion (list of
        [B * n, H, W, C], one per motion module); speed [N, K, D].
        """
        cfg, kw = self.cfg, self._kw()
        ctx = _Context(cond or {}, collect=features_only)
        if features_only:
            ctx.cond["ref_tokens"] = None
        factor = cfg.downsample_factor
        if x_NHWC.shape[1] % factor or x_NHWC.shape[2] % factor:
            raise ValueError(f"latent size {x_NHWC.shape[1:3]} must divide by the UNet's downsampling {factor} "
                             f"(image size by {factor * 8} with the SD VAE)")
        ch0 = cfg.block_out_channels[0]
        temb = timestep_embedding(jnp.broadcast_to(t_N, (x_NHWC.shape[0],)), ch0).astype(cfg.compute_dtype)
        temb = TimestepEmbedding(ch0 * 4, name="time_embedding", **kw)(temb)

        h = conv(ch0, name="conv_in", **kw)(x_NHWC.astype(cfg.compute_dtype))
        if conv_in_residual is not None:
            h = h + conv_in_residual.astype(h.dtype)
        h = constrain(h, ("batch", None, None, "act_embed"))
        skips = [h]
        n_levels = len(cfg.block_out_channels)
        for i, ch in enumerate(cfg.block_out_channels):
            for j in range(cfg.layers_per_block):
                h = self._resnet(ch, f"down_blocks_{i}__resnets_{j}")(h, temb)
                if cfg.attention_levels[i]:
                    h = Transformer2D(ch, cfg, name=f"down_blocks_{i}__attentions_{j}")(h, ctx.cond)
                h = self._motion_point(h, ctx, f"down_blocks_{i}", j)
                skips.append(h)
            if i < n_levels - 1:
                h = Downsample2D(ch, name=f"down_blocks_{i}__downsamplers_0", **kw)(h)
                skips.append(h)

        mid = cfg.block_out_channels[-1]
        h = self._resnet(mid, "mid_block__resnets_0")(h, temb)
        h = Transformer2D(mid, cfg, name="mid_block__attentions_0")(h, ctx.cond)
        h = self._motion_point(h, ctx, "mid_block", 0)
        h = self._resnet(mid, "mid_block__resnets_1")(h, temb)

        rev_channels = list(reversed(cfg.block_out_channels))
        rev_attention = list(reversed(cfg.attention_levels))
        for i, ch in enumerate(rev_channels):
            for j in range(cfg.layers_per_block + 1):
                h = jnp.concatenate([h, skips.pop()], axis=-1)
                h = self._resnet(ch, f"up_blocks_{i}__resnets_{j}")(h, temb)
                if rev_attention[i]:
                    h = Transformer2D(ch, cfg, name=f"up_blocks_{i}__attentions_{j}")(h, ctx.cond)
                h = self._motion_point(h, ctx, f"up_blocks_{i}", j)
            if i < n_levels - 1:
                h = Upsample2D(ch, name=f"up_blocks_{i}__upsamplers_0", **kw)(h)
        assert not skips and not ctx.motion, "every skip connection and motion feature must be consumed"

        if features_only:
            return {"ref_tokens": ctx.cond.get("features", []), "motion": ctx.motion_points}
        h = nn.silu(group_norm(cfg.norm_groups, 1e-5, name="conv_norm_out", **kw)(h))
        return conv(cfg.out_channels, name="conv_out", **kw)(h).astype(jnp.float32)
