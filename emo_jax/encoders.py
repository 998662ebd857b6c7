"""The frozen encoders a config names: wav2vec2 (audio) and the VAE, from local folders or, for smoke tests,
random weights sampled on the host from a fixed seed (the same in every process and run, nothing compiled)."""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from emo_jax.audio.wav2vec2 import Wav2Vec2Config, Wav2Vec2Model
from emo_jax.build import vae_config
from emo_jax.errors import ConfigError
from emo_jax.interop.vae_import import load_vae
from emo_jax.interop.wav2vec2_import import load_wav2vec2
from emo_jax.models.vae import AutoencoderKL
from emo_jax.models.partitioning import random_params

RANDOM_INIT_SEED = 1234
# Each command's own flag for random encoders: the errors below reach users of both.
SMOKE_TEST_FLAGS = "for a smoke test, random encoders: emo-train --random-init-encoders, emo-generate --random-init"


def wav2vec2_config(config: ml_collections.ConfigDict) -> Wav2Vec2Config:
    """The wav2vec2 architecture config.audio.encoder describes (used when no folder is loaded)."""
    fields = {k: (tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in config.audio.encoder.items()}
    return Wav2Vec2Config(**fields)


def audio_encoder(config: ml_collections.ConfigDict, random_init: bool = False):
    """(module, params, Wav2Vec2Config) for config.audio; checks its layers/width against config.model.audio."""
    path = config.audio.wav2vec_path
    if path:
        module, params, w2v = load_wav2vec2(path)
    elif random_init:
        w2v = wav2vec2_config(config)
        module = Wav2Vec2Model(w2v)
        dummy = jnp.zeros((1, 16000), jnp.float32)
        params = random_params(jax.eval_shape(module.init, jax.random.PRNGKey(0), dummy), RANDOM_INIT_SEED)
    else:
        raise ConfigError("config.audio.wav2vec_path is empty: set --config.audio.wav2vec_path to a local "
                          f"Hugging Face wav2vec2 folder (config.json + weights); {SMOKE_TEST_FLAGS}")
    a = config.model.audio
    if (w2v.num_hidden_layers, w2v.hidden_size) != (a.layers, a.feature_dim):
        raise ConfigError(f"the wav2vec2 encoder has {w2v.num_hidden_layers} layers of width {w2v.hidden_size}, "
                          f"the model expects model.audio.layers={a.layers}, model.audio.feature_dim={a.feature_dim}")
    return module, params, w2v


def vae(config: ml_collections.ConfigDict, random_init: bool = False):
    """(AutoencoderKL, params, VAEConfig) from config.vae.path (an SD folder or its vae/ folder)."""
    vcfg = vae_config(config)
    if vcfg is None:
        raise ConfigError(f"config variant {config.get('variant')!r} has no VAE")
    path = config.vae.path
    if path:
        import os

        folder = os.path.join(path, "vae") if os.path.isdir(os.path.join(path, "vae")) else path
        module, params, loaded = load_vae(folder)
        if dataclasses.replace(loaded, scaling_factor=vcfg.scaling_factor) != vcfg:
            raise ConfigError(f"the VAE in {folder} ({loaded}) does not match config.vae ({vcfg})")
        return module, params, loaded
    if not random_init:
        raise ConfigError("config.vae.path is empty: set --config.vae.path to a local SD folder with a vae/ "
                          f"subfolder; {SMOKE_TEST_FLAGS}")
    module = AutoencoderKL(vcfg)
    size = 8 * vcfg.downsample_factor
    shapes = nn.unbox(jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3))))
    return module, random_params(shapes["params"], RANDOM_INIT_SEED + 1), vcfg
