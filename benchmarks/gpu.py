"""Stage-2 train step and one sampling clip at paper shapes on one NVIDIA GPU: step time, memory, MFU.

    bash benchmarks/gpu.sh            # the driver: picks the interpreter, installs what is missing, runs this
    python benchmarks/gpu.py [--config configs/emo_512.py:stage2] [--attention cudnn] [--budget-s 360] [--out F]

What it measures, in this order, writing the JSON after every section so a killed run leaves what it had:
1. train: configs/emo_512.py:stage2 (512 px, 64x64 latents, 12 clip + 4 motion frames, bf16 compute, float32
   master params, remat as the config says, stage-2 trainable set) at batch 1 on one device (mesh all 1s),
   attention through cuDNN (jax.nn.dot_product_attention(implementation="cudnn")). The batch holds
   precomputed latents and audio features (the production setup), so no VAE or wav2vec2 runs. Reported: trace
   and compile seconds, seconds per step (median of --steps after --warmup), the device's peak memory and XLA's
   memory analysis, and the FLOPs of a step three ways (below). If cuDNN attention fails to trace or compile
   (a head dim, mask or dtype it does not take), the error text goes into the JSON and the step is measured
   again with --fallback-attention.
2. flops: the jaxpr counts of emo_jax/flops.py, traced with XLA attention (a cuDNN call is one opaque
   primitive the count cannot see into): "model" FLOPs with remat off (the model's math, counted once) and
   "hardware" FLOPs with remat as run (the recomputed forward counted again); XLA's cost analysis of the
   compiled program is reported beside them (it counts a cuDNN attention call as nothing).
   MFU = model FLOPs / step seconds / the chip's dense bf16 peak (H100 SXM, H200: 989 TFLOP/s; null on a chip
   not in PEAK_BF16), HFU the same with the hardware FLOPs. The same definition as everywhere in the project.
3. sampling: one clip (12 frames) with emo_jax.sample.sampler.Sampler at the config's sample.steps DDIM steps
   and its guidance, clips_per_chunk 1, random weights, reference latent and audio features: compile seconds
   (first run - steady run) of the ReferenceNet program and of the chunk program, steady seconds per clip and
   per DDIM step, jaxpr FLOPs and MFU. Skipped when more than --budget-s seconds have gone by.

Without a GPU it runs configs/tiny.py:stage2 on CPU with the config's attention and says so (CI runs it so).

Device time on an H100 (estimate, not yet measured): start-up and imports ~20 s; host init of the ~2e9
parameters ~30 s; trace ~30 s; compile of the paper-shape step 1-4 minutes; 3 + 5 steps of ~1-2 s; the two
FLOP-count traces ~60 s; sampling compile ~1 minute and two clip runs of ~5-15 s. About 5-7 minutes in all;
the --budget-s guard (default 360 s) skips the sampling section when the train section ran long.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)
_START = time.perf_counter()

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from emo_jax.batch import abstract_batch, batch_spec, random_batch  # noqa: E402
from emo_jax.config import load_config  # noqa: E402
from emo_jax.flops import count_flops  # noqa: E402
from emo_jax.plan import model_flops_config, trace_train_step, utilization  # noqa: E402
from emo_jax.sharding import batch_sharding, make_mesh, replicated  # noqa: E402
from emo_jax.train.state import StateFactory  # noqa: E402
from emo_jax.train.step import Encoders, make_train_step  # noqa: E402

# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's data sheets, by a substring of device_kind; the first
# match wins, so the more specific names come first.
PEAK_BF16 = (("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("H200", 989e12), ("GH200", 989e12),
             ("A100", 312e12))


def peak_bf16_flops(device_kind: str) -> float | None:
    return next((peak for name, peak in PEAK_BF16 if name.lower() in device_kind.lower()), None)


def log(message: str) -> None:
    print(f"[{time.perf_counter() - _START:7.1f} s] {message}", flush=True)


def elapsed() -> float:
    return time.perf_counter() - _START


class Report:
    """The results dict, written whole to `path` after every section."""

    def __init__(self, path: str, results: dict):
        self.path, self.results = path, results

    def save(self) -> None:
        self.results["elapsed_s"] = elapsed()
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.results, f, indent=1, default=str)
        os.replace(tmp, self.path)

    def run(self, name: str, fn, *args):
        """fn(section dict, *args) -> value; an exception is recorded in the section and returns None."""
        section = self.results.setdefault(name, {})
        log(f"{name}: start")
        start = time.perf_counter()
        try:
            value = fn(section, *args)
            section["status"] = "ok"
        except Exception as e:  # a benchmark section that fails must not stop the others or lose the JSON
            value = None
            section["status"] = "error"
            section["error"] = error_text(e)
            section["traceback"] = traceback.format_exc()[-4000:]
            log(f"{name}: FAILED: {section['error']}")
        section["section_s"] = time.perf_counter() - start
        self.save()
        log(f"{name}: {section['status']} in {section['section_s']:.1f} s")
        return value


def error_text(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e)[:2000]}"


def memory_stats(device) -> dict:
    stats = device.memory_stats() or {}
    return {k: int(stats[k]) for k in ("peak_bytes_in_use", "bytes_in_use", "bytes_limit") if k in stats}


def compiled_numbers(compiled) -> dict:
    """XLA's memory analysis and FLOP count of a compiled program."""
    out = {}
    mem = compiled.memory_analysis()
    if mem is not None:
        out["memory_analysis"] = {k: int(getattr(mem, f"{k}_size_in_bytes"))
                                  for k in ("argument", "output", "alias", "temp", "generated_code")}
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    out["xla_flops_per_step"] = float(cost["flops"]) if cost and "flops" in cost else None
    return out


def with_attention(config, impl: str, remat: bool | None = None):
    c = config.copy_and_resolve_references()
    c.model.unet.attention_impl = impl
    if remat is not None:
        c.model.unet.remat = c.model.unet.remat_resnets = remat
    return c


def compile_step(config, device) -> tuple:
    """(StateFactory, mesh, traced step, compiled step, seconds to trace, seconds to compile) on one device."""
    start = time.perf_counter()
    mesh = make_mesh(config.mesh.shape, [device])
    factory = StateFactory(config, mesh)
    step = make_train_step(config, factory.model, factory.tx, factory.mask, Encoders(None, None,
                                                                                       config.vae.scaling_factor))
    batch = abstract_batch(batch_spec(config), config.train.batch_size, encoded=True,
                           sharding=lambda nd: batch_sharding(mesh, nd))
    with jax.set_mesh(mesh), nn.logical_axis_rules(config.mesh.rules):
        traced = jax.jit(step, donate_argnums=0, out_shardings=(factory.shardings, replicated(mesh))).trace(
            factory.abstract_with_shardings(), {"vae": None, "audio": None}, batch)
        trace_s = time.perf_counter() - start
        log(f"train: traced in {trace_s:.1f} s; compiling")
        start = time.perf_counter()
        compiled = traced.lower().compile()
    return factory, mesh, traced, compiled, trace_s, time.perf_counter() - start


def train_section(r: dict, config, device, args, save) -> dict:
    """Compiles (falling back from a failing attention implementation) and times the train step; `save` writes
    what is known so far (a compile can take minutes: a run stopped later keeps its numbers)."""
    r["attention_requested"] = config.model.unet.attention_impl
    r["attention_errors"] = []
    for impl in dict.fromkeys([config.model.unet.attention_impl, args.fallback_attention]):
        try:
            factory, mesh, traced, compiled, r["trace_s"], r["compile_s"] = compile_step(
                with_attention(config, impl), device)
            break
        except Exception as e:  # cuDNN refuses some shapes at trace or compile time; XLA errors vary by version
            r["attention_errors"].append({"attention_impl": impl, "error": error_text(e)})
            log(f"train: attention {impl!r} failed ({error_text(e)[:300]}); "
                f"{'falling back to ' + repr(args.fallback_attention) if impl != args.fallback_attention else ''}")
            save()
            if impl == args.fallback_attention:
                raise
    r["attention_impl"] = impl
    log(f"train: compiled with attention {impl!r} in {r['compile_s']:.1f} s")
    r.update(compiled_numbers(compiled))
    mem = r.get("memory_analysis")
    if mem:
        planned = mem["argument"] + mem["output"] - mem["alias"] + mem["temp"]
        limit = memory_stats(device).get("bytes_limit")
        log(f"train: XLA plans {planned / 2**30:.1f} GiB (state and batch {mem['argument'] / 2**30:.1f}, temporaries "
            f"{mem['temp'] / 2**30:.1f}) of {limit / 2**30 if limit else float('nan'):.1f} GiB the allocator has")
    save()

    start = time.perf_counter()
    rng = np.random.default_rng(0)
    batch = random_batch(batch_spec(config), config.train.batch_size, rng, encoded=True)
    batch = {k: jax.device_put(v, batch_sharding(mesh, v.ndim)) for k, v in batch.items()}
    state = factory.create(config.seed)
    jax.block_until_ready(state)
    r["init_s"] = time.perf_counter() - start
    r["params"] = int(sum(np.prod(x.shape) for x in jax.tree.leaves(state.params)))
    log(f"train: state of {r['params']:,} params initialised in {r['init_s']:.1f} s")
    save()

    frozen, times = {"vae": None, "audio": None}, []
    for i in range(args.warmup + args.steps):
        start = time.perf_counter()
        state, metrics = compiled(state, frozen, batch)
        jax.block_until_ready((state, metrics))
        seconds = time.perf_counter() - start
        if i >= args.warmup:
            times.append(seconds)
        log(f"train: step {i + 1}/{args.warmup + args.steps} ({'timed' if i >= args.warmup else 'warm-up'}) "
            f"{seconds:.3f} s, loss {float(metrics['loss']):.4f}")
    r["step_times_s"] = times
    r["step_s"] = statistics.median(times)
    r["loss"] = float(metrics["loss"])
    r.update(memory_stats(device))
    return {"params": state.params, "traced": traced}


def flops_section(r: dict, config, device, train: dict | None, timed: dict, peak: float | None,
                  budget_s: float) -> None:
    """Model FLOPs (remat off) and hardware FLOPs (remat as run) of the step, both traced with XLA attention,
    and XLA's count of the compiled step (from the train section's `timed`) beside them."""
    step_s = timed.get("step_s")
    impl = config.model.unet.attention_impl
    remat = bool(config.model.unet.remat or config.model.unet.remat_resnets)
    counted = {}
    for name in ("model", "hardware"):
        if name == "hardware" and remat and elapsed() > budget_s and impl not in ("xla", "chunked"):
            r["hardware_skipped"] = f"{elapsed():.0f} s > --budget-s {budget_s}"
            log("flops: hardware count skipped (time budget)")
            break
        if name == "hardware" and not remat:
            counted[name] = counted["model"]
        elif name == "hardware" and train is not None and impl in ("xla", "chunked"):
            counted[name] = count_flops(train["traced"].jaxpr)  # the program as run: the jaxpr sees all of it
        else:
            start = time.perf_counter()
            counting = model_flops_config(config) if name == "model" else with_attention(config, "xla")
            traced, _ = trace_train_step(counting, [device])
            counted[name] = count_flops(traced.jaxpr)
            log(f"flops: {name} count traced in {time.perf_counter() - start:.1f} s")
        r[f"{name}_flops_per_step"] = counted[name].flops
    r["xla_flops_per_step"] = timed.get("xla_flops_per_step")
    for name in ("model", "hardware", "xla"):
        flops = r.get(f"{name}_flops_per_step")
        if step_s and flops:
            r[f"{name}_flops_per_s"] = flops / step_s
        key = {"model": "mfu", "hardware": "hfu", "xla": "xla_flops_utilization"}[name]
        r[key] = utilization(flops, step_s, peak)


def sampling_section(r: dict, config, device, params, peak: float | None) -> None:
    """One clip through Sampler.stream at the config's sample settings, twice (compile run, steady run)."""
    from emo_jax.sample.generate import random_model_params
    from emo_jax.sample.sampler import Sampler, check_video_model, chunk_program

    config = config.copy_and_resolve_references()
    config.sample.clips_per_chunk = 1
    if params is None:
        start = time.perf_counter()
        params = random_model_params(config)
        log(f"sampling: random params in {time.perf_counter() - start:.1f} s")
    params = {k: v for k, v in params.items() if k != "vae"}
    m, s = config.model, config.sample
    r.update(attention_impl=m.unet.attention_impl, steps=s.steps, guidance=s.guidance, frames=m.clip_frames)
    sampler = Sampler(config, params)
    rng = np.random.default_rng(1)
    latent = rng.standard_normal((1, m.latent_size, m.latent_size, 4)).astype(np.float32)
    audio = rng.standard_normal((m.clip_frames, 2 * m.audio.context + 1, m.audio.layers, m.audio.feature_dim))
    audio = audio.astype(np.float32)
    mask = np.ones((sampler.mask_size,) * 2, np.float32)

    def timed(fn) -> tuple[float, object]:
        start = time.perf_counter()
        out = jax.block_until_ready(fn())
        return time.perf_counter() - start, out

    first, ref = timed(lambda: sampler.reference(latent))
    steady, ref = timed(lambda: sampler.reference(latent))
    r["reference_compile_s"], r["reference_s"] = first - steady, steady
    log(f"sampling: ReferenceNet program compiled in {first - steady:.1f} s, runs in {steady:.3f} s")

    def clip():
        return np.concatenate(list(sampler.stream(ref, audio, mask, 0, s.ref_scale, s.audio_scale)))

    first, frames = timed(clip)
    log(f"sampling: first clip (compile + run) {first:.1f} s")
    steady, frames = timed(clip)
    r["compile_s"], r["clip_s"] = first - steady, steady
    r["ddim_step_s"] = steady / s.steps
    r["seconds_per_frame"] = steady / m.clip_frames
    r["finite"] = bool(np.isfinite(frames).all())
    r.update(memory_stats(device))
    log(f"sampling: clip of {m.clip_frames} frames in {steady:.2f} s ({r['ddim_step_s']:.3f} s per DDIM step)")
    # Counted on the same program with XLA attention: the count cannot see into a cuDNN call.
    counted = chunk_program(check_video_model(with_attention(config, "xla")), sampler.spec, sampler.latent_shape)
    r["model_flops_per_clip"] = count_flops(counted.trace(*sampler.last_call_args).jaxpr).flops
    r["model_flops_per_s"] = r["model_flops_per_clip"] / steady
    r["mfu"] = utilization(r["model_flops_per_clip"], steady, peak)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=None,
                   help="config file:variant (default configs/emo_512.py:stage2 on a GPU, configs/tiny.py:stage2 else)")
    p.add_argument("--attention", default=None,
                   help="model.unet.attention_impl (default cudnn on a GPU, the config's elsewhere)")
    p.add_argument("--fallback-attention", default="chunked",
                   help="attention for a rerun when --attention fails (default chunked: XLA attention's full "
                        "score matrix at 16 frames x 4096 x 8192 tokens is 17 GB per layer)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps after compiling (default 3)")
    p.add_argument("--steps", type=int, default=5, help="timed steps; the median is reported (default 5)")
    p.add_argument("--budget-s", type=float, default=360.0,
                   help="skip the sampling section when more seconds than this have gone by (default 360)")
    p.add_argument("--out", default=None,
                   help="results file (default $OUT/gpu.json if OUT is set, else benchmarks/results/gpu.json; "
                        "gpu_cpu.json without a GPU)")
    args = p.parse_args(argv)

    device = jax.devices()[0]
    on_gpu = device.platform == "gpu"
    if not on_gpu:
        log(f"NOTICE: no GPU (jax backend {device.platform!r}); running the tiny config on CPU, which checks that "
            "the benchmark runs, not how fast the model is")
    spec = args.config or ("configs/emo_512.py:stage2" if on_gpu else "configs/tiny.py:stage2")
    config = load_config(os.path.join(_ROOT, spec))
    config.mesh.shape.update(dict(data=1, fsdp=1, tensor=1))
    config.train.batch_size = 1
    config.model.unet.attention_impl = args.attention or ("cudnn" if on_gpu else config.model.unet.attention_impl)
    name = "gpu.json" if on_gpu else "gpu_cpu.json"
    out = args.out or os.path.join(os.environ.get("OUT") or os.path.join(_ROOT, "benchmarks", "results"), name)

    peak = peak_bf16_flops(device.device_kind) if on_gpu else None
    m = config.model
    report = Report(out, {
        "device": str(device), "device_kind": device.device_kind, "platform": device.platform,
        "jax": jax.__version__, "notice": None if on_gpu else "no GPU: tiny config on CPU",
        "config": spec, "peak_bf16_flops": peak,
        "shapes": {"pixels": config.data.size, "latent": m.latent_size, "clip_frames": m.clip_frames,
                   "motion_frames": m.motion_frames, "batch": 1, "dtype": m.unet.dtype, "remat": m.unet.remat,
                   "remat_resnets": m.unet.remat_resnets, "stage": config.train.stage},
        "definitions": "mfu = model FLOPs (jaxpr count, remat off, XLA attention) / step s / peak_bf16_flops; "
                       "hfu the same with hardware FLOPs (jaxpr count, remat as run); xla_flops = XLA's cost "
                       "analysis of the compiled program (a cuDNN attention call counts as 0)",
    })
    log(f"{device.device_kind}: {spec}, attention {m.unet.attention_impl!r}, peak bf16 "
        f"{peak / 1e12 if peak else None} TFLOP/s; results to {out}")
    train = report.run("train", train_section, config, device, args, report.save)
    r = report.results["train"]
    run_config = with_attention(config, r.get("attention_impl", m.unet.attention_impl))
    report.run("flops", flops_section, run_config, device, train, r, peak, args.budget_s)
    params = train["params"] if train else None
    del train
    if elapsed() > args.budget_s:
        report.results["sampling"] = {"status": "skipped", "reason": f"{elapsed():.0f} s > --budget-s {args.budget_s}"}
        report.save()
        log("sampling: skipped (time budget)")
    else:
        report.run("sampling", sampling_section, run_config, device, params, peak)
    summary(report.results)
    log(f"wrote {out}")
    return 0


def summary(res: dict) -> None:
    t, f, s = res.get("train", {}), res.get("flops", {}), res.get("sampling", {})

    def num(v, fmt):
        return format(v, fmt) if isinstance(v, (int, float)) else "-"

    peak_mem = t.get("peak_bytes_in_use")

    print(f"train [{t.get('status')}] attention {t.get('attention_impl')}: compile {num(t.get('compile_s'), '.1f')} s, "
          f"step {num(t.get('step_s'), '.3f')} s, peak mem {num(peak_mem and peak_mem / 2**30, '.1f')} GiB, "
          f"model {num((f.get('model_flops_per_step') or 0) / 1e12, '.2f')} TFLOP/step, "
          f"MFU {num(f.get('mfu'), '.1%')}, HFU {num(f.get('hfu'), '.1%')}", flush=True)
    print(f"sampling [{s.get('status')}]: compile {num(s.get('compile_s'), '.1f')} s, "
          f"clip {num(s.get('clip_s'), '.2f')} s, {num(s.get('ddim_step_s'), '.3f')} s/DDIM step, MFU {num(s.get('mfu'), '.1%')}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
