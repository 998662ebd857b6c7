"""The programs issue #22 times on a CPU, at its two shapes, beside an earlier version of the same code.

    python benchmarks/cpu_shapes.py [--baseline REV] [--shapes tiny small] [--programs ...] [--rounds 2]
                                    [--out benchmarks/results/cpu_shapes.json]

Shapes (SD1.5's structure: 4 levels, 2 layers per block, attention at the first three, 8 heads; 12 + 4 frames,
batch 1, float32, no remat, XLA attention):
  tiny   widths 32/64/64/64, 8x8 latents, 64-wide audio tokens from 2 x 32 features
  small  widths 64/128/256/256, 16x16 latents, 768-wide audio tokens from wav2vec2-base's 12 x 768 features
Programs:
  train_stage2  a train step from precomputed latents and audio features, Hallo's stage-2 set trainable
                (temporal, audio attention, audio projection)
  train_all     the same step with every EMO parameter trainable (EMO's stage 2)
  guided_step   one DDIM step with separate guidance (3 passes in one forward), clip conditioning precomputed
  clip          one whole clip as emo-generate runs it (the chunk program, 1 clip, --clip-steps DDIM steps)

Every (shape, program, version) is measured in a fresh process, versions alternating round by round, so they
share the machine's state; the table gives each one's median over rounds. --baseline REV checks REV out into a
git worktree and runs this same file against its emo_jax (so the measuring code is the same for both).
Compile time is lower + compile of the jitted program; run time the median of --repeats calls after one warm-up.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES = ("tiny", "small")
PROGRAMS = ("train_stage2", "train_all", "guided_step", "clip")
HALLO_STAGE2 = ("temporal", "audio_attention", "audio_proj")  # what Hallo's stage 2 trains
# Hallo's times on a 2-core host like CI's, as issue #22 reports them (small shapes), and the targets.
HALLO_SMALL_S = {"guided_step": 1.22, "train_stage2": 2.02}


def shape_config(shape: str):
    """configs/emo_512.py:stage2 at one of the benchmark's shapes."""
    from emo_jax.config import load_config

    c = load_config(os.path.join(_ROOT_UNDER_TEST, "configs/emo_512.py:stage2"))
    m, u = c.model, c.model.unet
    u.remat = False
    u.dtype = "float32"
    u.attention_impl = "xla"
    c.mesh.shape.update(dict(data=1, fsdp=1, tensor=1))
    c.train.batch_size = 1
    if shape == "tiny":
        m.latent_size = 8
        u.block_out_channels = (32, 64, 64, 64)
        u.norm_groups = 16
        u.cross_attention_dim = u.audio_dim = 64
        m.audio.update(dict(layers=2, feature_dim=32, tokens=4, hidden=64))
        m.face_locator.channels = (8, 16, 32, 32)
    elif shape == "small":
        m.latent_size = 16
        u.block_out_channels = (64, 128, 256, 256)
        u.norm_groups = 32
    else:
        raise ValueError(f"unknown shape {shape!r}; choose one of {SHAPES}")
    c.data.size = m.latent_size * 8
    return c


def _time(fn, repeats: int) -> tuple[float, float]:
    """(first call, median of `repeats` further calls) in seconds."""
    import jax
    import numpy as np

    start = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return first, float(np.median(times))


def measure_train(config, trainable: tuple[str, ...], repeats: int) -> dict:
    from compiled_step import compile_train_step

    config.train.trainable = trainable
    step = compile_train_step(config, encoded=True)
    _, run_s = _time(step.run, repeats)
    return {"compile_s": step.compile_s, "run_s": run_s, "flops": _flops(step.compiled)}


def _sampler_setup(config):
    import flax.linen as nn
    import numpy as np

    from emo_jax.config import model_config
    from emo_jax.models.emo import EMO, example_inputs, face_mask_size
    from emo_jax.models.partitioning import init_params

    cfg = model_config(config)
    model = EMO(cfg)
    size, f = config.model.latent_size, config.model.clip_frames
    inputs = example_inputs(cfg, 1, f, size)
    params = nn.unbox(init_params(model, 0, inputs))
    rng = np.random.default_rng(0)
    audio = rng.standard_normal((f, 2 * cfg.audio.context + 1, cfg.audio.layers, cfg.audio.feature_dim),
                                np.float32)
    px = face_mask_size(cfg, size)
    mask = np.zeros((1, px, px, 1), np.float32)
    mask[:, px // 4:3 * px // 4, px // 4:3 * px // 4] = 1
    ref_latent = rng.standard_normal((1, size, size, cfg.unet.in_channels)).astype(np.float32)
    return cfg, model, params, audio, mask, ref_latent


def measure_guided_step(config, repeats: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from emo_jax.models.emo import EMO
    from emo_jax.sample.sampler import SamplerSpec, clip_condition, guided_ddim_step

    config.sample.guidance = "joint"  # Hallo's two-pass guidance: the passes issue #22's Hallo figure runs
    cfg, model, params, audio, mask, ref_latent = _sampler_setup(config)
    spec = SamplerSpec.from_config(config)
    schedule = spec.schedule()
    ref = jax.jit(lambda p, r: model.apply({"params": p}, r, method=EMO.reference_features))(params, ref_latent)
    n, size = cfg.motion_frames, config.model.latent_size
    previous = jnp.zeros((1, n, size, size, cfg.unet.in_channels))
    cond = jax.jit(lambda p, r, a, m, prev: clip_condition(model, p, r, a, {}, m, prev, jnp.bool_(False)))(
        params, ref, jnp.asarray(audio), jnp.asarray(mask), previous)
    x = jnp.asarray(np.random.default_rng(1).standard_normal((1, config.model.clip_frames, size, size, 4)),
                    jnp.float32)
    scales = jnp.asarray([3.5, 3.5], jnp.float32)
    step = jax.jit(lambda p, x, c, s: guided_ddim_step(model, spec, schedule, p, x, jnp.int32(501), jnp.int32(476),
                                                       c, s))
    start = time.perf_counter()
    compiled = step.lower(params, x, cond, scales).compile()
    compile_s = time.perf_counter() - start
    _, run_s = _time(lambda: compiled(params, x, cond, scales), repeats)
    return {"compile_s": compile_s, "run_s": run_s, "flops": _flops(compiled)}


def measure_clip(config, steps: int, repeats: int) -> dict:
    import jax
    import jax.numpy as jnp

    from emo_jax.sample.sampler import SamplerSpec, chunk_program, reference_program

    config.sample.steps = steps
    config.sample.clips_per_chunk = 1
    cfg, model, params, audio, mask, ref_latent = _sampler_setup(config)
    spec = SamplerSpec.from_config(config)
    size = config.model.latent_size
    program = chunk_program(cfg, spec, (size, size, cfg.unet.in_channels))
    ref = reference_program(cfg)(params, ref_latent)
    carry = (jnp.zeros((1, cfg.motion_frames, size, size, cfg.unet.in_channels)), jax.random.PRNGKey(0),
             jnp.int32(0))
    args = (params, ref, carry, jnp.asarray(audio)[None], {}, jnp.asarray(mask), jnp.asarray([3.5, 3.5]))
    start = time.perf_counter()
    compiled = program.lower(*args).compile()
    compile_s = time.perf_counter() - start
    _, run_s = _time(lambda: compiled(*args), repeats)
    return {"compile_s": compile_s, "run_s": run_s, "flops": _flops(compiled), "steps": steps}


def _flops(compiled) -> float:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float((cost or {}).get("flops", float("nan")))


def child(shape: str, program: str, repeats: int, clip_steps: int) -> dict:
    config = shape_config(shape)
    if program == "train_stage2":
        return measure_train(config, HALLO_STAGE2, repeats)
    if program == "train_all":
        return measure_train(config, ("reference_net", "temporal", "audio_attention", "backbone", "audio_proj",
                                      "face_locator"), repeats)
    if program == "guided_step":
        return measure_guided_step(config, repeats)
    if program == "clip":
        return measure_clip(config, clip_steps, repeats)
    raise ValueError(f"unknown program {program!r}; choose from {PROGRAMS}")


def _worktree(rev: str) -> str:
    path = os.path.join(tempfile.gettempdir(), f"emo_jax_baseline_{rev}")
    if not os.path.isdir(path):
        subprocess.run(["git", "-C", _ROOT, "worktree", "add", "--detach", path, rev], check=True,
                       capture_output=True)
    return path


def run_child(cmd: list[str], env: dict[str, str], cwd: str | None = None) -> dict:
    """Runs a measuring child process: its result is the JSON object on its last stdout line, or {"error": its
    last stderr line} when it fails."""
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=cwd)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def median_fields(results: list[dict], keys) -> dict:
    """Each key's median (the upper one for an even count) over the results that have no error; {} if none has."""
    ok = [r for r in results if "error" not in r]
    return {k: sorted(r[k] for r in ok)[len(ok) // 2] for k in keys} if ok else {}


def run_one(root: str, shape: str, program: str, args) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", shape, program, "--root", root,
           "--repeats", str(args.repeats), "--clip-steps", str(args.clip_steps)]
    return run_child(cmd, dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=root))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--baseline", default="", help="git revision to time beside the working tree (e.g. a tag)")
    p.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=SHAPES)
    p.add_argument("--programs", nargs="+", default=list(PROGRAMS), choices=PROGRAMS)
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds per (shape, program, version)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per process after one warm-up")
    p.add_argument("--clip-steps", type=int, default=40)
    p.add_argument("--out", default=os.path.join(_ROOT, "benchmarks/results/cpu_shapes.json"))
    p.add_argument("--child", nargs=2, metavar=("SHAPE", "PROGRAM"), help=argparse.SUPPRESS)
    p.add_argument("--root", default=_ROOT, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        global _ROOT_UNDER_TEST
        _ROOT_UNDER_TEST = args.root
        print(json.dumps(child(*args.child, args.repeats, args.clip_steps)))
        return
    versions = {"current": _ROOT}
    if args.baseline:
        versions[args.baseline] = _worktree(args.baseline)
    rows = []
    for shape in args.shapes:
        for program in args.programs:
            runs = {v: [] for v in versions}
            for _ in range(args.rounds):
                for version, root in versions.items():
                    runs[version].append(run_one(root, shape, program, args))
            for version, results in runs.items():
                row = {"shape": shape, "program": program, "version": version, "rounds": results,
                       **median_fields(results, ("compile_s", "run_s", "flops"))}
                if "run_s" not in row:
                    row["error"] = results[-1]["error"]
                rows.append(row)
                _print_row(row)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump({"host_cpus": os.cpu_count(), "versions": list(versions), "hallo_small_s": HALLO_SMALL_S,
                   "rows": rows}, f, indent=2)
    print(f"wrote {args.out}")


def _print_row(row: dict) -> None:
    if "error" in row:
        print(f"{row['shape']:6} {row['program']:13} {row['version']:10} error: {row['error']}")
        return
    hallo = HALLO_SMALL_S.get(row["program"]) if row["shape"] == "small" else None
    versus = f"  Hallo/this {hallo / row['run_s']:.2f}x" if hallo else ""
    # XLA's cost analysis counts a loop body once: the clip's 40-step scan would read as 1/40 of its work.
    rate = "" if row["program"] == "clip" else f"  {row['flops'] / row['run_s'] / 1e9:6.1f} GFLOP/s"
    print(f"{row['shape']:6} {row['program']:13} {row['version']:10} compile {row['compile_s']:7.1f} s  "
          f"run {row['run_s']:8.3f} s{rate}{versus}", flush=True)


_ROOT_UNDER_TEST = _ROOT

if __name__ == "__main__":
    main()
