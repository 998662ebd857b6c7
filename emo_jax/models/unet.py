"""The UNet shared by the ReferenceNet and the backbone: SD1.5's UNet2DConditionModel, module for module.

Parameter names map onto diffusers' keys through emo_jax.interop.keys; a double underscore in a module name
stands for one level of diffusers' module nesting (`down_blocks_0__resnets_1` is `down_blocks.0.resnets.1`), which
keeps this file one flat, readable traversal instead of a class per block type. EMO's extra layers (reference- and
audio-attention in each transformer block, a motion module after each layer as in AnimateDiff) appear only when
the config switches them on, so `sd` mode is exactly SD1.5's UNet.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from emo_jax.models.condition import ReferenceFeatures, UNetCondition, check_keys
from emo_jax.models.layers import Downsample2D, ResnetBlock2D, TimestepEmbedding, Upsample2D, conv, group_norm
from emo_jax.models.layers import timestep_embedding
from emo_jax.models.partitioning import constrain
from emo_jax.models.temporal import MotionModule
from emo_jax.models.transformer import Transformer2D
from emo_jax.models.unet_config import UNetConfig, rematted


class UNet(nn.Module):
    cfg: UNetConfig

    def _kw(self):
        return dict(dtype=self.cfg.compute_dtype, param_dtype=self.cfg.weights_dtype)

    def _resnet(self, ch: int, name: str):
        block_cls = rematted(ResnetBlock2D, self.cfg.remat_policy) if self.cfg.remat_resnets else ResnetBlock2D
        return block_cls(ch, groups=self.cfg.norm_groups, eps=1e-5, name=name, **self._kw())

    def _attention(self, h, cond: UNetCondition, ch: int, name: str, features: dict):
        """A spatial transformer reading the ReferenceNet tokens of its own name; records its block's features."""
        ref = None
        if cond.ref_tokens is not None:
            if name not in cond.ref_tokens:
                raise ValueError(f"no ReferenceNet tokens for {name}; the ReferenceNet features come from a UNet of "
                                 f"another shape (they have {sorted(cond.ref_tokens)[:4]}...)")
            ref = cond.ref_tokens[name]
        h, features[name] = Transformer2D(ch, self.cfg, name=name)(h, cond, ref)
        return h

    def _motion_point(self, h, cond: UNetCondition, name: str, collect: bool, points: dict):
        """Where AnimateDiff puts a motion module `name`: record the features (ReferenceNet) or run the module."""
        if collect:
            points[name] = h
        elif self.cfg.temporal:
            motion = None
            if cond.motion is not None:
                if name not in cond.motion:
                    raise ValueError(f"no motion-frame features for {name}; they have {sorted(cond.motion)[:4]}...")
                motion = cond.motion[name]
            points[name] = h
            h = MotionModule(h.shape[-1], self.cfg, name=name)(h, cond.num_frames, motion, cond.speed)
        return h

    @nn.compact
    def __call__(self, x_NHWC, t_N, cond: UNetCondition | None = None, conv_in_residual=None,
                 features_only: bool = False):
        """Predicts noise for x_NHWC at timesteps t_N; with features_only, returns the ReferenceFeatures."""
        cfg, kw = self.cfg, self._kw()
        cond = UNetCondition() if cond is None else cond
        if features_only:
            cond = cond.replace(ref_tokens=None)
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
        tokens: dict = {}  # transformer name -> its self-attention input
        points: dict = {}  # motion-module name -> hidden states there
        motion_point = lambda h, name: self._motion_point(h, cond, name, features_only, points)  # noqa: E731
        n_levels = len(cfg.block_out_channels)
        for i, ch in enumerate(cfg.block_out_channels):
            for j in range(cfg.layers_per_block):
                h = self._resnet(ch, f"down_blocks_{i}__resnets_{j}")(h, temb)
                if cfg.attention_levels[i]:
                    h = self._attention(h, cond, ch, f"down_blocks_{i}__attentions_{j}", tokens)
                h = motion_point(h, f"down_blocks_{i}__motion_modules_{j}")
                skips.append(h)
            if i < n_levels - 1:
                h = Downsample2D(ch, name=f"down_blocks_{i}__downsamplers_0", **kw)(h)
                skips.append(h)

        mid = cfg.block_out_channels[-1]
        h = self._resnet(mid, "mid_block__resnets_0")(h, temb)
        h = self._attention(h, cond, mid, "mid_block__attentions_0", tokens)
        h = motion_point(h, "mid_block__motion_modules_0")
        h = self._resnet(mid, "mid_block__resnets_1")(h, temb)

        rev_channels = list(reversed(cfg.block_out_channels))
        rev_attention = list(reversed(cfg.attention_levels))
        for i, ch in enumerate(rev_channels):
            for j in range(cfg.layers_per_block + 1):
                h = jnp.concatenate([h, skips.pop()], axis=-1)
                h = self._resnet(ch, f"up_blocks_{i}__resnets_{j}")(h, temb)
                if rev_attention[i]:
                    h = self._attention(h, cond, ch, f"up_blocks_{i}__attentions_{j}", tokens)
                h = motion_point(h, f"up_blocks_{i}__motion_modules_{j}")
            if i < n_levels - 1:
                h = Upsample2D(ch, name=f"up_blocks_{i}__upsamplers_0", **kw)(h)
        assert not skips, "every skip connection must be consumed"

        if features_only:
            return ReferenceFeatures(tokens=tokens, motion=points)
        check_keys("the ReferenceNet tokens", cond.ref_tokens, list(tokens))
        check_keys("the motion-frame features", cond.motion, list(points))
        h = nn.silu(group_norm(cfg.norm_groups, 1e-5, name="conv_norm_out", **kw)(h))
        return conv(cfg.out_channels, name="conv_out", **kw)(h).astype(jnp.float32)
