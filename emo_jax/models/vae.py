"""Stable Diffusion's VAE (diffusers' AutoencoderKL) in Flax: NHWC frames in [-1, 1] <-> latent moments."""
from __future__ import annotations

import dataclasses
import json
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from emo_jax.errors import CheckpointError
from emo_jax.models.attention import Attention
from emo_jax.models.layers import Downsample2D, ResnetBlock2D, Upsample2D, conv, group_norm
from emo_jax.paths import require_file

# diffusers hard-codes eps 1e-6 for every norm inside the VAE (resnets, mid-block attention, conv_norm_out).
EPS = 1e-6

# config.json values this implementation does not build; anything else there is rejected, not ignored.
_REQUIRED_VALUES = {
    "act_fn": "silu",
    "use_quant_conv": True,
    "use_post_quant_conv": True,
    "mid_block_add_attention": True,
    "shift_factor": None,
    "latents_mean": None,
    "latents_std": None,
}


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """The shape of an SD-style AutoencoderKL; defaults are SD1.5's VAE."""

    in_channels: int = 3
    out_channels: int = 3
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    latent_channels: int = 4
    norm_groups: int = 32
    scaling_factor: float = 0.18215

    def __post_init__(self):
        for c in self.block_out_channels:
            if c % self.norm_groups:
                raise ValueError(f"VAE block_out_channels entry {c} must divide by norm_groups "
                                 f"{self.norm_groups}")

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    @classmethod
    def from_diffusers_json(cls, path: str) -> VAEConfig:
        """Reads a diffusers AutoencoderKL config.json, rejecting options this implementation does not build."""
        require_file(path, "VAE config", "a diffusers vae/ folder holds a config.json", CheckpointError)
        try:
            with open(path) as f:
                raw = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise CheckpointError(f"cannot read VAE config {path!r} as JSON: {e}") from e
        if raw.get("_class_name", "AutoencoderKL") != "AutoencoderKL":
            raise CheckpointError(f"{path}: _class_name is {raw['_class_name']!r}; only AutoencoderKL is supported")
        for key, want in _REQUIRED_VALUES.items():
            if key in raw and raw[key] != want:
                raise CheckpointError(f"{path}: {key}={raw[key]!r} is not supported (only {want!r}, as in SD's VAE)")
        missing = [k for k in ("block_out_channels", "layers_per_block", "latent_channels", "norm_num_groups")
                   if k not in raw]
        if missing:
            raise CheckpointError(f"{path}: missing config keys {missing}; is this a diffusers AutoencoderKL config?")
        levels = len(raw["block_out_channels"])
        for key, want in (("down_block_types", "DownEncoderBlock2D"), ("up_block_types", "UpDecoderBlock2D")):
            if key in raw and list(raw[key]) != [want] * levels:
                raise CheckpointError(f"{path}: {key}={raw[key]!r} is not supported; expected {levels} x {want!r}")
        try:
            return cls(
                in_channels=int(raw.get("in_channels", 3)),
                out_channels=int(raw.get("out_channels", 3)),
                block_out_channels=tuple(int(c) for c in raw["block_out_channels"]),
                layers_per_block=int(raw["layers_per_block"]),
                latent_channels=int(raw["latent_channels"]),
                norm_groups=int(raw["norm_num_groups"]),
                scaling_factor=float(raw.get("scaling_factor", 0.18215)),
            )
        except ValueError as e:
            raise CheckpointError(f"{path}: {e}") from e


class VAEAttention(nn.Module):
    """Single-head self-attention over all pixels with a GroupNorm in front and a residual around it."""

    channels: int
    groups: int
    impl: str = "xla"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def setup(self):
        self.group_norm = group_norm(self.groups, EPS, dtype=self.dtype, param_dtype=self.param_dtype)
        self.attn = Attention(self.channels, heads=1, qkv_bias=True, impl=self.impl,
                              dtype=self.dtype, param_dtype=self.param_dtype)
        # diffusers keeps group_norm beside to_q/to_k/to_v/to_out in one module; sharing the scope keeps that layout.
        nn.share_scope(self, self.attn)

    def __call__(self, x_NHWC):
        n, h, w, c = x_NHWC.shape
        tokens_NLC = self.group_norm(x_NHWC).reshape(n, h * w, c)
        return x_NHWC + self.attn(tokens_NLC).reshape(n, h, w, c)


class MidBlock(nn.Module):
    """resnet -> attention -> resnet at the lowest resolution (diffusers' UNetMidBlock2D without time embedding)."""

    channels: int
    groups: int
    impl: str = "xla"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_NHWC):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = ResnetBlock2D(self.channels, self.groups, EPS, name="resnets_0", **kw)(x_NHWC)
        x = VAEAttention(self.channels, self.groups, self.impl, name="attentions_0", **kw)(x)
        return ResnetBlock2D(self.channels, self.groups, EPS, name="resnets_1", **kw)(x)


class DownEncoderBlock2D(nn.Module):
    """Resnets at one resolution, then (except at the last level) a stride-2 conv with (0, 1) padding."""

    channels: int
    num_layers: int
    groups: int
    add_downsample: bool
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_NHWC):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        for i in range(self.num_layers):
            x_NHWC = ResnetBlock2D(self.channels, self.groups, EPS, name=f"resnets_{i}", **kw)(x_NHWC)
        if self.add_downsample:
            x_NHWC = Downsample2D(self.channels, pad_right=True, name="downsamplers_0", **kw)(x_NHWC)
        return x_NHWC


class UpDecoderBlock2D(nn.Module):
    """Resnets at one resolution, then (except at the last level) nearest x2 upsampling and a conv."""

    channels: int
    num_layers: int
    groups: int
    add_upsample: bool
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_NHWC):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        for i in range(self.num_layers):
            x_NHWC = ResnetBlock2D(self.channels, self.groups, EPS, name=f"resnets_{i}", **kw)(x_NHWC)
        if self.add_upsample:
            x_NHWC = Upsample2D(self.channels, name="upsamplers_0", **kw)(x_NHWC)
        return x_NHWC


class Encoder(nn.Module):
    """Frames [N, H, W, 3] -> moments [N, H/f, W/f, 2 * latent_channels] (before quant_conv)."""

    config: VAEConfig
    impl: str = "xla"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_NHWC):
        cfg, kw = self.config, dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = conv(cfg.block_out_channels[0], name="conv_in", **kw)(x_NHWC)
        last = len(cfg.block_out_channels) - 1
        for i, ch in enumerate(cfg.block_out_channels):
            x = DownEncoderBlock2D(ch, cfg.layers_per_block, cfg.norm_groups, add_downsample=i < last,
                                   name=f"down_blocks_{i}", **kw)(x)
        x = MidBlock(cfg.block_out_channels[-1], cfg.norm_groups, self.impl, name="mid_block", **kw)(x)
        x = nn.silu(group_norm(cfg.norm_groups, EPS, name="conv_norm_out", **kw)(x))
        return conv(2 * cfg.latent_channels, name="conv_out", **kw)(x)


class Decoder(nn.Module):
    """Latents [N, h, w, latent_channels] (after post_quant_conv) -> frames [N, h*f, w*f, 3]."""

    config: VAEConfig
    impl: str = "xla"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, z_NHWC):
        cfg, kw = self.config, dict(dtype=self.dtype, param_dtype=self.param_dtype)
        channels = cfg.block_out_channels[::-1]
        x = conv(channels[0], name="conv_in", **kw)(z_NHWC)
        x = MidBlock(channels[0], cfg.norm_groups, self.impl, name="mid_block", **kw)(x)
        for i, ch in enumerate(channels):
            # The decoder has one resnet more per level than the encoder (diffusers: layers_per_block + 1).
            x = UpDecoderBlock2D(ch, cfg.layers_per_block + 1, cfg.norm_groups,
                                 add_upsample=i < len(channels) - 1, name=f"up_blocks_{i}", **kw)(x)
        x = nn.silu(group_norm(cfg.norm_groups, EPS, name="conv_norm_out", **kw)(x))
        return conv(cfg.out_channels, name="conv_out", **kw)(x)


class AutoencoderKL(nn.Module):
    """encode: frames in [-1, 1] -> (mean, logvar); decode: unscaled latents -> frames. NHWC throughout."""

    config: VAEConfig
    attention_impl: str = "xla"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def setup(self):
        cfg, kw = self.config, dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.encoder = Encoder(cfg, self.attention_impl, **kw)
        self.decoder = Decoder(cfg, self.attention_impl, **kw)
        self.quant_conv = conv(2 * cfg.latent_channels, kernel=1, **kw)
        self.post_quant_conv = conv(cfg.latent_channels, kernel=1, **kw)

    def encode(self, x_NHWC: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The diagonal Gaussian's mean and log-variance (clamped to [-30, 20] as diffusers does), in float32."""
        moments = self.quant_conv(self.encoder(x_NHWC)).astype(jnp.float32)
        mean, logvar = jnp.split(moments, 2, axis=-1)
        return mean, jnp.clip(logvar, -30.0, 20.0)

    def decode(self, z_NHWC: jax.Array) -> jax.Array:
        """Frames (roughly in [-1, 1], not clipped) from latents that are NOT multiplied by scaling_factor."""
        return self.decoder(self.post_quant_conv(z_NHWC)).astype(jnp.float32)

    def __call__(self, x_NHWC: jax.Array) -> jax.Array:
        """Reconstruction from the mean; its main use is `init`, which must reach every parameter."""
        mean, _ = self.encode(x_NHWC)
        return self.decode(mean)
