"""DDIM timesteps and steps against diffusers' DDIMScheduler (the PyTorch reference)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from emo_jax.diffusion import (
    add_noise,
    ddim_step,
    ddim_step_pairs,
    ddim_timesteps,
    make_schedule,
    training_target,
)

SD15 = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def _reference(spacing="leading", prediction_type="epsilon", zero_snr=False, clip_sample=False):
    """diffusers' DDIM with SD1.5's scheduler config."""
    return DDIMScheduler(
        **SD15,
        clip_sample=clip_sample,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
        timestep_spacing=spacing,
        rescale_betas_zero_snr=zero_snr,
    )


def _rel(ours, ref):
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return np.max(np.abs(ours - ref)) / np.max(np.abs(ref))


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("num_steps", [40, 25, 50])
def test_timesteps_match_diffusers(spacing, num_steps):
    ref = _reference(spacing)
    ref.set_timesteps(num_steps)
    ours = ddim_timesteps(make_schedule(**SD15), num_steps, spacing)
    assert ours.dtype == jnp.int32
    np.testing.assert_array_equal(ours, ref.timesteps.numpy())


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_timesteps_match_diffusers_for_many_step_counts(spacing):
    schedule, ref = make_schedule(**SD15), _reference(spacing)
    # 48 has a rounding tie in the trailing grid, 61 and 103 the float-error extra step; each count costs a compile.
    for num_steps in [*range(1, 101), 103, 121, 333, 500, 999]:
        ref.set_timesteps(num_steps)
        ours = np.asarray(ddim_timesteps(schedule, num_steps, spacing))
        assert len(ours) == num_steps and np.all(np.diff(ours) < 0)
        # diffusers' trailing grid sometimes gets one extra step (t = -1) through float error; we cut it.
        np.testing.assert_array_equal(ours, ref.timesteps.numpy()[:num_steps], err_msg=f"{num_steps} steps")


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
@pytest.mark.parametrize("num_steps", [40, 25, 50])
def test_step_pairs_equal_diffusers_previous_timestep(spacing, num_steps):
    t, t_prev = ddim_step_pairs(ddim_timesteps(make_schedule(**SD15), num_steps, spacing))
    ref_prev = np.asarray(t) - 1000 // num_steps  # DDIMScheduler.step's rule
    np.testing.assert_array_equal(t_prev[:-1], ref_prev[:-1])
    assert t_prev[-1] < 0 and ref_prev[-1] < 0  # both mean: final step with final_alpha_cumprod


STEP_CASES = [  # spacing, prediction_type, zero_snr, eta, clip_sample
    ("leading", "epsilon", False, 0.0, False),
    ("leading", "v_prediction", False, 0.0, False),
    ("trailing", "epsilon", False, 0.0, False),
    ("trailing", "v_prediction", False, 0.0, False),
    ("trailing", "v_prediction", True, 0.0, False),
    ("leading", "epsilon", False, 1.0, True),
    ("trailing", "v_prediction", True, 0.7, False),
]


@pytest.mark.parametrize("spacing, prediction_type, zero_snr, eta, clip_sample", STEP_CASES)
def test_step_matches_diffusers_at_every_timestep(spacing, prediction_type, zero_snr, eta, clip_sample):
    num_steps = 40
    ref = _reference(spacing, prediction_type, zero_snr, clip_sample)
    ref.set_timesteps(num_steps)
    schedule = make_schedule(**SD15, prediction_type=prediction_type, rescale_zero_terminal_snr=zero_snr)
    t, t_prev = ddim_step_pairs(ddim_timesteps(schedule, num_steps, spacing))

    rng = np.random.default_rng(0)
    shape = (num_steps, 2, 2, 4, 4, 4)  # one [B, F, H, W, C] sample per timestep
    model_out, x_t, noise = (rng.standard_normal(shape).astype(np.float32) for _ in range(3))

    step = lambda out, tt, tp, x, n: ddim_step(schedule, out, tt, tp, x, eta, n, clip_sample)  # noqa: E731
    ours = jax.jit(jax.vmap(step))(model_out, t, t_prev, x_t, noise)

    errors = []
    for i, tt in enumerate(ref.timesteps):
        kwargs = dict(variance_noise=torch.from_numpy(noise[i])) if eta > 0 else {}
        expected = ref.step(torch.from_numpy(model_out[i]), tt, torch.from_numpy(x_t[i]), eta=eta, **kwargs)
        errors.append(_rel(ours[i], expected.prev_sample.numpy()))
    assert max(errors) < 1e-5, f"worst step {int(np.argmax(errors))}: {max(errors):.2e}"


@pytest.mark.parametrize(
    "spacing, prediction_type, zero_snr, eta",
    [("leading", "epsilon", False, 0.0), ("trailing", "v_prediction", True, 0.0), ("leading", "epsilon", False, 1.0)],
)
def test_scan_loop_matches_diffusers_loop(spacing, prediction_type, zero_snr, eta):
    num_steps = 10
    fake_model = lambda x: 0.1 * x  # noqa: E731
    rng = np.random.default_rng(1)
    x_T = rng.standard_normal((1, 3, 4, 4, 4)).astype(np.float32)
    noises = rng.standard_normal((num_steps,) + x_T.shape).astype(np.float32)

    ref = _reference(spacing, prediction_type, zero_snr)
    ref.set_timesteps(num_steps)
    expected = torch.from_numpy(x_T)
    for i, t in enumerate(ref.timesteps):
        kwargs = dict(variance_noise=torch.from_numpy(noises[i])) if eta > 0 else {}
        expected = ref.step(fake_model(expected), t, expected, eta=eta, **kwargs).prev_sample

    schedule = make_schedule(**SD15, prediction_type=prediction_type, rescale_zero_terminal_snr=zero_snr)

    @jax.jit
    def sample(x):
        def body(x, step_in):
            t, t_prev, noise = step_in
            return ddim_step(schedule, fake_model(x), t, t_prev, x, eta=eta, noise=noise), None

        t, t_prev = ddim_step_pairs(ddim_timesteps(schedule, num_steps, spacing))
        return jax.lax.scan(body, x, (t, t_prev, noises))[0]

    assert _rel(sample(x_T), expected.numpy()) < 1e-5


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_step_with_the_true_noise_lands_on_the_forward_process(prediction_type):
    # A model that outputs exactly the training target makes deterministic DDIM exact: x_t -> x_{t_prev} of the
    # same x0 and noise.
    schedule = make_schedule(prediction_type=prediction_type)
    rng = np.random.default_rng(2)
    x0, noise = (rng.standard_normal((2, 4, 4, 4)).astype(np.float32) for _ in range(2))
    t, t_prev = jnp.array([700, 700]), jnp.array([500, 500])
    x_t = add_noise(schedule, x0, noise, t)
    out = training_target(schedule, x0, noise, t)
    expected = add_noise(schedule, x0, noise, t_prev)
    np.testing.assert_allclose(ddim_step(schedule, out, 700, 500, x_t), expected, rtol=0, atol=2e-5)


def test_step_needs_noise_when_eta_is_positive():
    x = jnp.zeros((1, 4, 4, 4))
    with pytest.raises(ValueError, match="noise"):
        ddim_step(make_schedule(), x, 10, 0, x, eta=1.0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_inference_steps=0), "num_inference_steps"),
        (dict(num_inference_steps=1001), "num_inference_steps"),
        (dict(num_inference_steps=10, spacing="karras"), "spacing"),
        (dict(num_inference_steps=1000, spacing="leading", steps_offset=1), "steps_offset"),
    ],
)
def test_timesteps_reject_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ddim_timesteps(make_schedule(), **kwargs)
