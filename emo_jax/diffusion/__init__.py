"""Diffusion math as pure JAX functions: noise schedules, training targets, DDIM sampling, guidance."""
from emo_jax.diffusion.ddim import ddim_step, ddim_step_pairs, ddim_timesteps
from emo_jax.diffusion.guidance import joint_guidance, separate_guidance
from emo_jax.diffusion.schedules import (
    NoiseSchedule,
    add_noise,
    make_schedule,
    min_snr_weight,
    predict_x0_and_eps,
    snr,
    training_target,
)

__all__ = [
    "NoiseSchedule",
    "add_noise",
    "ddim_step",
    "ddim_step_pairs",
    "ddim_timesteps",
    "joint_guidance",
    "make_schedule",
    "min_snr_weight",
    "predict_x0_and_eps",
    "separate_guidance",
    "snr",
    "training_target",
]
