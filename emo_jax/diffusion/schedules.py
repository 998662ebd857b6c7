"""Discrete noise schedules (SD-style) and the training-side helpers built on them.

Conventions follow diffusers' DDPMScheduler/DDIMScheduler: q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I),
t an integer in [0, num_train_timesteps). Tables are computed in float64 and stored as float32, as the original
Stable Diffusion (CompVis ldm) code does; diffusers computes them in float32, which agrees to ~1e-6 relative except
for the last few zero-terminal-SNR steps, where diffusers' float32 subtraction loses digits (see the tests).
"""
from __future__ import annotations

from typing import Literal

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

BETA_SCHEDULES = ("linear", "scaled_linear")
PREDICTION_TYPES = ("epsilon", "v_prediction")


@flax.struct.dataclass
class NoiseSchedule:
    """Per-timestep float32 tables of a discrete diffusion schedule; a pytree, so it passes through jit."""

    betas: jax.Array
    alphas_cumprod: jax.Array
    sqrt_alphas_cumprod: jax.Array
    sqrt_one_minus_alphas_cumprod: jax.Array
    prediction_type: str = flax.struct.field(pytree_node=False)

    @property
    def num_train_timesteps(self) -> int:
        return self.betas.shape[0]


def zero_terminal_snr_betas(betas: np.ndarray) -> np.ndarray:
    """Betas whose last step has zero SNR (Lin et al. 2023, "Common Diffusion Noise Schedules...", Algorithm 1)."""
    sqrt_abar = np.sqrt(np.cumprod(1.0 - betas))
    first, last = sqrt_abar[0], sqrt_abar[-1]
    # Shift so the last step has sqrt(abar) = 0, then scale so the first step keeps its value.
    sqrt_abar = (sqrt_abar - last) * first / (first - last)
    abar = sqrt_abar**2
    alphas = np.concatenate([abar[:1], abar[1:] / abar[:-1]])
    return 1.0 - alphas


def make_schedule(
    num_train_timesteps: int = 1000,
    beta_start: float = 0.00085,
    beta_end: float = 0.012,
    beta_schedule: Literal["linear", "scaled_linear"] = "scaled_linear",
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon",
    rescale_zero_terminal_snr: bool = False,
) -> NoiseSchedule:
    """The schedule of the given kind; the defaults are Stable Diffusion 1.5's."""
    if num_train_timesteps < 2:
        raise ValueError(f"num_train_timesteps must be at least 2, got {num_train_timesteps}")
    if not 0.0 < beta_start <= beta_end < 1.0:
        raise ValueError(f"need 0 < beta_start <= beta_end < 1, got beta_start={beta_start}, beta_end={beta_end}")
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
    if beta_schedule == "linear":
        betas = np.linspace(beta_start, beta_end, num_train_timesteps, dtype=np.float64)
    elif beta_schedule == "scaled_linear":
        # Latent diffusion's schedule: linear in sqrt(beta).
        betas = np.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=np.float64) ** 2
    else:
        raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES}, got {beta_schedule!r}")
    if rescale_zero_terminal_snr:
        betas = zero_terminal_snr_betas(betas)
    abar = np.cumprod(1.0 - betas)
    return NoiseSchedule(
        betas=_f32(betas),
        alphas_cumprod=_f32(abar),
        sqrt_alphas_cumprod=_f32(np.sqrt(abar)),
        # From float64 abar: 1 - abar in float32 keeps only ~4 digits at t = 0, where abar = 0.99915.
        sqrt_one_minus_alphas_cumprod=_f32(np.sqrt(1.0 - abar)),
        prediction_type=prediction_type,
    )


def _f32(a: np.ndarray) -> jax.Array:
    return jnp.asarray(a.astype(np.float32))


def gather(table: jax.Array, t: jax.Array, x: jax.Array) -> jax.Array:
    """table[t] shaped to broadcast against x: t is a scalar or [B] with B = x.shape[0]."""
    t = jnp.asarray(t)
    if t.ndim == 0:
        return table[t].astype(x.dtype)
    if t.ndim != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(f"timesteps t must be a scalar or of shape [{x.shape[0]}] (x's batch axis), got {t.shape}")
    return table[t].reshape(t.shape + (1,) * (x.ndim - 1)).astype(x.dtype)


def add_noise(schedule: NoiseSchedule, x0: jax.Array, noise: jax.Array, t: jax.Array) -> jax.Array:
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise; t int [B], x0 and noise [B, ...]."""
    return gather(schedule.sqrt_alphas_cumprod, t, x0) * x0 + gather(
        schedule.sqrt_one_minus_alphas_cumprod, t, x0
    ) * noise


def training_target(schedule: NoiseSchedule, x0: jax.Array, noise: jax.Array, t: jax.Array) -> jax.Array:
    """What the model learns to output: the noise (epsilon) or v = sqrt(abar) noise - sqrt(1 - abar) x0."""
    if schedule.prediction_type == "epsilon":
        return noise
    return gather(schedule.sqrt_alphas_cumprod, t, x0) * noise - gather(
        schedule.sqrt_one_minus_alphas_cumprod, t, x0
    ) * x0


def snr(schedule: NoiseSchedule, t: jax.Array) -> jax.Array:
    """Signal-to-noise ratio abar_t / (1 - abar_t), same shape as t."""
    return (schedule.sqrt_alphas_cumprod[t] / schedule.sqrt_one_minus_alphas_cumprod[t]) ** 2


def min_snr_weight(schedule: NoiseSchedule, t: jax.Array, gamma: float = 5.0) -> jax.Array:
    """Min-SNR-gamma loss weight (Hang et al. 2023) for the schedule's prediction type, same shape as t."""
    if gamma <= 0:
        raise ValueError(f"gamma must be positive, got {gamma}")
    s = snr(schedule, t)
    if schedule.prediction_type == "epsilon":
        # min(snr, gamma) / snr written so that snr = 0 (zero terminal SNR) gives its limit 1, not 0/0.
        return jnp.minimum(gamma / s, 1.0)
    return jnp.minimum(s, gamma) / (s + 1.0)


def predict_x0_and_eps(
    schedule: NoiseSchedule, model_output: jax.Array, x_t: jax.Array, t: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """(predicted x0, predicted noise) from a model output of the schedule's prediction type."""
    a = gather(schedule.sqrt_alphas_cumprod, t, x_t)
    s = gather(schedule.sqrt_one_minus_alphas_cumprod, t, x_t)
    if schedule.prediction_type == "epsilon":
        return (x_t - s * model_output) / a, model_output
    return a * x_t - s * model_output, a * model_output + s * x_t
