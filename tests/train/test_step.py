"""The train step on the tiny config: sharding invariance, overfitting one batch, non-finite steps skipped."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emo_jax.sharding import make_mesh
from emo_jax.train.train import global_batch
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
    with mesh, nn.logical_axis_rules(config.mesh.rules):
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


def test_overfitting_one_batch(prepared, batches):
    # One device: the sharded test above covers the mesh, and 60 steps on 8 simulated devices sharing two CPU
    # cores cost ten minutes.
    config = make_config("stage2", prepared, lr=1e-3)
    config.mesh.shape.update(dict(data=1, fsdp=1, tensor=1))
    mesh = make_mesh(config.mesh.shape, jax.devices()[:1])
    _, state, step, frozen, keys = step_runner(config, mesh)
    batch = global_batch(batches[0], mesh, keys)
    losses = []
    with mesh, nn.logical_axis_rules(config.mesh.rules):
        for _ in range(60):
            # Step 0's key every time: the same timesteps, noise and dropout, so memorising is possible.
            state, metrics = step(state.replace(step=jnp.zeros((), jnp.int32)), frozen, batch)
            losses.append(float(metrics["loss"]))
    assert losses[0] / min(losses[-3:]) >= 10, losses


def test_non_finite_step_is_skipped_and_counted(config, batches, sharded):
    mesh, factory, state, step, frozen, keys = sharded
    state = factory.create(config.seed)
    poisoned = dict(batches[0], audio=np.full_like(batches[0]["audio"], np.nan))
    before = jax.device_get((state.params, state.ema, state.opt_state))
    with mesh, nn.logical_axis_rules(config.mesh.rules):
        state, bad = step(state, frozen, global_batch(poisoned, mesh, keys))
        after_bad = jax.device_get((state.params, state.ema, state.opt_state))
        state, good = step(state, frozen, global_batch(batches[0], mesh, keys))
    assert not bad["finite"] and int(bad["skipped"]) == 1 and int(bad["bad_steps"]) == 1 and int(state.step) == 2
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after_bad)))
    assert good["finite"] and int(good["bad_steps"]) == 0 and int(good["skipped"]) == 1
