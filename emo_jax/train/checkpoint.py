"""Training checkpoints with Orbax: params, optimiser state, EMA, counters, the data iterator and the config.

Layout of `<workdir>/checkpoints/<step>/`: `params` and `ema` (float32 trees, `ema` holding the trainable
leaves only), `train` (opt_state, step, rng, bad_steps, skipped), `data` (one Grain iterator state per
process, JSON), `config` (the run's ConfigDict as JSON). Saves are asynchronous; the last
train.keep_checkpoints are kept, plus every step divisible by train.keep_every.
"""
from __future__ import annotations

import json
import logging
import os

import grain
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from emo_jax.train.state import TrainState, merge

log = logging.getLogger(__name__)

TRAIN_FIELDS = ("opt_state", "step", "rng", "bad_steps", "skipped")


def checkpoint_folder(path: str) -> str:
    """A run's checkpoints folder from the run's workdir or the folder itself."""
    inner = os.path.join(path, "checkpoints")
    return inner if os.path.isdir(inner) else path


class Checkpointer:
    """Saves and restores a run's TrainState and data iterator (every process calls every method)."""

    def __init__(self, workdir: str, config: ml_collections.ConfigDict):
        t = config.train
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

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, state: TrainState, data_iterator, force: bool = False) -> bool:
        """Starts an asynchronous save of `state` at its step; the device-to-host copy finishes before return."""
        step = int(jax.device_get(state.step))
        if step in self.manager.all_steps():
            return False
        args = {
            "params": ocp.args.StandardSave(state.params),
            "ema": ocp.args.StandardSave(state.ema),
            "train": ocp.args.StandardSave({k: getattr(state, k) for k in TRAIN_FIELDS}),
            "config": ocp.args.JsonSave(json.loads(self.config.to_json())),
        }
        if data_iterator is not None:
            args["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        return self.manager.save(step, args=ocp.args.Composite(**args), force=force)

    def restore(self, target: TrainState, data_iterator, step: int | None = None) -> TrainState:
        """The checkpoint at `step` (default latest) placed onto `target`'s shardings, which may belong to another
        mesh than the one that saved it; `data_iterator` is moved to the saved position in place."""
        step = self.manager.latest_step() if step is None else step
        if step is None:
            raise ValueError(f"no checkpoint in {self.directory}")
        args = {
            "params": ocp.args.StandardRestore(target.params),
            "ema": ocp.args.StandardRestore(target.ema),
            "train": ocp.args.StandardRestore({k: getattr(target, k) for k in TRAIN_FIELDS}),
        }
        if data_iterator is not None:
            args["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        restored = self.manager.restore(step, args=ocp.args.Composite(**args))
        log.info("restored step %d from %s", step, self.directory)
        return TrainState(params=restored["params"], ema=restored["ema"], **restored["train"])

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

    `checkpoint_dir` is a run's workdir or its checkpoints/ folder; `step` defaults to the latest. With use_ema
    the trainable parameters are their EMA, the frozen ones the (unchanged) params.
    """
    folder = checkpoint_folder(checkpoint_dir)
    if not os.path.isdir(folder):
        raise ValueError(f"checkpoint folder {checkpoint_dir!r} does not exist; pass an emo-train --workdir")
    handlers = {name: ocp.PyTreeCheckpointHandler() for name in ("params", "ema")}
    handlers["config"] = ocp.JsonCheckpointHandler()
    options = ocp.CheckpointManagerOptions(read_only=True)
    with ocp.CheckpointManager(folder, options=options, item_handlers=handlers) as manager:
        steps = manager.all_steps()
        if not steps:
            raise ValueError(f"{folder} holds no checkpoints; is it an emo-train --workdir?")
        step = max(steps) if step is None else step
        if step not in steps:
            raise ValueError(f"{folder} has no checkpoint at step {step}; it has steps {sorted(steps)}")
        config = ml_collections.ConfigDict(manager.restore(step, args=ocp.args.Composite(
            config=ocp.args.JsonRestore()))["config"])
        params = _host_restore(manager, step, "params")
        if use_ema:
            params = merge(params, _host_restore(manager, step, "ema"))
    return config, params
