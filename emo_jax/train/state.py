"""The train state (fp32 master params, optimiser state, EMA of the trainable params, step, rng, bad-step
counters) and its shardings, created directly on the mesh."""
from __future__ import annotations

from typing import Mapping

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import traverse_util
from jax.sharding import Mesh, NamedSharding

from emo_jax.build import build_model
from emo_jax.models.partitioning import abstract_params, init_params
from emo_jax.params import trainable_mask, trainable_selection
from emo_jax.sharding import param_shardings, replicated
from emo_jax.train.optim import make_optimizer


@flax.struct.dataclass
class TrainState:
    """Everything a checkpoint restores; a pytree, so it passes through jit and is donated each step."""

    step: jax.Array  # micro-steps taken, skipped ones included
    params: dict  # the full model tree, float32
    opt_state: optax.OptState
    ema: dict  # the trainable leaves only, same nesting as params
    rng: jax.Array  # base key; step keys are fold_in(rng, step), so a resumed run draws what the original drew
    bad_steps: jax.Array  # consecutive non-finite steps up to now
    skipped: jax.Array  # all non-finite steps so far

    def as_dict(self) -> dict:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}


def prune(tree: Mapping, mask: Mapping) -> dict:
    """The leaves of `tree` where `mask` is True, keeping their nesting."""
    flat, keep = traverse_util.flatten_dict(tree), traverse_util.flatten_dict(mask)
    return traverse_util.unflatten_dict({k: v for k, v in flat.items() if keep[k]})


def merge(tree: Mapping, part: Mapping) -> dict:
    """`tree` with the leaves that `part` has replaced by part's."""
    flat = traverse_util.flatten_dict(tree)
    flat.update(traverse_util.flatten_dict(part))
    return traverse_util.unflatten_dict(flat)


class StateFactory:
    """The model, its trainable mask, the optimiser, and jitted constructors of the state on a mesh."""

    def __init__(self, config: ml_collections.ConfigDict, mesh: Mesh):
        stage = config.train.stage
        if stage not in (1, 2, 3):
            raise ValueError(f"train.stage is {stage}; emo-train trains EMO stages 1-3 (configs :stage1/2/3)")
        self.config, self.mesh, self.rules = config, mesh, config.mesh.rules
        self.model, self.example_inputs = build_model(config)
        boxed = abstract_params(self.model, self.example_inputs)
        self.mask = trainable_mask(nn.unbox(boxed), trainable_selection(stage, config.train.trainable))
        self.tx = make_optimizer(config, self.mask)
        # Not under jax.set_mesh: there nn.unbox would constrain each abstract parameter (outside a jit: an error).
        self.param_shardings = param_shardings(boxed, mesh, self.rules)
        self.abstract = jax.eval_shape(self._fresh, nn.unbox(boxed), jax.random.PRNGKey(0))
        self.shardings = self._state_shardings(self.abstract)
        self._create = jax.jit(self._fresh, out_shardings=self.shardings)
        self._reset = jax.jit(self._with_params, donate_argnums=0, out_shardings=self.shardings)

    def _fresh(self, params: dict, rng: jax.Array) -> TrainState:
        _, state_rng = jax.random.split(rng)
        zero = jnp.zeros((), jnp.int32)
        return TrainState(step=zero, params=params, opt_state=self.tx.init(params), ema=prune(params, self.mask),
                          rng=state_rng, bad_steps=zero, skipped=zero)

    def _with_params(self, state: TrainState, params: dict) -> TrainState:
        params = jax.tree.map(lambda new, old: new.astype(old.dtype), params, state.params)
        return state.replace(params=params, opt_state=self.tx.init(params), ema=prune(params, self.mask))

    def _state_shardings(self, abstract: TrainState) -> TrainState:
        """Param-shaped leaves (params, EMA, Adam moments, accumulated grads) follow their parameter's sharding."""
        by_path = traverse_util.flatten_dict(self.param_shardings)
        shapes = {k: v.shape for k, v in traverse_util.flatten_dict(abstract.params).items()}
        default = replicated(self.mesh)

        def pick(key_path, leaf) -> NamedSharding:
            names = tuple(getattr(k, "key", getattr(k, "name", None)) for k in key_path)
            # An optimiser leaf's path ends with its parameter's path (e.g. .../mu/backbone/conv_in/kernel).
            for start in range(len(names)):
                tail = names[start:]
                if tail in by_path and shapes[tail] == leaf.shape:
                    return by_path[tail]
            return default

        return jax.tree_util.tree_map_with_path(pick, abstract)

    def create(self, seed: int) -> TrainState:
        """A fresh state, each array initialised straight into its sharding (never whole on one device)."""
        # Parameters are sampled on the host (partitioning.init_params: no per-parameter RNG compile) and each
        # process places only its own shards; the optimiser state and EMA are then built on the mesh.
        shardings = traverse_util.flatten_dict(self.param_shardings)

        def place(path, value):
            return jax.make_array_from_callback(value.shape, shardings[path], lambda index: value[index])

        params = nn.unbox(init_params(self.model, seed, self.example_inputs, place=place))
        with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
            return self._create(params, jax.random.PRNGKey(seed))

    def with_params(self, state: TrainState, params: dict) -> TrainState:
        """`state` with new params, and optimiser state and EMA restarted from them (after SD / stage import)."""
        params = jax.device_put(params, self.param_shardings)
        with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
            return self._reset(state, params)

    def abstract_with_shardings(self) -> TrainState:
        """ShapeDtypeStructs carrying the target shardings: what a checkpoint restores onto."""
        return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), self.abstract,
                            self.shardings)

    def host_params(self, state: TrainState) -> dict:
        """The current params as numpy arrays on the host (for imports that edit them by name)."""
        return jax.tree.map(lambda x: jax.device_get(x) if x.is_fully_addressable else _gather(x), state.params)


def _gather(x: jax.Array):
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(x, tiled=True)


def step_key(state: TrainState) -> jax.Array:
    return jax.random.fold_in(state.rng, state.step)

