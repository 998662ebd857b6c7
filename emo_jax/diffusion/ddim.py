"""DDIM sampling (Song et al. 2021) as pure functions, numerically matching diffusers' DDIMScheduler."""
from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from emo_jax.diffusion.schedules import NoiseSchedule, gather, predict_x0_and_eps

SPACINGS = ("leading", "trailing", "linspace")


def ddim_timesteps(
    schedule: NoiseSchedule,
    num_inference_steps: int,
    spacing: Literal["leading", "trailing", "linspace"] = "leading",
    steps_offset: int = 1,
) -> jax.Array:
    """Descending int32 sampling timesteps, as diffusers' DDIMScheduler.set_timesteps chooses them.

    Spacings follow Table 2 of Lin et al. 2023. steps_offset shifts "leading" only (as in diffusers); SD1.5 uses
    leading with offset 1. Trailing starts at the last training step and is the one to pair with zero terminal SNR.
    """
    num_train = schedule.num_train_timesteps
    if not 1 <= num_inference_steps <= num_train:
        raise ValueError(f"num_inference_steps must be in [1, {num_train}], got {num_inference_steps}")
    if spacing == "leading":
        steps = np.arange(num_inference_steps)[::-1] * (num_train // num_inference_steps) + steps_offset
    elif spacing == "trailing":
        # np.arange with a float step, as diffusers uses, is kept for its exact rounding; its length can exceed
        # num_inference_steps by one through float error (diffusers then samples a spurious step -1), hence the cut.
        grid = np.arange(num_train, 0, -num_train / num_inference_steps)[:num_inference_steps]
        steps = np.round(grid).astype(np.int64) - 1
    elif spacing == "linspace":
        steps = np.round(np.linspace(0, num_train - 1, num_inference_steps))[::-1]
    else:
        raise ValueError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
    if steps.max() >= num_train or steps.min() < 0:
        raise ValueError(
            f"timesteps of spacing={spacing!r}, num_inference_steps={num_inference_steps}, "
            f"steps_offset={steps_offset} leave [0, {num_train}); lower steps_offset or the step count"
        )
    return jnp.asarray(steps.astype(np.int32))


def ddim_step_pairs(timesteps: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(t, t_prev) arrays for a lax.scan over the steps; the last t_prev is -1 (meaning: step to x0).

    t_prev is the next timestep of the grid. diffusers instead uses t - num_train // num_inference_steps, which is
    the same for leading spacing and for trailing when the step count divides num_train_timesteps (40, 25, 50 of
    1000), but for linspace (and other trailing counts) lands between grid points; following the grid keeps each
    x_t at the noise level the model is evaluated at next.
    """
    timesteps = jnp.asarray(timesteps, dtype=jnp.int32)
    if timesteps.ndim != 1 or timesteps.shape[0] == 0:
        raise ValueError(f"timesteps must be a non-empty 1-D array, got shape {timesteps.shape}")
    return timesteps, jnp.concatenate([timesteps[1:], jnp.full((1,), -1, jnp.int32)])


def ddim_step(
    schedule: NoiseSchedule,
    model_output: jax.Array,
    t: jax.Array,
    t_prev: jax.Array,
    x_t: jax.Array,
    eta: float = 0.0,
    noise: jax.Array | None = None,
    clip_sample: bool = False,
    set_alpha_to_one: bool = False,
) -> jax.Array:
    """x_{t_prev} from x_t and the model output at t (DDIM eqs. 12 and 16); t, t_prev may be traced scalars.

    t_prev < 0 means the final step, whose abar is 1 if set_alpha_to_one else abar_0 (SD1.5: False).
    eta > 0 adds fresh noise (eta = 1 is DDPM-like) and then needs `noise`, shaped like x_t.
    clip_sample clips the predicted x0 to [-1, 1] (pixel-space models; not for SD latents).
    """
    if noise is None and eta != 0:
        raise ValueError(f"eta={eta} adds noise, so pass `noise` (standard normal, shaped like x_t {x_t.shape})")
    x0, eps = predict_x0_and_eps(schedule, model_output, x_t, t)
    if clip_sample:
        x0 = jnp.clip(x0, -1.0, 1.0)
    abar_t = gather(schedule.alphas_cumprod, t, x_t)
    final = jnp.ones((1,)) if set_alpha_to_one else schedule.alphas_cumprod[:1]
    # The final abar sits one past the end of the table, where every negative t_prev points.
    table = jnp.concatenate([schedule.alphas_cumprod, final])
    t_prev = jnp.asarray(t_prev)
    abar_prev = gather(table, jnp.where(t_prev >= 0, t_prev, schedule.num_train_timesteps), x_t)
    variance = (1.0 - abar_prev) / (1.0 - abar_t) * (1.0 - abar_t / abar_prev)
    std = eta * jnp.sqrt(variance)
    # Clamped because float rounding can push 1 - abar_prev - std^2 (exactly >= 0) a hair below zero at eta = 1.
    x_prev = jnp.sqrt(abar_prev) * x0 + jnp.sqrt(jnp.maximum(1.0 - abar_prev - std**2, 0.0)) * eps
    if noise is not None:
        x_prev = x_prev + std * noise
    return x_prev
