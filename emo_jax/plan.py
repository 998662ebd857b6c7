"""Ahead-of-time compilation of the train step (and the sampler's chunk program) for a TPU slice, on any host.

The program is lowered for the slice's devices (described by libtpu without a TPU) on the config's mesh, and
XLA's own numbers are read off the compiled executable: per-chip memory, FLOPs, and its step-time estimate.
"""
from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import ml_collections
from flax import linen as nn

from emo_jax.batch import abstract_batch, batch_spec
from emo_jax.flops import FlopCount, count_flops
from emo_jax.sharding import batch_sharding, make_mesh, replicated
from emo_jax.topology import ChipSpec, topology_devices


def trace_train_step(config: ml_collections.ConfigDict, devices) -> tuple:
    """(jax Traced, mesh) of the full train step on `devices` from abstract state and batch: lowering it
    compiles the step; its jaxpr counts the step's FLOPs. No parameter is materialised."""
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
    # As the loader delivers it with precomputed latents and audio features (the production setup: the frozen
    # VAE and wav2vec2 run once in emo-prepare, not in every step).
    batch = abstract_batch(batch_spec(config), config.train.batch_size, encoded=True,
                           sharding=lambda nd: batch_sharding(mesh, nd))
    with jax.set_mesh(mesh), nn.logical_axis_rules(config.mesh.rules):
        traced = jax.jit(step, donate_argnums=0, out_shardings=(factory.shardings, replicated(mesh))).trace(
            factory.abstract_with_shardings(), frozen, batch)
    return traced, mesh


def model_flops_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The config whose train step's jaxpr FLOPs are the model FLOPs, MFU's numerator wherever emo-jax reports it
    (emo-compile, benchmarks/gpu.py): remat off (its recompute is not model work) and XLA attention (a fused
    kernel's call hides its matmuls from the count)."""
    c = visible_kernels_config(config)
    c.model.unet.remat = c.model.unet.remat_resnets = False
    return c


def utilization(flops_per_step: float | None, step_seconds: float | None, peak_flops: float | None) -> float | None:
    """flops / step seconds / the chip's bf16 peak: MFU from model FLOPs, HFU from the FLOPs the step runs."""
    if not (flops_per_step and step_seconds and peak_flops):
        return None
    return flops_per_step / step_seconds / peak_flops


def utilization_fields(model_flops: float | None, flops: float | None, seconds: float | None,
                       chip: ChipSpec) -> dict:
    """A plan row's model FLOPs per chip with the MFU and HFU of its step time on `chip`: the one place both a
    fresh plan and a row given its model FLOPs afterwards get them."""
    return {"model_flops_per_step": model_flops,
            "estimated_mfu": utilization(model_flops, seconds, chip.peak_bf16_flops),
            "estimated_hfu": utilization(flops, seconds, chip.peak_bf16_flops)}


def compile_train_step(config: ml_collections.ConfigDict, devices) -> tuple:
    """(compiled executable, mesh, FlopCount of the whole program's jaxpr) of the full train step on `devices`."""
    traced, mesh = trace_train_step(config, devices)
    with jax.set_mesh(mesh), nn.logical_axis_rules(config.mesh.rules):
        compiled = traced.lower().compile()
    return compiled, mesh, count_flops(traced.jaxpr)


def _memory_and_cost(compiled) -> tuple[dict, dict]:
    """Per-chip byte counts of a compiled program and XLA's cost analysis of it."""
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    args, out, temp = mem.argument_size_in_bytes, mem.output_size_in_bytes, mem.temp_size_in_bytes
    alias = mem.alias_size_in_bytes  # donated state: the outputs reuse the arguments' buffers
    sizes = {"arguments_bytes": int(args), "outputs_bytes": int(out), "aliased_bytes": int(alias),
             "temporaries_bytes": int(temp), "hbm_per_chip_bytes": int(args + out - alias + temp)}
    return sizes, dict(cost or {})


def estimate_seconds(cost: dict, chip: ChipSpec, flops: float | None = None) -> tuple[float, str]:
    """(seconds, source): XLA's own estimate ("optimal_seconds") when it gives one, else the roofline
    max(flops / peak, bytes accessed / HBM bandwidth) of XLA's byte count and `flops` (XLA's FLOP count if not
    given). XLA's TPU cost model leaves its estimate out for programs with loops (chunked attention) and some
    others (the tiny stage-2 step on v5e:2x2)."""
    xla = float(cost.get("optimal_seconds") or -1.0)
    if xla > 0:
        return xla, "xla"
    flops = float(cost.get("flops", 0.0)) if flops is None else flops
    moved = float(cost.get("bytes accessed", 0.0))
    return max(flops / chip.peak_bf16_flops, moved / chip.hbm_bytes_per_s), "roofline of xla costs"


def flop_fields(xla_flops: float, counted: FlopCount | None, chips: int, chip: ChipSpec) -> dict:
    """Per-chip FLOPs of a step: XLA's count of the SPMD-partitioned program each chip runs, the jaxpr's matmul
    and convolution FLOPs of the whole program over the chips (loops times trip counts), the larger of the two
    (XLA counts a loop body once), and that one's floor at the chip's peak."""
    jaxpr_flops = counted.flops / chips if counted is not None else None
    flops = max(xla_flops, jaxpr_flops or 0.0)
    return {"flops_per_step": flops, "xla_flops_per_step": xla_flops, "jaxpr_flops_per_step": jaxpr_flops,
            "flops_floor_seconds": flops / chip.peak_bf16_flops}


def visible_kernels_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The same step with XLA attention in place of a Pallas kernel's: its jaxpr counts the matmuls the kernel
    hides (remat as configured, so the recomputed forward counts too)."""
    c = config.copy_and_resolve_references()
    c.model.unet.attention_impl = "xla"
    return c


def add_kernel_flops(counts: dict, seconds: float, source: str, kernel_flops: float,
                     chip: ChipSpec) -> tuple[dict, float, str]:
    """Counts and estimate with the FLOPs of Pallas (Mosaic) kernels added: neither XLA's cost analysis nor the
    jaxpr count sees inside them, so a step with splash attention would read as if its attention were free. Their
    FLOPs join the per-chip count, and their time at the chip's peak joins an XLA estimate (a lower bound on the
    kernels' time; a roofline estimate already takes the FLOPs)."""
    if not kernel_flops:
        return counts, seconds, source
    flops = counts["flops_per_step"] + kernel_flops
    counts = {**counts, "flops_per_step": flops, "kernel_flops_per_step": kernel_flops,
              "flops_floor_seconds": flops / chip.peak_bf16_flops}
    if source == "xla":
        return counts, seconds + kernel_flops / chip.peak_bf16_flops, "xla + Pallas kernels' FLOPs at peak"
    return counts, max(seconds, flops / chip.peak_bf16_flops), source + " + Pallas kernels' FLOPs"


def report(compiled, chip: ChipSpec, mesh, global_batch: int, counted: FlopCount | None = None,
           model: FlopCount | None = None, visible: FlopCount | None = None) -> dict:
    """Per-chip memory, fit, FLOPs and step-time estimate of a compiled step. `counted` (the jaxpr count of the
    whole program) covers what XLA's count misses: XLA counts a loop body once (chunked attention under
    lax.map), so the per-chip FLOPs are the larger of XLA's count and the jaxpr's divided over the chips.
    `model` (the jaxpr count of model_flops_config's step) gives the estimated MFU beside the HFU. `visible` (the
    jaxpr count of visible_kernels_config's step), given where the program has Pallas kernels, adds their FLOPs
    (add_kernel_flops)."""
    sizes, cost = _memory_and_cost(compiled)
    chips = int(mesh.devices.size)
    counts = flop_fields(float(cost.get("flops", 0.0)), counted, chips, chip)
    flops = counts["flops_per_step"]
    seconds, source = estimate_seconds(cost, chip, flops)
    if source != "xla" and flops > counts["xla_flops_per_step"]:
        source += " (FLOPs from the jaxpr)"
    if visible is not None and counted is not None:
        kernel_flops = max(visible.flops - counted.flops, 0.0) / chips
        counts, seconds, source = add_kernel_flops(counts, seconds, source, kernel_flops, chip)
        flops = counts["flops_per_step"]
    return {
        "chip": chip.kind,
        "chips": chips,
        "mesh": {k: int(v) for k, v in mesh.shape.items()},
        "global_batch": global_batch,
        **sizes,
        "hbm_capacity_bytes": chip.hbm_bytes,
        "fits": bool(sizes["hbm_per_chip_bytes"] <= chip.hbm_bytes),
        **counts,
        "bytes_accessed_per_step": float(cost.get("bytes accessed", 0.0)),
        "estimated_step_seconds": seconds or None,
        "estimate_source": source,
        "examples_per_second": global_batch / seconds if seconds > 0 else None,
        **utilization_fields(model.flops / chips if model is not None else None, flops, seconds, chip),
    }


def sampler_chunk_arguments(config: ml_collections.ConfigDict, params, sharding) -> tuple:
    """Abstract arguments of the sampler's chunk program (emo_jax.sample.sampler.chunk_program) in its order:
    (params, reference features, carry, audio [K, f, ...], per-frame signals, face mask, guidance scales). `params`
    are abstract (with their shardings); every other argument gets `sharding`. The reference features come from
    tracing the reference program over the same weights, under their mesh when they are sharded."""
    from emo_jax.models.condition import frame_signal_specs
    from emo_jax.models.emo import face_mask_size
    from emo_jax.sample.sampler import SamplerSpec, check_video_model, reference_program, weights_mesh

    cfg = check_video_model(config)
    m = config.model
    size, f, k = m.latent_size, m.clip_frames, SamplerSpec.from_config(config).clips_per_chunk
    latent = (size, size, cfg.unet.in_channels)

    def arg(shape, dtype=jnp.float32):
        return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)

    mesh = weights_mesh(params)
    with jax.set_mesh(mesh) if mesh is not None else contextlib.nullcontext():
        ref = jax.eval_shape(reference_program(cfg), params, arg((1,) + latent))
    ref = jax.tree.map(lambda a: arg(a.shape, a.dtype), ref)
    carry = (arg((1, cfg.motion_frames) + latent), arg((2,), jnp.uint32), arg((), jnp.int32))
    a = m.audio
    audio = arg((k, f, 2 * a.context + 1, a.layers, a.feature_dim))
    signals = {name: arg(*spec) for name, spec in frame_signal_specs(cfg.frame_signals, (k, f)).items()}
    mask_side = face_mask_size(cfg, size)
    return params, ref, carry, audio, signals, arg((1, mask_side, mask_side, 1)), arg((2,))


def compile_sampler(config: ml_collections.ConfigDict, device) -> tuple:
    """(chunk program, one guided DDIM step), both compiled for one device from abstract inputs.

    The chunk program is what emo-generate runs (clips_per_chunk clips of DDIM with guidance; generation is
    single-device), so its memory is the sampler's. XLA counts a loop body once, so FLOPs and time come from
    the guided DDIM step compiled on its own, times steps x clips.
    """
    from jax.sharding import SingleDeviceSharding

    from emo_jax.build import abstract_params
    from emo_jax.models.emo import EMO
    from emo_jax.sample.sampler import (SamplerSpec, check_video_model, chunk_program, clip_condition,
                                        guided_ddim_step)

    cfg = check_video_model(config)
    spec = SamplerSpec.from_config(config)
    on_device = SingleDeviceSharding(device)
    params = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=on_device),
                          {name: p for name, p in abstract_params(config).items() if name != "vae"})
    args = sampler_chunk_arguments(config, params, on_device)
    _, ref, (previous, _, _), audio, signals, mask, scales = args
    latent = previous.shape[2:]
    chunk = chunk_program(cfg, spec, latent).lower(*args).compile()

    model, schedule = EMO(cfg), spec.schedule()

    def one_step(params, ref, previous, x, audio_FCLD, signals_F, mask, scales):
        # A clip's conditioning with its motion-frame pass, then one guided step (from the first timestep pair).
        cond = clip_condition(model, params, ref, audio_FCLD, signals_F, mask, previous, jnp.bool_(False))
        t = jnp.int32(schedule.num_train_timesteps - 1)
        return guided_ddim_step(model, spec, schedule, params, x, t, t - 1, cond, scales)

    first = lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype, sharding=on_device)  # noqa: E731
    x = jax.ShapeDtypeStruct((1,) + audio.shape[1:2] + latent, jnp.float32, sharding=on_device)
    step = jax.jit(one_step).lower(params, ref, previous, x, first(audio), jax.tree.map(first, signals), mask,
                                   scales).compile()
    return chunk, step, audio.shape[0] * audio.shape[1]


def sampler_report(chunk, step, chip: ChipSpec, frames: int, steps: int, clips: int, fps: float) -> dict:
    """Memory of one sampler chunk call on one chip; FLOPs and time of its guided DDIM steps x steps x clips
    (each counted step includes the clip's motion-frame pass, which the sampler runs once per clip: an
    overcount of one small ReferenceNet pass per step)."""
    sizes, _ = _memory_and_cost(chunk)
    _, cost = _memory_and_cost(step)
    step_seconds, source = estimate_seconds(cost, chip)
    calls = steps * clips
    flops, seconds = float(cost.get("flops", 0.0)) * calls, step_seconds * calls
    return {
        "frames_per_call": frames,
        **sizes,
        "fits": bool(sizes["hbm_per_chip_bytes"] <= chip.hbm_bytes),
        "flops_per_call": flops,
        "flops_floor_seconds": flops / chip.peak_bf16_flops,
        "estimated_call_seconds": seconds or None,
        "estimate_source": source,
        # Seconds of compute per second of video at the config's frame rate (below 1: faster than real time).
        "seconds_per_video_second": seconds / (frames / fps) if seconds > 0 else None,
    }


def run_settings(config: ml_collections.ConfigDict, topology: str) -> dict:
    """What a plan's row was compiled for, beside its measurements (also on a row that failed to compile)."""
    u = config.model.unet
    return {"topology": topology, "stage": config.train.stage, "remat": bool(u.remat),
            "remat_resnets": bool(u.remat_resnets), "remat_policy": u.get("remat_policy", "nothing_saveable"),
            "attention_impl": u.attention_impl}


def plan(config: ml_collections.ConfigDict, topology: str, sample: bool = False) -> dict:
    """Compile config's train step (and with `sample`, the sampler) for a TPU slice and report on it."""
    chip, devices = topology_devices(topology)
    compiled, mesh, counted = compile_train_step(config, devices)
    model = count_flops(trace_train_step(model_flops_config(config), devices)[0].jaxpr)  # traced only
    visible = None
    if counted.opaque_kernels:
        visible = count_flops(trace_train_step(visible_kernels_config(config), devices)[0].jaxpr)
    out = report(compiled, chip, mesh, config.train.batch_size, counted, model, visible)
    out.update(run_settings(config, topology))
    if sample:
        chunk, step, frames = compile_sampler(config, devices[0])
        s = config.sample
        out["sample"] = sampler_report(chunk, step, chip, frames, s.steps, s.clips_per_chunk, config.data.fps)
    return out
