"""Checkpoints: restore onto another mesh, restore_params for the sampler, and damaged steps found by checksum."""
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from jax.sharding import Mesh, NamedSharding, PartitionSpec, SingleDeviceSharding

from emo_jax.cli.export import main as export_main
from emo_jax.errors import CheckpointError
from emo_jax.sharding import make_mesh
from emo_jax.train.checkpoint import Checkpointer, restore_params
from emo_jax.train.state import StateFactory, TrainState
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


# ---------------------------------------------------------------------------------------------- damaged steps
# A small hand-made state (no model, no compile): its params kernel is split over all 8 devices when saved. The
# kernel's bit patterns are random (bit 30 cleared, so every value is finite and below 2): Orbax's zstd stores
# most of them as they are, so the tests can find and flip some of their bytes.


def _kernel(step: int) -> jax.Array:
    bits = jax.random.bits(jax.random.key(step), (64, 64), jnp.uint32) & jnp.uint32(0xBFFFFFFF)
    return jax.lax.bitcast_convert_type(bits, jnp.float32)


def _small_state(step: int, sharding=None) -> TrainState:
    mesh = Mesh(np.array(jax.devices()), ("x",))
    placed = sharding or NamedSharding(mesh, PartitionSpec())
    params = {"a": {"kernel": _kernel(step)}, "b": {"bias": jnp.ones(3)}}
    state = jax.device_put(TrainState(step=jnp.int32(step), params=params, ema=params, rng=jax.random.key(0),
                                      opt_state=(jnp.zeros(3), {"mu": jnp.ones(2)}), bad_steps=jnp.int32(0),
                                      skipped=jnp.int32(step)), placed)
    if sharding is None:
        kernel = jax.device_put(state.params["a"]["kernel"], NamedSharding(mesh, PartitionSpec("x")))
        state = state.replace(params={"a": {"kernel": kernel}, "b": state.params["b"]})
    return state


@pytest.fixture
def two_steps(tmp_path):
    """A workdir with intact checkpoints at steps 1 and 2."""
    config = make_config("stage2", str(tmp_path / "no_data"))
    checkpoints = Checkpointer(str(tmp_path), config)
    for step in (1, 2):
        checkpoints.save(_small_state(step), None, force=True)
    checkpoints.wait()
    checkpoints.close()
    return tmp_path, config


def _same(a: TrainState, b: TrainState) -> bool:
    keys = jax.random.key_data
    return _equal(a.replace(rng=keys(a.rng)), b.replace(rng=keys(b.rng)))


def _data_files(workdir, step: int) -> list:
    return [p for p in (workdir / "checkpoints" / str(step) / "params").rglob("*") if p.is_file() and p.parent.name == "d"]


def _flip_kernel_row(workdir, step: int) -> None:
    """Inverts 16 stored bytes of step's params kernel (the start of a row), leaving every file's framing intact."""
    kernel = np.asarray(jax.device_get(_small_state(step).params["a"]["kernel"]))
    for row in kernel:
        piece = row.tobytes()[:16]
        for path in _data_files(workdir, step):
            data = path.read_bytes()
            at = data.find(piece)
            if at >= 0:
                path.write_bytes(data[:at] + bytes(b ^ 0xFF for b in piece) + data[at + len(piece):])
                return
    raise AssertionError("none of the kernel's rows was found stored as it is")


def _truncate(workdir, step: int) -> None:
    path = max(_data_files(workdir, step), key=lambda p: p.stat().st_size)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _one_device() -> SingleDeviceSharding:
    return SingleDeviceSharding(jax.devices()[0])


def test_intact_steps_verify_on_another_sharding_and_on_the_host(two_steps, caplog, monkeypatch):
    workdir, config = two_steps
    restored = Checkpointer(str(workdir), config).restore(_small_state(0, _one_device()), None)
    assert int(restored.step) == 2 and _same(restored, _small_state(2))
    monkeypatch.chdir(workdir.parent)
    _, params = restore_params(workdir.name)  # a relative path, as a user types it
    assert np.array_equal(params["a"]["kernel"], jax.device_get(_small_state(2).params["a"]["kernel"]))
    assert not [r for r in caplog.records if r.levelname == "WARNING" and "emo_jax" in r.name]


@pytest.mark.parametrize("damage", [_flip_kernel_row, _truncate])
def test_a_damaged_newest_step_falls_back_to_the_previous_one(two_steps, damage, caplog):
    workdir, config = two_steps
    damage(workdir, 2)
    checkpoints = Checkpointer(str(workdir), config)
    with caplog.at_level(logging.WARNING, logger="emo_jax.train.checkpoint"):
        restored = checkpoints.restore(_small_state(0, _one_device()), None)
    assert int(restored.step) == 1 and _same(restored, _small_state(1))
    _, params = restore_params(str(workdir))
    assert np.array_equal(params["a"]["kernel"], jax.device_get(_small_state(1).params["a"]["kernel"]))
    # The resumed run reaching step 2 again replaces the damaged step instead of keeping it.
    checkpoints.save(_small_state(2), None, force=True)
    checkpoints.wait()
    checkpoints.close()
    assert _same(Checkpointer(str(workdir), config).restore(_small_state(0, _one_device()), None, step=2),
                 _small_state(2))
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "checkpoint step 2" in warning and "item 'params'" in warning and "restored step 1" in warning
    if damage is _flip_kernel_row:  # the values decode, so only the checksum sees it, and names the leaf
        assert "leaf ['a']['kernel']" in warning


@pytest.mark.parametrize("damage", [_flip_kernel_row, _truncate])
def test_asking_for_a_damaged_step_is_a_checkpoint_error(two_steps, damage):
    workdir, config = two_steps
    damage(workdir, 2)
    with pytest.raises(CheckpointError, match=r"checkpoint step 2 .* is corrupt: item 'params'"):
        Checkpointer(str(workdir), config).restore(_small_state(0, _one_device()), None, step=2)
    with pytest.raises(CheckpointError, match=r"checkpoint step 2 .* is corrupt: item 'params'"):
        restore_params(str(workdir), step=2)


def test_emo_export_of_a_damaged_step_exits_2_and_writes_nothing(two_steps, capsys):
    workdir, _ = two_steps
    _flip_kernel_row(workdir, 2)
    out = workdir / "exported"
    assert export_main(["--checkpoint", str(workdir), "--out", str(out), "--step", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("emo-export: error: checkpoint step 2") and "['a']['kernel']" in err[0]
    assert not out.exists()


def test_a_step_saved_for_another_model_is_named_as_such_without_fallback(two_steps, caplog):
    workdir, config = two_steps
    target = _small_state(0, _one_device())
    target = target.replace(params={"a": {"kernel": jnp.zeros((32, 64))}, "b": target.params["b"]})
    with pytest.raises(CheckpointError, match=r"step 2 .* saved for another model: params leaf \['a'\]\['kernel'\] "
                                              r"is \(64, 64\) there and \(32, 64\) in this config"):
        Checkpointer(str(workdir), config).restore(target, None)
    assert not [r for r in caplog.records if "trying the previous step" in r.getMessage()]
