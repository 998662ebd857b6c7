"""Builds the networks a config describes, and their parameter shapes without allocating memory."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from emo_jax.config import model_config, section, unet_config
from emo_jax.models.condition import UNetCondition
from emo_jax.models.emo import EMO, example_inputs
from emo_jax.models.unet import UNet
from emo_jax.models.vae import AutoencoderKL, VAEConfig


def vae_config(config: ml_collections.ConfigDict) -> VAEConfig | None:
    """The VAEConfig of the config's `vae` section (None where the config has no VAE: the sd variant)."""
    v = config.get("vae")
    return None if v is None else section(VAEConfig, v, "vae", ignore=("path",))


def train_frames(config: ml_collections.ConfigDict) -> int:
    """Frames per training example: one in stage 1 (images) and for the sd UNet, a clip in stages 2-3."""
    return 1 if config.train.stage in (0, 1) else config.model.clip_frames


def build_model(config: ml_collections.ConfigDict, batch: int = 1, frames: int | None = None):
    """(module, init kwargs of zeros): the EMO network, or in `sd` mode the plain SD1.5 UNet."""
    m = config.model
    if m.mode == "sd":
        u = unet_config(config)
        size = m.latent_size
        inputs = {"x_NHWC": jnp.zeros((batch, size, size, u.in_channels)), "t_N": jnp.zeros((batch,), jnp.int32),
                  "cond": UNetCondition(text=jnp.zeros((batch, 77, u.cross_attention_dim)))}
        return UNet(u), inputs
    if m.mode != "emo":
        raise ValueError(f"model.mode must be 'emo' or 'sd', not {m.mode!r}")
    mc = model_config(config)
    frames = train_frames(config) if frames is None else frames
    return EMO(mc), example_inputs(mc, batch, frames, m.latent_size)


def abstract_params(config: ml_collections.ConfigDict) -> dict:
    """Parameter shapes (jax.ShapeDtypeStruct) of the model and, under 'vae', of the VAE when the config has one."""
    model, inputs = build_model(config)
    params = nn.unbox(jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), **inputs))["params"])
    if config.model.mode == "sd":
        params = {"backbone": params}
    vcfg = vae_config(config)
    if vcfg is not None:
        size = config.model.latent_size * vcfg.downsample_factor
        vae = AutoencoderKL(vcfg)
        params["vae"] = jax.eval_shape(lambda: vae.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3))))["params"]
        params["vae"] = nn.unbox(params["vae"])
    return params
