"""One training step: batch -> latents and audio features (precomputed or encoded here) -> diffusion loss ->
masked AdamW update, skipped when the loss or the gradient is not finite."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from emo_jax.audio.features import add_context, encoder_timing, resample_to_fps
from emo_jax.audio.wav2vec2 import Wav2Vec2Model
from emo_jax.batch import batch_spec, chosen_fields
from emo_jax.config import model_config
from emo_jax.diffusion.schedules import NoiseSchedule, add_noise, make_schedule, min_snr_weight, training_target
from emo_jax.models.emo import EMO
from emo_jax.models.vae import AutoencoderKL
from emo_jax.train.optim import current_lr, update_applied
from emo_jax.train.state import TrainState, prune, step_key


@dataclasses.dataclass(frozen=True)
class Encoders:
    """The frozen VAE and wav2vec2 modules; their params travel as a jit argument, not as baked-in constants."""

    vae: AutoencoderKL | None
    audio: Wav2Vec2Model | None
    scaling_factor: float = 0.18215


def noise_schedule(config: ml_collections.ConfigDict) -> NoiseSchedule:
    t = config.train
    return make_schedule(prediction_type=t.prediction_type, rescale_zero_terminal_snr=t.zero_terminal_snr)


def encode_frames(encoders: Encoders, vae_params, frames_NHWC: jax.Array) -> jax.Array:
    """uint8 RGB frames -> scaled VAE latents (the posterior mean, as emo-prepare stores precomputed ones)."""
    if encoders.vae is None:
        raise ValueError("the batch holds frames but no VAE is loaded; set config.vae.path or precompute latents")
    x = frames_NHWC.astype(jnp.float32) / 127.5 - 1.0
    mean, _ = encoders.vae.apply({"params": vae_params}, x, method=AutoencoderKL.encode)
    return mean * encoders.scaling_factor


def clip_audio_features(encoders: Encoders, w2v_params, audio_BS: jax.Array, fps: float, frames: int,
                        context: int) -> jax.Array:
    """Raw audio of frames + 2 * context video frames -> features of the middle `frames`, [B, f, 2m+1, L, D].

    Normalised and encoded per clip (wav2vec2 sees the clip's span, not the whole file), then resampled to the
    video frames with emo_jax.audio.features' timing, so the features line up as the offline ones do.
    """
    if encoders.audio is None:
        raise ValueError("the batch holds raw audio but no wav2vec2 is loaded; set config.audio.wav2vec_path")
    x = audio_BS.astype(jnp.float32)
    x = (x - x.mean(axis=1, keepdims=True)) / jnp.sqrt(x.var(axis=1, keepdims=True) + 1e-7)
    hidden = encoders.audio.apply(w2v_params, x).hidden_states
    h_BTLD = jnp.stack(hidden[1:], axis=2)  # the transformer layers; the embedding output is not used
    span = frames + 2 * context
    timing = encoder_timing(encoders.audio.config)
    per_clip = jax.vmap(lambda h: add_context(resample_to_fps(h, span, fps, *timing), context))
    return per_clip(h_BTLD)[:, context:context + frames]


def model_inputs(config: ml_collections.ConfigDict, encoders: Encoders, frozen: dict, batch: dict) -> dict:
    """The clean latents x0 [B, F, h, w, 4] and EMO's inputs by keyword (EMO.__call__) from a loader batch
    (emo_jax.batch's fields: encoded ones where the batch has them, else raw frames and audio encoded here).
    The model's per-frame signals (EMOConfig.frame_signals) go to it as the loader gives them."""
    fields = chosen_fields(batch_spec(config), batch.keys())
    m = config.model

    def latents(role: str) -> jax.Array:
        field = fields[role]
        if field.dtype == "float32":
            return batch[field.name].astype(jnp.float32)
        frames = batch[field.name]
        flat = encode_frames(encoders, frozen["vae"], frames.reshape((-1,) + frames.shape[-3:]))
        return flat.reshape(frames.shape[:-3] + flat.shape[1:])

    x0 = latents("target")
    if x0.ndim == 4:
        x0 = x0[:, None]  # stage 1 trains on single frames: F = 1
    # The {0, 1} mask as float by a select, not a uint8 convert: libtpu 0.0.52's space-to-batch pass aborts the
    # TPU compile on the face locator's filter gradient when its input is a converted uint8 (f32/u8 select).
    inputs = {"x0": x0, "ref_latent_BHWC": latents("reference"),
              "face_mask": jnp.where(batch["face_mask"] > 0, 1.0, 0.0)[..., None]}
    if "motion" in fields:
        inputs["motion_latents_BNHWC"] = latents("motion")
    if "audio" in fields:
        audio = fields["audio"]
        inputs["audio"] = (batch[audio.name].astype(jnp.float32) if audio.name == "audio_features" else
                           clip_audio_features(encoders, frozen["audio"], batch["audio"], config.data.fps,
                                               m.clip_frames, m.audio.context))
    for name in model_config(config).frame_signals:
        inputs[name] = batch[fields[name].name]
    return jax.tree.map(jax.lax.stop_gradient, inputs)


def diffusion_loss(model: EMO, params: dict, schedule: NoiseSchedule, config: ml_collections.ConfigDict,
                   inputs: dict, key: jax.Array) -> jax.Array:
    """Mean squared error to the epsilon / v target at uniform random timesteps, with condition dropout."""
    t_cfg = config.train
    x0 = inputs["x0"]
    b = x0.shape[0]
    k_t, k_noise, k_ref, k_audio, k_motion = jax.random.split(key, 5)
    t = jax.random.randint(k_t, (b,), 0, schedule.num_train_timesteps)
    noise = jax.random.normal(k_noise, x0.shape, jnp.float32)
    cond = {k: v for k, v in inputs.items() if k != "x0"}
    cond["ref_keep"] = jax.random.bernoulli(k_ref, 1.0 - t_cfg.ref_dropout, (b,))
    if t_cfg.stage >= 2:
        cond["audio_keep"] = jax.random.bernoulli(k_audio, 1.0 - t_cfg.audio_dropout, (b,))
        cond["motion_keep"] = jax.random.bernoulli(k_motion, 1.0 - t_cfg.motion_dropout, (b,))
    per_example = denoising_error(model, params, schedule, x0, cond, t, noise)
    if t_cfg.min_snr_gamma > 0:
        per_example = per_example * min_snr_weight(schedule, t, t_cfg.min_snr_gamma)
    return per_example.mean()


def denoising_error(model: EMO, params: dict, schedule: NoiseSchedule, x0: jax.Array, cond: dict, t: jax.Array,
                    noise: jax.Array) -> jax.Array:
    """Per-example mean squared error [B] of the model's epsilon / v prediction for x0 noised with `noise` at
    timesteps t [B], given EMO's other inputs by keyword in `cond` (condition keeps included)."""
    out = model.apply({"params": params}, add_noise(schedule, x0, noise, t), t, **cond)
    err = jnp.square(out.astype(jnp.float32) - training_target(schedule, x0, noise, t))
    return err.reshape(x0.shape[0], -1).mean(axis=1)


def make_train_step(config: ml_collections.ConfigDict, model: EMO, tx: optax.GradientTransformation, mask: dict,
                    encoders: Encoders) -> Callable[[TrainState, dict, dict], tuple[TrainState, dict]]:
    """(state, frozen encoder params, batch) -> (state, metrics); jit it with the state donated."""
    schedule = noise_schedule(config)
    decay = config.train.ema_decay

    def train_step(state: TrainState, frozen: dict, batch: dict) -> tuple[TrainState, dict[str, Any]]:
        inputs = model_inputs(config, encoders, frozen, batch)
        key = step_key(state)
        loss, grads = jax.value_and_grad(lambda p: diffusion_loss(model, p, schedule, config, inputs, key))(
            state.params)
        grad_norm = optax.global_norm(prune(grads, mask))
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

        def update(params, opt_state):
            updates, opt_state = tx.update(grads, opt_state, params)
            # Frozen leaves are never touched, so they stay bit-identical (p + 0 would turn -0.0 into 0.0).
            return jax.tree.map(lambda m, p, u: p + u.astype(p.dtype) if m else p, mask, params, updates), opt_state

        # A non-finite step keeps params and optimiser state as they were. A cond, not a select per leaf: the
        # select reads each old moment after the update has written its new value in place, so XLA copied every
        # Adam moment first (1,332 copies a step at cpu_shapes.py's small shape).
        params, opt_state = jax.lax.cond(finite, update, lambda p, o: (p, o), state.params, state.opt_state)
        d = jnp.where(finite & update_applied(opt_state), decay, 1.0)
        ema = jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, state.ema, prune(params, mask))
        bad = jnp.where(finite, 0, state.bad_steps + 1)
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema=ema, bad_steps=bad,
                                  skipped=state.skipped + (~finite).astype(jnp.int32))
        metrics = {"step": new_state.step, "loss": loss, "grad_norm": grad_norm, "lr": current_lr(opt_state),
                   "finite": finite, "bad_steps": bad, "skipped": new_state.skipped}
        return new_state, metrics

    return train_step

