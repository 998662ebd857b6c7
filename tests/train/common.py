"""Helpers of the trainer tests: the shared test config and the environment of subprocess runs."""
import os
import pathlib

from emo_jax.config import load_config

ROOT = pathlib.Path(__file__).parents[2]


def make_config(variant: str, data_path: str, **train):
    """configs/tiny.py:<variant> on the 8-device (data 2, fsdp 2, tensor 2) mesh, batch 4, reading `data_path`.

    lr 1e-6: Adam's first updates are about lr * sign(gradient) per coordinate, so a gradient entry that is
    rounding noise (different on different meshes) moves its weight by a full lr; at 1e-6 that stays far
    below the 1e-5 loss tolerance of the mesh comparisons, at 1e-3 it does not (8e-4 measured).
    """
    config = load_config(str(ROOT / f"configs/tiny.py:{variant}"))
    config.data.path, config.data.workers = data_path, 0
    config.mesh.shape.update(dict(data=2, fsdp=2, tensor=2))
    config.train.update(dict(batch_size=4, lr=1e-6, warmup_steps=2, log_every=1, checkpoint_every=1000,
                             keep_checkpoints=2))
    config.train.update(train)
    return config


def subprocess_env(compile_cache: str, devices: int = 8) -> dict:
    env = dict(os.environ)
    env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
               JAX_DEFAULT_MATMUL_PRECISION="highest", JAX_COMPILATION_CACHE_DIR=compile_cache,
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", PYTHONPATH=str(ROOT))
    return env


def pipeline_batches(config, count: int) -> list[dict]:
    """The first `count` batches the trainer would read from config.data.path (one process)."""
    import itertools

    from emo_jax.train.train import training_dataset

    return list(itertools.islice(iter(training_dataset(config)), count))


def step_runner(config, mesh):
    """(state factory, fresh state, jitted step, frozen params, batch keys) as emo-train builds them."""
    import jax

    from emo_jax.batch import batch_spec
    from emo_jax.sharding import replicated
    from emo_jax.train.state import StateFactory
    from emo_jax.train.step import make_train_step
    from emo_jax.train.train import load_encoders

    factory = StateFactory(config, mesh)
    keys = [entry.raw.name for entry in batch_spec(config).values()]  # the synthetic data carries no latents
    encs, frozen = load_encoders(config, keys, random_init=True)
    frozen = jax.device_put(jax.device_get(frozen), replicated(mesh))
    step = jax.jit(make_train_step(config, factory.model, factory.tx, factory.mask, encs), donate_argnums=0,
                   out_shardings=(factory.shardings, replicated(mesh)))
    return factory, factory.create(config.seed), step, frozen, keys
