"""One emo-train step compiled on one device from a random batch, for the benchmarks that time it
(train_step.py, cpu_shapes.py). It imports emo_jax lazily and changes no import path, so cpu_shapes.py's
child processes time the emo_jax their PYTHONPATH names (the working tree or a baseline worktree)."""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable


@dataclasses.dataclass
class CompiledStep:
    compiled: Any  # the compiled step: (state, frozen encoder params, batch) -> (state, metrics)
    compile_s: float  # lower + compile
    run: Callable[[], Any]  # one call on the held state (donated, so it is replaced); returns the metrics
    state: Callable[[], Any]  # the state now


def compile_train_step(config, *, encoded: bool) -> CompiledStep:
    """The real train step at `config` (its train.trainable, batch size and model) on the first device, with a
    random batch (`encoded`: latents and audio features, as precomputed data gives; else pixels and waveforms
    that the step encodes with random VAE and wav2vec2 weights). Calls run inside the config's mesh and rules."""
    import flax.linen as nn
    import jax
    import numpy as np

    from emo_jax.batch import batch_spec, random_batch
    from emo_jax.sharding import make_mesh, replicated
    from emo_jax.train.state import StateFactory
    from emo_jax.train.step import make_train_step
    from emo_jax.train.train import global_batch, load_encoders

    mesh = make_mesh(config.mesh.shape, jax.devices()[:1])
    factory = StateFactory(config, mesh)
    batch = random_batch(batch_spec(config), config.train.batch_size, np.random.default_rng(0), encoded=encoded)
    keys = sorted(batch)
    encs, frozen = load_encoders(config, keys, random_init=True)
    frozen = jax.device_put(frozen, replicated(mesh))
    step = jax.jit(make_train_step(config, factory.model, factory.tx, factory.mask, encs), donate_argnums=0)
    with jax.set_mesh(mesh), nn.logical_axis_rules(config.mesh.rules):
        holder = {"state": factory.create(config.seed)}
        device_batch = global_batch(batch, mesh, keys)
        start = time.perf_counter()
        compiled = step.lower(holder["state"], frozen, device_batch).compile()
        compile_s = time.perf_counter() - start

    def run():
        with jax.set_mesh(mesh), nn.logical_axis_rules(config.mesh.rules):
            holder["state"], metrics = compiled(holder["state"], frozen, device_batch)
        return metrics

    return CompiledStep(compiled, compile_s, run, lambda: holder["state"])
