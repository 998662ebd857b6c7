"""Noise schedules and training helpers against diffusers' schedulers (the PyTorch reference)."""
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.schedulers.scheduling_ddim import rescale_zero_terminal_snr
from diffusers.training_utils import compute_snr

from emo_jax.diffusion import (
    add_noise,
    make_schedule,
    min_snr_weight,
    predict_x0_and_eps,
    snr,
    training_target,
)

SD15 = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def _sd15_betas64():
    return torch.linspace(SD15["beta_start"] ** 0.5, SD15["beta_end"] ** 0.5, 1000, dtype=torch.float64) ** 2


def _elementwise_rel(ours, ref):
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return np.max(np.abs(ours - ref) / np.abs(ref))


def _rel(ours, ref):
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return np.max(np.abs(ours - ref)) / np.max(np.abs(ref))


@pytest.mark.parametrize("reference", [DDPMScheduler, DDIMScheduler])
def test_alphas_cumprod_match_diffusers_scaled_linear(reference):
    ref = reference(**SD15).alphas_cumprod.numpy()
    ours = make_schedule(**SD15).alphas_cumprod
    assert ours.dtype == jnp.float32
    assert _elementwise_rel(ours, ref) < 1e-6


def test_alphas_cumprod_match_diffusers_linear():
    ref = DDPMScheduler(beta_start=1e-4, beta_end=0.02, beta_schedule="linear").alphas_cumprod.numpy()
    ours = make_schedule(beta_start=1e-4, beta_end=0.02, beta_schedule="linear").alphas_cumprod
    assert _elementwise_rel(ours, ref) < 1e-6


@pytest.mark.parametrize("reference", [DDPMScheduler, DDIMScheduler])
def test_zero_terminal_snr_matches_diffusers(reference):
    ours = np.asarray(make_schedule(**SD15, rescale_zero_terminal_snr=True).alphas_cumprod)
    # diffusers' own rescaling run on float64 betas: our computation, to float32 rounding.
    ref64 = torch.cumprod(1 - rescale_zero_terminal_snr(_sd15_betas64()), 0).numpy()
    assert ours[-1] == ref64[-1] == 0.0
    assert _elementwise_rel(ours[:-1], ref64[:-1]) < 1e-6
    # diffusers' scheduler does it in float32; subtracting the nearly equal sqrt(abar) values near the end loses
    # digits there (3.8e-5 relative at t=998), so elementwise 1e-6 holds away from the end, 1e-6 of the scale
    # everywhere.
    ref32 = reference(**SD15, rescale_betas_zero_snr=True).alphas_cumprod.numpy()
    assert ref32[-1] == 0.0
    assert _elementwise_rel(ours[:900], ref32[:900]) < 2e-6
    assert np.max(np.abs(ours - ref32)) < 1e-6


@pytest.mark.parametrize("zero_snr", [False, True])
def test_add_noise_and_velocity_match_diffusers(zero_snr):
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal((4, 2, 3, 3, 4)).astype(np.float32)  # [B, F, H, W, C]
    noise = rng.standard_normal(x0.shape).astype(np.float32)
    t = np.array([0, 1, 500, 999])
    ref = DDIMScheduler(**SD15, rescale_betas_zero_snr=zero_snr)
    tx0, tnoise, tt = torch.from_numpy(x0), torch.from_numpy(noise), torch.from_numpy(t)

    sched = make_schedule(**SD15, rescale_zero_terminal_snr=zero_snr, prediction_type="v_prediction")
    assert _rel(add_noise(sched, x0, noise, t), ref.add_noise(tx0, tnoise, tt).numpy()) < 1e-6
    assert _rel(training_target(sched, x0, noise, t), ref.get_velocity(tx0, tnoise, tt).numpy()) < 1e-6
    eps_sched = make_schedule(**SD15, rescale_zero_terminal_snr=zero_snr)
    np.testing.assert_array_equal(training_target(eps_sched, x0, noise, t), noise)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_predict_x0_and_eps_inverts_the_training_target(prediction_type):
    rng = np.random.default_rng(1)
    x0 = rng.standard_normal((3, 2, 4, 4, 4)).astype(np.float32)
    noise = rng.standard_normal(x0.shape).astype(np.float32)
    t = jnp.array([3, 400, 990])
    sched = make_schedule(prediction_type=prediction_type)
    x_t = add_noise(sched, x0, noise, t)
    x0_hat, eps_hat = predict_x0_and_eps(sched, training_target(sched, x0, noise, t), x_t, t)
    np.testing.assert_allclose(x0_hat, x0, rtol=0, atol=1e-4)
    np.testing.assert_allclose(eps_hat, noise, rtol=0, atol=1e-5)


def test_snr_matches_diffusers_training_utils():
    t = torch.tensor([0, 10, 300, 700, 999])
    reference = DDPMScheduler(**SD15)
    # In float32, 1 - abar at t = 0 keeps only ~4 digits (abar = 0.99915); ours comes from float64 tables, so the
    # reference runs on float64 abar (the float32 one is off by 2.6e-5 there).
    reference.alphas_cumprod = torch.cumprod(1 - _sd15_betas64(), 0)
    ref = compute_snr(reference, t).numpy()
    assert _elementwise_rel(snr(make_schedule(**SD15), t.numpy()), ref) < 1e-6


def test_min_snr_weight_known_values():
    gamma = 5.0
    eps, v = make_schedule(), make_schedule(prediction_type="v_prediction")
    # t = 0: abar = 1 - beta_0 = 0.99915, so snr = 0.99915 / 0.00085 = 1175.47 > gamma.
    snr0 = 0.99915 / 0.00085
    np.testing.assert_allclose(min_snr_weight(eps, jnp.array([0]), gamma), [gamma / snr0], rtol=1e-5)
    np.testing.assert_allclose(min_snr_weight(v, jnp.array([0]), gamma), [gamma / (snr0 + 1)], rtol=1e-5)
    # t = 999: snr = 0.0047 < gamma, so epsilon weight is 1 and v weight is snr / (snr + 1).
    s = 0.0046601 / (1 - 0.0046601)
    np.testing.assert_allclose(min_snr_weight(eps, jnp.array([999]), gamma), [1.0], rtol=1e-6)
    np.testing.assert_allclose(min_snr_weight(v, jnp.array([999]), gamma), [s / (s + 1)], rtol=1e-4)
    # Where snr crosses gamma the epsilon weight leaves 1.
    t = jnp.arange(1000)
    w, s_all = np.asarray(min_snr_weight(eps, t, gamma)), np.asarray(snr(eps, t))
    np.testing.assert_allclose(w[s_all <= gamma], 1.0)
    assert np.all(w[s_all > gamma] < 1.0)


def test_min_snr_weight_is_finite_at_zero_terminal_snr():
    t = jnp.array([999])
    eps = make_schedule(rescale_zero_terminal_snr=True)
    v = make_schedule(rescale_zero_terminal_snr=True, prediction_type="v_prediction")
    assert float(snr(eps, t)[0]) == 0.0
    np.testing.assert_array_equal(min_snr_weight(eps, t), [1.0])
    np.testing.assert_array_equal(min_snr_weight(v, t), [0.0])


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(beta_schedule="cosine"), "beta_schedule"),
        (dict(prediction_type="sample"), "prediction_type"),
        (dict(beta_start=0.02, beta_end=0.01), "beta_start"),
        (dict(num_train_timesteps=1), "num_train_timesteps"),
    ],
)
def test_make_schedule_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        make_schedule(**kwargs)


def test_add_noise_rejects_timesteps_of_wrong_shape():
    x0 = jnp.zeros((2, 4, 4, 4))
    with pytest.raises(ValueError, match="timesteps t"):
        add_noise(make_schedule(), x0, x0, jnp.array([1, 2, 3]))
