"""Ahead-of-time compilation of the train step (and the sampler's clip program) for a TPU slice, on any host.

The program is lowered for the slice's devices (described by libtpu without a TPU) on the config's mesh, and
XLA's own numbers are read off the compiled executable: per-chip memory, FLOPs, and its step-time estimate.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import linen as nn
from jax.sharding import NamedSharding, PartitionSpec

from emo_jax.sharding import make_mesh, replicated
from emo_jax.topology import ChipSpec, topology_devices


def abstract_batch(config: ml_collections.ConfigDict, batch: int, mesh) -> dict:
    """A global batch as the loader delivers it with precomputed latents and audio features (the production
    setup: the frozen VAE and wav2vec2 run once in emo-prepare, not in every step)."""
    m, t = config.model, config.train
    h, c = m.latent_size, m.unet.in_channels
    shard = lambda nd: NamedSharding(mesh, PartitionSpec(("data", "fsdp"), *([None] * (nd - 1))))  # noqa: E731
    spec = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32, sharding=shard(len(shape)))  # noqa: E731
    size = config.data.size
    out = {"reference_latent": spec(batch, h, h, c), "face_mask": spec(batch, size, size)}
    if t.stage == 1:
        out["target_latent"] = spec(batch, h, h, c)
        return out
    f, n, a = m.clip_frames, m.motion_frames, m.audio
    out.update(target_latents=spec(batch, f, h, h, c), motion_latents=spec(batch, n, h, h, c),
               audio_features=spec(batch, f, 2 * a.context + 1, a.layers, a.feature_dim))
    if t.stage == 3:
        out["speed"] = spec(batch, f + 2 * a.context)
    return out


def compile_train_step(config: ml_collections.ConfigDict, devices) -> tuple:
    """(compiled executable, mesh) of the full train step on `devices`, never materialising a parameter."""
    from emo_jax.train.state import StateFactory
    from emo_jax.train.step import Encoders, make_train_step

    mesh = make_mesh(config.mesh.shape, devices)
    batch_ways = mesh.shape["data"] * mesh.shape["fsdp"]
    if config.train.batch_size % batch_ways:
        raise ValueError(f"global batch {config.train.batch_size} does not divide over data x fsdp = {batch_ways} "
                         "(mesh.shape); change --global-batch or the mesh")
    factory = StateFactory(config, mesh)
    scaling = config.vae.scaling_factor if config.get("vae") is not None else 0.18215
    step = make_train_step(config, factory.model, factory.tx, factory.mask, Encoders(None, None, scaling))
    frozen = {"vae": None, "audio": None}
    batch = abstract_batch(config, config.train.batch_size, mesh)
    with mesh, nn.logical_axis_rules(config.mesh.rules):
        lowered = jax.jit(step, donate_argnums=0, out_shardings=(factory.shardings, replicated(mesh))).lower(
            factory.abstract_with_shardings(), frozen, batch)
        return lowered.compile(), mesh


def report(compiled, chip: ChipSpec, mesh, global_batch: int) -> dict:
    """Per-chip memory, fit, FLOPs and XLA's step-time estimate of a compiled step."""
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    args, out, temp = mem.argument_size_in_bytes, mem.output_size_in_bytes, mem.temp_size_in_bytes
    alias = mem.alias_size_in_bytes  # donated state: the outputs reuse the arguments' buffers
    total = args + out - alias + temp
    flops = float(cost.get("flops", 0.0))
    seconds = float(cost.get("optimal_seconds", 0.0))
    seconds = seconds if seconds > 0 else 0.0  # XLA reports a negative number when it has no estimate
    return {
        "chip": chip.kind,
        "chips": int(mesh.devices.size),
        "mesh": {k: int(v) for k, v in mesh.shape.items()},
        "global_batch": global_batch,
        "arguments_bytes": int(args),
        "outputs_bytes": int(out),
        "aliased_bytes": int(alias),
        "temporaries_bytes": int(temp),
        "hbm_per_chip_bytes": int(total),
        "hbm_capacity_bytes": chip.hbm_bytes,
        "fits": bool(total <= chip.hbm_bytes),
        "flops_per_step": flops,  # per chip: the SPMD-partitioned program each chip runs
        "flops_floor_seconds": flops / chip.peak_bf16_flops,
        "estimated_step_seconds": seconds or None,
        "examples_per_second": global_batch / seconds if seconds > 0 else None,
    }


def plan(config: ml_collections.ConfigDict, topology: str) -> dict:
    """Compile config's train step for a TPU slice and report on it."""
    chip, devices = topology_devices(topology)
    compiled, mesh = compile_train_step(config, devices)
    out = report(compiled, chip, mesh, config.train.batch_size)
    out["topology"] = topology
    out["stage"] = config.train.stage
    out["remat"] = bool(config.model.unet.remat)
    out["attention_impl"] = config.model.unet.attention_impl
    return out
