"""The demo's frozen encoders as the local folders emo-prepare and emo-generate read: a random tiny wav2vec2
(Hugging Face layout) and a small AutoencoderKL trained here on the demo's frames (diffusers layout)."""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from emo_jax import encoders
from emo_jax.interop.export import vae_diffusers_config
from emo_jax.interop.keys import flax_to_torch_state
from emo_jax.interop.torch_io import save_state_dict
from emo_jax.models.vae import AutoencoderKL

# The KL term only keeps the latents near a unit Gaussian's scale; reconstruction is what the demo needs.
KL_WEIGHT = 1e-6


def _write_json(path: str, data: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)


def write_wav2vec2_folder(config: ml_collections.ConfigDict, folder: str) -> str:
    """config.audio.encoder's wav2vec2 with fixed random weights as config.json + model.safetensors.

    A random frozen encoder is what the tiny configs use without a download; its features still change with
    the sound (loudness among them), and the trainable audio projection learns what to read from them.
    """
    module, params, w2v = encoders.audio_encoder(config, random_init=True)
    os.makedirs(folder, exist_ok=True)
    # Wav2Vec2Model's parameter names are transformers' own, and keys.py's rule covers its indexed lists.
    save_state_dict(flax_to_torch_state(jax.device_get(params["params"])), os.path.join(folder, "model.safetensors"),
                    metadata={"format": "pt"})
    _write_json(os.path.join(folder, "config.json"),
                {"model_type": "wav2vec2", "architectures": ["Wav2Vec2Model"], **dataclasses.asdict(w2v)})
    return folder


def train_vae(config: ml_collections.ConfigDict, frames_NHWC: np.ndarray, seed: int = 0) -> tuple[dict, float]:
    """(params, scaling_factor) of config.vae trained to reconstruct uint8 frames; the factor makes latents unit-std.

    A random VAE decodes to noise, so a latent diffusion model on it could never show a face; the frames are the
    demo's own training crops, so the autoencoder needs to know nothing beyond them.
    """
    d = config.demo
    # The smoke-test VAE as the starting point: sampled on the host, so nothing but the step below compiles.
    module, params, _ = encoders.vae(config, random_init=True)
    x_all = np.asarray(frames_NHWC, np.float32) / 127.5 - 1.0
    tx = optax.adam(optax.cosine_decay_schedule(d.vae_lr, max(1, d.vae_steps)))
    opt_state = tx.init(params)

    def loss_fn(p: Any, x: jax.Array, key: jax.Array) -> jax.Array:
        mean, logvar = module.apply({"params": p}, x, method=AutoencoderKL.encode)
        z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape)
        recon = module.apply({"params": p}, z, method=AutoencoderKL.decode)
        kl = 0.5 * jnp.mean(jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar)
        return jnp.mean(jnp.abs(recon - x)) + KL_WEIGHT * kl

    @jax.jit
    def step(p, opt, x, key):
        loss, grads = jax.value_and_grad(loss_fn)(p, x, key)
        updates, opt = tx.update(grads, opt, p)
        return optax.apply_updates(p, updates), opt, loss

    rng = np.random.default_rng(seed)
    key = jax.random.PRNGKey(seed + 1)
    for i in range(d.vae_steps):
        batch = x_all[rng.integers(len(x_all), size=d.vae_batch)]
        params, opt_state, loss = step(params, opt_state, batch, jax.random.fold_in(key, i))
    encode = jax.jit(lambda p, x: module.apply({"params": p}, x, method=AutoencoderKL.encode)[0])
    means = np.concatenate([np.asarray(encode(params, x_all[i:i + 64])) for i in range(0, len(x_all), 64)])
    return jax.device_get(params), float(1.0 / means.std())


def write_vae_folder(config: ml_collections.ConfigDict, params: dict, scaling_factor: float, folder: str) -> str:
    """A diffusers AutoencoderKL folder (config.json + diffusion_pytorch_model.safetensors) of the given weights."""
    os.makedirs(folder, exist_ok=True)
    save_state_dict(flax_to_torch_state(params), os.path.join(folder, "diffusion_pytorch_model.safetensors"),
                    metadata={"format": "pt"})
    _write_json(os.path.join(folder, "config.json"),
                {**vae_diffusers_config(config), "scaling_factor": scaling_factor})
    return folder
