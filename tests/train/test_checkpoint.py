"""Checkpoints: restore onto another mesh, and restore_params for the sampler."""
import jax
import numpy as np
import pytest
from flax import traverse_util

from emo_jax.sharding import make_mesh
from emo_jax.train.checkpoint import Checkpointer, restore_params
from emo_jax.train.state import StateFactory
from emo_jax.train.train import initial_params
from tests.train.common import make_config


def _equal(a, b) -> bool:
    la, lb = jax.tree.leaves(jax.device_get(a)), jax.tree.leaves(jax.device_get(b))
    return len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb))


def test_restore_onto_another_mesh_and_for_the_sampler(prepared, compile_cache, tmp_path):
    config = make_config("stage2", prepared, steps=7)
    saver = StateFactory(config, make_mesh(config.mesh.shape))
    state = saver.create(config.seed)
    # Distinct EMA and params, so restore_params' choice between them is visible.
    state = state.replace(ema=jax.tree.map(lambda e: e + 1.0, state.ema), step=state.step + 7)
    checkpoints = Checkpointer(str(tmp_path), config)
    checkpoints.save(state, None, force=True)
    checkpoints.wait()

    other = config.copy_and_resolve_references()
    other.mesh.shape.update(dict(data=1, fsdp=4, tensor=2))
    loader = StateFactory(other, make_mesh(other.mesh.shape))
    restored = Checkpointer(str(tmp_path), other).restore(loader.abstract_with_shardings(), None)
    assert _equal(restored, state)
    kernel = restored.params["backbone"]["down_blocks_1__resnets_0"]["conv2"]["kernel"]
    assert kernel.sharding == loader.param_shardings["backbone"]["down_blocks_1__resnets_0"]["conv2"]["kernel"]
    # [3, 3, 64, 64] split over fsdp (inputs) and tensor (outputs): fsdp 4 instead of 2 really moves the data.
    assert kernel.sharding.shard_shape(kernel.shape) == (3, 3, 16, 32)
    assert saver.param_shardings["backbone"]["down_blocks_1__resnets_0"]["conv2"]["kernel"].shard_shape(
        kernel.shape) == (3, 3, 32, 32)

    saved_config, raw = restore_params(str(tmp_path), use_ema=False)
    _, smoothed = restore_params(str(tmp_path / "checkpoints"), step=7)
    assert saved_config.train.stage == 2 and tuple(saved_config.mesh.shape.values()) == (2, 2, 2)
    assert all(isinstance(v, np.ndarray) for v in jax.tree.leaves(raw))
    assert _equal(raw, state.params)
    flat, ema = traverse_util.flatten_dict(smoothed), traverse_util.flatten_dict(jax.device_get(state.ema))
    assert all(np.array_equal(flat[k], v) for k, v in ema.items())
    assert ema.keys() == flat.keys()  # stage 2 trains every module the model has
    with pytest.raises(ValueError, match="no checkpoint at step 3"):
        restore_params(str(tmp_path), step=3)


def test_next_stage_starts_from_the_previous_stages_params(prepared, compile_cache, tmp_path):
    config = make_config("stage2", prepared)
    factory = StateFactory(config, make_mesh(config.mesh.shape))
    state = factory.create(config.seed)
    checkpoints = Checkpointer(str(tmp_path), config)
    checkpoints.save(state, None, force=True)
    checkpoints.wait()
    stage3 = make_config("stage3", prepared)
    stage3.init.previous_stage = str(tmp_path)
    fresh = jax.tree.map(lambda x: np.full(x.shape, 7.0, x.dtype),
                         StateFactory(stage3, make_mesh(stage3.mesh.shape)).abstract.params)
    started = traverse_util.flatten_dict(initial_params(stage3, fresh))
    previous = traverse_util.flatten_dict(jax.device_get(state.params))
    assert previous.keys() < started.keys()
    assert all(np.array_equal(started[k], v) for k, v in previous.items())
    assert all(np.all(started[k] == 7.0) for k in started.keys() - previous.keys())  # new speed layers stay fresh
