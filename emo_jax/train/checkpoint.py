"""Training checkpoints with Orbax: params, optimiser state, EMA, counters, the data iterator and the config.

Layout of `<workdir>/checkpoints/<step>/`: `params` and `ema` (float32 trees, `ema` holding the trainable
leaves only), `train` (opt_state, step, rng, bad_steps, skipped), `data` (one Grain iterator state per
process, JSON), `config` (the run's ConfigDict as JSON), `checksums` (per leaf of params, ema and train, two
sums of its bit pattern, JSON). Saves are asynchronous; the last train.keep_checkpoints are kept, plus every step
divisible by train.keep_every.

Every restore recomputes the checksums and compares: a step whose files were changed or cut short is a
CheckpointError naming the step, the item and the first bad leaf. Without an asked-for step, restores fall back
to the newest intact step and log a warning naming the bad one. A step saved for another model (a params or ema
leaf absent or of another shape) is a CheckpointError naming the leaf, without fallback.
"""
from __future__ import annotations

import json
import logging
import os
import pathlib

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from emo_jax.errors import CheckpointError, ConfigError
from emo_jax.paths import require_folder
from emo_jax.train.state import TrainState, merge

log = logging.getLogger(__name__)

TRAIN_FIELDS = ("opt_state", "step", "rng", "bad_steps", "skipped")


# ---------------------------------------------------------------------------------------------- checksums
# Per leaf: the sum of its elements' bit patterns and the sum weighted by each element's row-major position
# (1-based), both as uint32, so mod 2^32. Integer sums are exact in any order, so the device version (on any
# sharding, any mesh) and the host version (numpy) give the same two numbers.

_UINT = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}


def _device_sums(x: jax.Array) -> jax.Array:
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if x.dtype == jnp.bool_:
        x = x.astype(jnp.uint8)
    bits = jax.lax.bitcast_convert_type(x, _UINT[x.dtype.itemsize]).astype(jnp.uint32)
    position = jnp.ones(x.shape, jnp.uint32)
    stride = 1
    for axis in reversed(range(x.ndim)):
        position = position + jax.lax.broadcasted_iota(jnp.uint32, x.shape, axis) * jnp.uint32(stride)
        stride *= x.shape[axis]
    return jnp.stack([jnp.sum(bits, dtype=jnp.uint32), jnp.sum(bits * position, dtype=jnp.uint32)])


def _host_sums(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x)
    bits = x.view(f"u{x.dtype.itemsize}").astype(np.uint32).reshape(-1)
    position = np.arange(1, bits.size + 1, dtype=np.uint32)
    return np.stack([np.sum(bits, dtype=np.uint32), np.sum(bits * position, dtype=np.uint32)])


@jax.jit
def _tree_sums(tree):
    return jax.tree.map(_device_sums, tree)


def checksums(tree, host: bool = False) -> dict[str, list[int]]:
    """{leaf path: [sum, position-weighted sum]} of a tree's leaves; `host` for numpy trees on this host."""
    sums = jax.tree.map(_host_sums, tree) if host else jax.device_get(_tree_sums(tree))
    flat, _ = jax.tree_util.tree_flatten_with_path(sums)
    return {jax.tree_util.keystr(path): [int(v) for v in value] for path, value in flat}


class DamagedStepError(CheckpointError):
    """A checkpoint step whose files are unreadable or whose values differ from their saved checksums."""


def _verify(folder: str, step: int, item: str, saved: dict | None, tree, host: bool = False) -> None:
    """Raises CheckpointError naming the first leaf of `tree` whose checksum differs from the saved one."""
    if saved is None:
        log.warning("checkpoint step %d in %s has no checksums (saved before emo-jax kept them); %s is unverified",
                    step, folder, item)
        return
    expected = saved.get(item, {})
    found = checksums(tree, host=host)
    if found.keys() != expected.keys():
        missing = sorted(expected.keys() - found.keys()) or sorted(found.keys() - expected.keys())
        raise DamagedStepError(f"checkpoint step {step} in {folder} is corrupt: item {item!r} does not have the "
                              f"leaves it was saved with (first differing: {missing[0]})")
    for path, value in found.items():
        if value != expected[path]:
            raise DamagedStepError(f"checkpoint step {step} in {folder} is corrupt: item {item!r}, leaf {path} "
                                  "does not match its saved checksum; restore another step (--step)")


def _read(folder: str, step: int, item: str, restore):
    """restore() of one item, its failures (a truncated or unreadable file) as a CheckpointError naming it."""
    try:
        return restore()
    except Exception as e:  # Orbax and TensorStore raise many types for a damaged file
        detail = (str(e).strip().splitlines() or [""])[0].split(". See full TensorStore details")[0]
        raise DamagedStepError(f"checkpoint step {step} in {folder} is corrupt: item {item!r} cannot be read "
                              f"({type(e).__name__}: {detail[:300]}); restore another step (--step)") from e


def _check_shapes(folder: str, step: int, item: str, metadata, target) -> None:
    """A CheckpointError (not damage: no fallback) when `target` is not the tree of shapes `item` was saved with."""
    def shapes(tree):
        flat, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))
        return {jax.tree_util.keystr(path): tuple(leaf.shape) for path, leaf in flat}

    saved, wanted = shapes(metadata.tree if hasattr(metadata, "tree") else metadata), shapes(target)
    for path in sorted(saved.keys() | wanted.keys()):
        if saved.get(path) != wanted.get(path):
            raise CheckpointError(
                f"checkpoint step {step} in {folder} was saved for another model: {item} leaf {path} is "
                f"{saved.get(path, 'absent')} there and {wanted.get(path, 'absent')} in this config; train with the "
                "config that saved it, or start a new --workdir")


def _newest_intact(folder: str, steps: list[int], step: int | None, restore_step, damaged: set[int] | None = None):
    """restore_step(s) of the asked-for step, or of the newest step that restores intact (warning per damaged one,
    whose step goes into `damaged`); other CheckpointErrors (a step saved for another model) stop at once."""
    if step is not None:
        if step not in steps:
            raise CheckpointError(f"{folder} has no checkpoint at step {step}; it has steps {sorted(steps)}")
        return restore_step(step)
    errors = []
    for candidate in sorted(steps, reverse=True):
        try:
            result = restore_step(candidate)
        except DamagedStepError as e:
            errors.append(str(e))
            if damaged is not None:
                damaged.add(candidate)
            log.warning("%s; trying the previous step", e)
            continue
        if errors:
            log.warning("restored step %d, the newest intact checkpoint in %s", candidate, folder)
        return result
    raise CheckpointError(f"no intact checkpoint in {folder}: " + "; ".join(errors))


def checkpoint_folder(path: str) -> str:
    """A run's checkpoints folder from the run's workdir or the folder itself."""
    inner = os.path.join(path, "checkpoints")
    return inner if os.path.isdir(inner) else path


def write_whole_shards_in_one_process() -> None:
    """In a run of one process, orbax writes each array shard whole instead of replica-parallel.

    Replica-parallel saving splits every replicated shard into one slice per replica, so that processes holding
    replicas share the writing. When one process holds every replica there is nobody to share with, and the split
    only costs one eager device slice per replica per shard: about 23,000 of them per save of the tiny model on 8
    CPU devices, where a save took 30 s, and 13 s without them. The files are the same either way. Runs of
    several processes keep orbax's default.
    """
    if jax.process_count() == 1:
        ocp.type_handlers.register_type_handler(
            jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False), override=True)


class Checkpointer:
    """Saves and restores a run's TrainState and data iterator (every process calls every method)."""

    def __init__(self, workdir: str, config: ml_collections.ConfigDict):
        t = config.train
        write_whole_shards_in_one_process()
        if t.keep_checkpoints < 1:
            raise ValueError(f"train.keep_checkpoints must be >= 1, got {t.keep_checkpoints}")
        keep = [policies.LatestN(t.keep_checkpoints)]
        if t.keep_every > 0:
            keep.append(policies.EveryNSteps(t.keep_every))
        options = ocp.CheckpointManagerOptions(preservation_policy=policies.AnyPreservationPolicy(keep),
                                               enable_async_checkpointing=True, create=True)
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        self.config = config
        self.manager = ocp.CheckpointManager(self.directory, options=options)
        self.damaged: set[int] = set()  # steps a restore found damaged; a save of the same step replaces them

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, state: TrainState, data_iterator, force: bool = False) -> bool:
        """Starts an asynchronous save of `state` at its step; the device-to-host copy finishes before return."""
        step = int(jax.device_get(state.step))
        if step in self.damaged:
            log.warning("replacing the damaged checkpoint step %d in %s", step, self.directory)
            self.manager.delete(step)
            self.damaged.discard(step)
        if step in self.manager.all_steps():
            return False
        args = {
            "params": ocp.args.StandardSave(state.params),
            "ema": ocp.args.StandardSave(state.ema),
            "train": ocp.args.StandardSave({k: getattr(state, k) for k in TRAIN_FIELDS}),
            "config": ocp.args.JsonSave(json.loads(self.config.to_json())),
            "checksums": ocp.args.JsonSave({item: checksums(tree) for item, tree in (
                ("params", state.params), ("ema", state.ema),
                ("train", {k: getattr(state, k) for k in TRAIN_FIELDS}))}),
        }
        if data_iterator is not None:
            args["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        return self.manager.save(step, args=ocp.args.Composite(**args), force=force)

    def restore(self, target: TrainState, data_iterator, step: int | None = None) -> TrainState:
        """The checkpoint at `step` (default: the newest intact one) placed onto `target`'s shardings, which may
        belong to another mesh than the one that saved it; `data_iterator` is moved to the saved position in
        place. A damaged `step` is a CheckpointError; without `step` a damaged newest one falls back."""
        steps = list(self.manager.all_steps())
        if not steps:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        return _newest_intact(self.directory, steps, step,
                              lambda s: self._restore_step(target, data_iterator, s), self.damaged)

    def _restore_step(self, target: TrainState, data_iterator, step: int) -> TrainState:
        saved = self._saved_checksums(step)
        targets = {"params": target.params, "ema": target.ema,
                   "train": {k: getattr(target, k) for k in TRAIN_FIELDS}}
        restored = {}
        for item, tree in targets.items():
            if item != "train":  # opt_state's saved tree names its tuples differently; it mirrors params anyway
                folder = pathlib.Path(self.directory, str(step), item)
                metadata = _read(self.directory, step, item, lambda: ocp.PyTreeCheckpointHandler().metadata(folder))
                _check_shapes(self.directory, step, item, metadata, tree)
            args = ocp.args.Composite(**{item: ocp.args.StandardRestore(tree)})
            restored[item] = _read(self.directory, step, item, lambda: self.manager.restore(step, args=args)[item])
            _verify(self.directory, step, item, saved, restored[item])
        if data_iterator is not None:  # last: it moves the iterator, which only an intact step may do
            args = ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(data_iterator))
            _read(self.directory, step, "data", lambda: self.manager.restore(step, args=args))
        log.info("restored step %d from %s", step, self.directory)
        return TrainState(params=restored["params"], ema=restored["ema"], **restored["train"])

    def _saved_checksums(self, step: int) -> dict | None:
        if not os.path.isdir(os.path.join(self.directory, str(step), "checksums")):
            return None
        args = ocp.args.Composite(checksums=ocp.args.JsonRestore())
        return _read(self.directory, step, "checksums",
                     lambda: self.manager.restore(step, args=args)["checksums"])

    def wait(self) -> None:
        """Blocks until every started save is on disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def _host_restore(manager: ocp.CheckpointManager, step: int, item: str) -> dict:
    """One param-tree item as numpy arrays on this host, whatever mesh saved it."""
    meta = manager.item_metadata(step)[item]
    tree = meta.tree if hasattr(meta, "tree") else meta
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    return manager.restore(step, args=ocp.args.Composite(**{
        item: ocp.args.PyTreeRestore(item=tree, restore_args=restore_args)}))[item]


def restore_params(checkpoint_dir: str, step: int | None = None,
                   use_ema: bool = True) -> tuple[ml_collections.ConfigDict, dict]:
    """(config, params) of a training checkpoint, params a plain tree of numpy arrays on the host.

    `checkpoint_dir` is a run's workdir or its checkpoints/ folder, absolute or relative; `step` defaults to the
    newest intact one. With use_ema the trainable parameters are their EMA, the frozen ones the (unchanged) params.
    """
    folder = os.path.abspath(checkpoint_folder(checkpoint_dir))
    require_folder(folder, "checkpoint folder", "pass an emo-train --workdir", CheckpointError)
    handlers = {name: ocp.PyTreeCheckpointHandler() for name in ("params", "ema")}
    handlers.update(config=ocp.JsonCheckpointHandler(), checksums=ocp.JsonCheckpointHandler())
    options = ocp.CheckpointManagerOptions(read_only=True)
    with ocp.CheckpointManager(folder, options=options, item_handlers=handlers) as manager:
        steps = list(manager.all_steps())
        if not steps:
            raise CheckpointError(f"{folder} holds no checkpoints; is it an emo-train --workdir?")

        def restore_step(s: int) -> tuple[ml_collections.ConfigDict, dict]:
            config = ml_collections.ConfigDict(_read(folder, s, "config", lambda: manager.restore(
                s, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]))
            saved = None
            if os.path.isdir(os.path.join(folder, str(s), "checksums")):
                saved = _read(folder, s, "checksums", lambda: manager.restore(
                    s, args=ocp.args.Composite(checksums=ocp.args.JsonRestore()))["checksums"])
            params = _read(folder, s, "params", lambda: _host_restore(manager, s, "params"))
            _verify(folder, s, "params", saved, params, host=True)
            if use_ema:
                ema = _read(folder, s, "ema", lambda: _host_restore(manager, s, "ema"))
                _verify(folder, s, "ema", saved, ema, host=True)
                params = merge(params, ema)
            return config, params

        return _newest_intact(folder, steps, step, restore_step)


# How the UNet runs, not what it computes: a checkpoint trained with one setting generates with another.
EXECUTION_FIELDS = ("attention_impl", "attention_chunk", "attention_min_keys", "remat", "remat_resnets", "remat_policy",
                    "dtype")


def _model_section(config) -> dict:
    """config.model as JSON (the checkpoint stores its config so, turning tuples into lists), without the
    UNet's execution settings."""
    model = json.loads(config.model.to_json_best_effort())
    if "speed" in model:  # checkpoints from before the unit was a setting used the one unit there was
        model["speed"].setdefault("unit", "degrees_per_frame")
    unet = model.get("unet", {})
    for name in EXECUTION_FIELDS:
        unet.pop(name, None)
    # Checkpoints from before the speed attention's place was a setting ran it after the temporal attention; a model
    # without speed layers computes the same either way.
    if unet.get("speed_attention"):
        unet.setdefault("speed_before_temporal", False)
    else:
        unet.pop("speed_before_temporal", None)
    return model


def restore_model(checkpoint: str, config) -> dict:
    """EMO parameters (EMA) from a training checkpoint whose model section matches `config` (bar execution
    settings such as the attention implementation, remat and the compute dtype)."""
    trained_config, params = restore_params(checkpoint, use_ema=True)
    trained, wanted = _model_section(trained_config), _model_section(config)
    if trained != wanted:
        changed = sorted(k for k in set(trained) | set(wanted) if trained.get(k) != wanted.get(k))
        raise ConfigError(f"checkpoint {checkpoint!r} was trained with a different model section than --config "
                          f"(model.{', model.'.join(changed)} differ); pass the config and variant it was trained with")
    return params
