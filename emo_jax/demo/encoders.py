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


# Spectral targets of the wav2vec2 stand-in pretraining: log power in this many bands up to 8 kHz.
SPECTRUM_BANDS = 8


def band_energies(audio: np.ndarray, hop: int, field: int, num_frames: int) -> np.ndarray:
    """[num_frames, SPECTRUM_BANDS] log power of each encoder frame's receptive field (Hann window), in
    log-spaced bands: what the sound is like at each 20 ms step, with no notion of faces or mouths."""
    starts = np.arange(num_frames) * hop
    padded = np.pad(audio.astype(np.float32), (0, max(0, starts[-1] + field - len(audio))))
    windows = padded[starts[:, None] + np.arange(field)] * np.hanning(field).astype(np.float32)
    power = np.abs(np.fft.rfft(windows, axis=1)) ** 2
    edges = np.round(np.geomspace(2, power.shape[1], SPECTRUM_BANDS + 1)).astype(int)  # from 2 bins (80 Hz) up
    bands = np.stack([power[:, a:b].sum(axis=1) for a, b in zip(edges[:-1], edges[1:])], axis=1)
    return np.log(bands + 1e-6)


def pretrain_wav2vec2(config: ml_collections.ConfigDict, waves: list[np.ndarray],
                      seed: int = 0) -> tuple[dict, list[float]]:
    """(params, losses) of config.audio.encoder's wav2vec2 trained briefly so every layer describes the sound.

    Why: a pretrained wav2vec2 (the paper's frozen audio encoder) describes speech; a random one keeps little of
    it, because its layer norms remove each frame's scale (measured: a linear read-out of the random tiny
    encoder's features predicts held-out loudness with correlation 0.6). This stand-in for pretraining teaches
    each layer, through a linear head thrown away afterwards, the log band energies of its frame's audio. The
    targets describe the sound only; the mouth is never shown to it.
    """
    d = config.demo
    module, params, w2v = encoders.audio_encoder(config, random_init=True)
    hop, field = w2v.hop_samples, w2v.receptive_field_samples
    crop = int(d.audio_pretrain_seconds * 16000)
    frames = w2v.num_frames(crop)
    # Each source normalised as audio_features does (zero mean, unit variance), then cut into random crops.
    normed = [(w - w.mean()) / np.sqrt(w.var() + 1e-7) for w in waves if len(w) >= crop]
    if not normed:
        raise ValueError(f"no demo audio track is {d.audio_pretrain_seconds} s long; lower demo.audio_pretrain_seconds")
    layers = w2v.num_hidden_layers
    heads = {"kernel": jnp.zeros((layers, w2v.hidden_size, SPECTRUM_BANDS)),
             "bias": jnp.zeros((layers, SPECTRUM_BANDS))}
    # Targets once per track: a crop starting on an encoder-frame boundary has exactly the track's frames there.
    targets = [band_energies(w, hop, field, w2v.num_frames(len(w))) for w in normed]
    all_targets = np.concatenate(targets)
    mu, sigma = all_targets.mean(axis=0), all_targets.std(axis=0) + 1e-6
    targets = [(t - mu) / sigma for t in targets]
    tx = optax.adam(optax.cosine_decay_schedule(d.audio_pretrain_lr, max(1, d.audio_pretrain_steps)))
    trainable = (params, heads)
    opt_state = tx.init(trainable)

    def loss_fn(p, x_BS, target_BTK):
        w2v_params, h = p
        hidden = jnp.stack(module.apply(w2v_params, x_BS).hidden_states[1:], axis=0)  # [L, B, T, D]
        pred = jnp.einsum("lbtd,ldk->lbtk", hidden, h["kernel"]) + h["bias"][:, None, None]
        return jnp.mean(jnp.square(pred - target_BTK[None]))

    @jax.jit
    def step(p, opt, x, target):
        loss, grads = jax.value_and_grad(loss_fn)(p, x, target)
        updates, opt = tx.update(grads, opt, p)
        return optax.apply_updates(p, updates), opt, loss

    rng, losses = np.random.default_rng(seed), []
    for _ in range(d.audio_pretrain_steps):
        xs, ts = [], []
        for _ in range(d.audio_pretrain_batch):
            i = int(rng.integers(len(normed)))
            first = int(rng.integers((len(normed[i]) - crop) // hop + 1))  # in encoder frames
            xs.append(normed[i][first * hop:first * hop + crop])
            ts.append(targets[i][first:first + frames])
        trainable, opt_state, loss = step(trainable, opt_state, np.stack(xs), np.stack(ts))
        losses.append(loss)
    return jax.device_get(trainable[0]), [float(v) for v in losses]


def write_wav2vec2_folder(config: ml_collections.ConfigDict, folder: str, params: dict) -> str:
    """config.audio.encoder's wav2vec2 with the given weights (pretrain_wav2vec2's) as config.json +
    model.safetensors."""
    w2v = encoders.wav2vec2_config(config)
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
