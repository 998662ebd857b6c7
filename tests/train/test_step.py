"""The train step on the tiny config: sharding invariance, overfitting one batch, non-finite steps skipped."""
import re
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from emo_jax.batch import batch_spec, random_batch
from emo_jax.config import load_config, model_config
from emo_jax.models.emo import EMO
from emo_jax.params import module_of
from emo_jax.sharding import make_mesh
from emo_jax.train.state import StateFactory, prune, step_key
from emo_jax.train.step import Encoders, denoising_error, diffusion_loss, make_train_step, noise_schedule
from emo_jax.train.train import global_batch, used_keys
from tests.helpers import rel_err
from tests.train.common import make_config, pipeline_batches, step_runner


@pytest.fixture(scope="module")
def config(prepared, compile_cache):
    return make_config("stage2", prepared)


@pytest.fixture(scope="module")
def batches(config):
    return pipeline_batches(config, 3)


@pytest.fixture(scope="module")
def sharded(config):
    mesh = make_mesh(config.mesh.shape)
    return (mesh, *step_runner(config, mesh))


def _losses(mesh, runner, batches, config):
    _, state, step, frozen, keys = runner
    losses = []
    with jax.set_mesh(mesh), nn.logical_axis_rules(config.mesh.rules):
        for batch in batches:
            state, metrics = step(state, frozen, global_batch(batch, mesh, keys))
            losses.append(float(metrics["loss"]))
    return losses, state


def test_sharded_losses_equal_single_device(config, batches, sharded):
    mesh8, *runner8 = sharded
    losses8, _ = _losses(mesh8, runner8, batches, config)
    one = config.copy_and_resolve_references()
    one.mesh.shape.update(dict(data=1, fsdp=1, tensor=1))
    mesh1 = make_mesh(one.mesh.shape, jax.devices()[:1])
    losses1, _ = _losses(mesh1, step_runner(one, mesh1), batches, one)
    assert len(set(losses1)) == 3  # three different batches, three different losses
    assert rel_err(losses8, losses1) < 1e-5, (losses8, losses1)


@pytest.fixture(scope="module")
def overfit(prepared, batches):
    """60 steps on one batch at lr 1e-3: (losses, trainable mask, EMA decay, (params, EMA) before and after the
    last step, on the host)."""
    # One device: the sharded test above covers the mesh, and 60 steps on 8 simulated devices sharing two CPU
    # cores cost ten minutes.
    config = make_config("stage2", prepared, lr=1e-3)
    config.mesh.shape.update(dict(data=1, fsdp=1, tensor=1))
    mesh = make_mesh(config.mesh.shape, jax.devices()[:1])
    factory, state, step, frozen, keys = step_runner(config, mesh)
    batch = global_batch(batches[0], mesh, keys)
    losses = []
    with jax.set_mesh(mesh), nn.logical_axis_rules(config.mesh.rules):
        for _ in range(60):
            before = jax.device_get((state.params, state.ema))
            # Step 0's key every time: the same timesteps, noise and dropout, so memorising is possible.
            state, metrics = step(state.replace(step=jnp.zeros((), jnp.int32)), frozen, batch)
            losses.append(float(metrics["loss"]))
    return losses, factory.mask, config.train.ema_decay, before, jax.device_get((state.params, state.ema))


def test_overfitting_one_batch(overfit):
    losses = overfit[0]
    assert losses[0] / min(losses[-3:]) >= 10, losses


def test_ema_moves_towards_the_new_params_by_one_minus_decay(overfit):
    _, mask, decay, (_, ema_before), (params, ema) = overfit
    params = prune(params, mask)
    assert jax.tree.structure(ema) == jax.tree.structure(params)  # the trainable leaves only
    moved = 0.0
    for e0, p1, e1 in zip(jax.tree.leaves(ema_before), jax.tree.leaves(params), jax.tree.leaves(ema)):
        expected = decay * e0.astype(np.float64) + (1 - decay) * p1
        moved = max(moved, float(np.abs(e1 - e0).max()))
        # float32 rounding of the stored EMA is the only slack: not updating it would be off by 1e-2 |p1 - e0|.
        assert np.abs(e1 - expected).max() <= 1e-3 * np.abs(p1 - e0).max() + 1e-7 * np.abs(e0).max()
    assert moved > 1e-6  # the EMA really moved in the last step, so the check above can fail


def test_non_finite_step_is_skipped_and_counted(config, batches, sharded):
    mesh, factory, state, step, frozen, keys = sharded
    state = factory.create(config.seed)
    poisoned = dict(batches[0], audio=np.full_like(batches[0]["audio"], np.nan))
    before = jax.device_get((state.params, state.ema, state.opt_state))
    with jax.set_mesh(mesh), nn.logical_axis_rules(config.mesh.rules):
        state, bad = step(state, frozen, global_batch(poisoned, mesh, keys))
        after_bad = jax.device_get((state.params, state.ema, state.opt_state))
        state, good = step(state, frozen, global_batch(batches[0], mesh, keys))
    assert not bad["finite"] and int(bad["skipped"]) == 1 and int(bad["bad_steps"]) == 1 and int(state.step) == 2
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after_bad)))
    assert good["finite"] and int(good["bad_steps"]) == 0 and int(good["skipped"]) == 1


def test_precomputed_latents_and_audio_features_train_without_encoders():
    """Schema-v2 batches (VAE latents, wav2vec2 features, as emo_jax.batch describes them) need no encoder."""
    config = load_config("configs/tiny.py:stage3")
    config.train.update(batch_size=2, warmup_steps=0, lr=1e-3)
    mesh = make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
    factory = StateFactory(config, mesh)
    batch = random_batch(batch_spec(config), 2, np.random.default_rng(0), encoded=True)
    assert {"target_latents", "motion_latents", "reference_latent", "audio_features", "speed"} <= set(batch)
    step = jax.jit(make_train_step(config, factory.model, factory.tx, factory.mask, Encoders(None, None)))
    state = factory.create(0)
    before = jax.device_get(state.params)
    with jax.set_mesh(mesh), nn.logical_axis_rules(config.mesh.rules):
        state, metrics = step(state, {"vae": None, "audio": None}, global_batch(batch, mesh, used_keys(config, batch)))
    assert bool(metrics["finite"]) and float(metrics["loss"]) > 0
    changed = {module_of(p) for p, v in traverse_util.flatten_dict(jax.device_get(state.params)).items()
               if not np.array_equal(v, traverse_util.flatten_dict(before)[p])}
    assert changed == {"temporal", "speed"}  # stage 3's groups moved, and only they


def _stub_emo(seen, scale):
    """Replaces EMO's forward by `scale * x_t` and records what it was asked (x_t, t, the keep flags) in `seen`."""

    def stub(next_fun, args, kwargs, context):
        if isinstance(context.module, EMO) and context.method_name == "__call__":
            seen.update(x_t=np.asarray(args[0]), t=np.asarray(args[1]), **{k: np.asarray(v) for k, v in kwargs.items()
                                                                           if k.endswith("_keep")})
            return scale * args[0]
        return next_fun(*args, **kwargs)

    return nn.intercept_methods(stub)


def _stub_loss(config, output_scale=0.0, seed=0):
    """diffusion_loss with EMO's forward replaced by a stub returning `output_scale * x_t`.

    Returns (loss, x0, the stub's x_t, t, keep flags): what the model was asked, to recompute the loss by hand.
    """
    rng = np.random.default_rng(seed)
    x0 = jnp.asarray(rng.standard_normal((3, 2, 4, 4, 4)), jnp.float32)
    inputs = {"x0": x0, "ref_latent_BHWC": jnp.zeros((3, 4, 4, 4)), "face_mask": jnp.zeros((3, 8, 8, 1))}
    seen = {}
    with _stub_emo(seen, output_scale):
        loss = diffusion_loss(EMO(model_config(config)), {}, noise_schedule(config), config, inputs,
                              jax.random.PRNGKey(seed))
    return float(loss), np.asarray(x0, np.float64), seen


@pytest.mark.parametrize("prediction_type,zero_snr,gamma", [("epsilon", False, 0.0), ("v_prediction", True, 0.0),
                                                            ("epsilon", False, 5.0), ("v_prediction", True, 5.0)])
def test_loss_is_the_weighted_error_to_the_noise_or_velocity_target(prediction_type, zero_snr, gamma):
    config = load_config("configs/tiny.py:stage2")
    config.train.update(prediction_type=prediction_type, zero_terminal_snr=zero_snr, min_snr_gamma=gamma)
    loss, x0, seen = _stub_loss(config, output_scale=0.5)
    ab = np.asarray(noise_schedule(config).alphas_cumprod, np.float64)[seen["t"]][:, None, None, None, None]
    noise = (seen["x_t"] - np.sqrt(ab) * x0) / np.sqrt(1 - ab)  # what the loss drew, read back from x_t
    assert 0.7 < noise.std() < 1.3 and len(set(seen["t"].tolist())) == 3
    target = noise if prediction_type == "epsilon" else np.sqrt(ab) * noise - np.sqrt(1 - ab) * x0
    per_example = ((0.5 * seen["x_t"] - target) ** 2).mean(axis=(1, 2, 3, 4))
    if gamma:
        snr = (ab / (1 - ab)).reshape(-1)
        per_example *= np.minimum(snr, gamma) / (snr if prediction_type == "epsilon" else snr + 1)
    assert abs(loss - per_example.mean()) < 1e-5 * per_example.mean()


def test_denoising_error_is_per_example_at_the_given_timesteps_and_noise():
    """benchmarks/condition_use.py compares conditions at fixed t and noise: the error must be exactly theirs."""
    config = load_config("configs/tiny.py:stage2")
    config.train.update(prediction_type="v_prediction", zero_terminal_snr=True)
    schedule = noise_schedule(config)
    rng = np.random.default_rng(1)
    x0, noise = (jnp.asarray(rng.standard_normal((2, 2, 4, 4, 4)), jnp.float32) for _ in range(2))
    t = jnp.asarray([999, 10])
    seen = {}
    with _stub_emo(seen, 0.5):
        err = denoising_error(EMO(model_config(config)), {}, schedule, x0, {"motion_keep": jnp.asarray([True, False])},
                              t, noise)
    ab = np.asarray(schedule.alphas_cumprod, np.float64)[[999, 10]][:, None, None, None, None]
    x_t = np.sqrt(ab) * np.asarray(x0, np.float64) + np.sqrt(1 - ab) * np.asarray(noise, np.float64)
    target = np.sqrt(ab) * np.asarray(noise, np.float64) - np.sqrt(1 - ab) * np.asarray(x0, np.float64)
    expected = ((0.5 * x_t - target) ** 2).mean(axis=(1, 2, 3, 4))
    assert err.shape == (2,) and rel_err(np.asarray(err), expected) < 1e-5
    assert seen["t"].tolist() == [999, 10] and seen["motion_keep"].tolist() == [True, False]


@pytest.mark.parametrize("dropped", ["ref", "audio", "motion"])
def test_each_condition_dropout_drops_its_own_condition(dropped):
    config = load_config("configs/tiny.py:stage2")
    config.train.update({f"{c}_dropout": 1.0 if c == dropped else 0.0 for c in ("ref", "audio", "motion")})
    _, _, seen = _stub_loss(config)
    for c in ("ref", "audio", "motion"):
        assert seen[f"{c}_keep"].shape == (3,)
        assert seen[f"{c}_keep"].all() == (c != dropped) and seen[f"{c}_keep"].any() == (c != dropped), c


def test_step_keys_differ_per_step_and_depend_only_on_the_state():
    state = types.SimpleNamespace(rng=jax.random.PRNGKey(7), step=jnp.int32(5))
    np.testing.assert_array_equal(step_key(state), jax.random.fold_in(jax.random.PRNGKey(7), 5))
    keys = {tuple(np.asarray(step_key(types.SimpleNamespace(rng=state.rng, step=jnp.int32(i)))).tolist())
            for i in range(4)}
    assert len(keys) == 4


def test_the_update_writes_the_adam_moments_in_place():
    """The step compiled as emo-train runs it (state donated) updates every Adam moment in place, copying none.
    A non-finite guard as a select per leaf read each old moment after its new value was written, so XLA copied
    every moment first (1,332 copies a step at benchmarks/cpu_shapes.py's small shape)."""
    config = load_config("configs/tiny.py:stage3")
    config.train.batch_size = 2
    mesh = make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
    factory = StateFactory(config, mesh)
    batch = random_batch(batch_spec(config), 2, np.random.default_rng(0), encoded=True)
    step = jax.jit(make_train_step(config, factory.model, factory.tx, factory.mask, Encoders(None, None)),
                   donate_argnums=0)
    with jax.set_mesh(mesh), nn.logical_axis_rules(config.mesh.rules):
        hlo = step.lower(factory.create(0), {"vae": None, "audio": None},
                         global_batch(batch, mesh, used_keys(config, batch))).compile().as_text()
    moments = re.findall(r"%(state_opt_state\S*?_(?:mu|nu)_\S*?) = \S+ parameter", hlo)
    assert len(moments) > 10  # the program's moment parameters are found by name, so the check below can fail
    copied = [m for m in moments if re.search(rf"copy\(%{re.escape(m)}\)", hlo)]
    assert not copied, f"{len(copied)} of {len(moments)} Adam moments copied, e.g. {copied[0]}"
