"""Train step speed: seconds per step, examples per second and achieved FLOP/s against the CPU's matmul rate.

    python benchmarks/train_step.py [--steps 5] [--out benchmarks/results/train_step.json]

Two configs in one run: configs/tiny.py:stage2 and a larger CPU-sized stage 2 (wider UNet, 64 px latents'
worth of frames). Each runs the real emo-train step (VAE and wav2vec2 encoding inside the step, random
encoder weights) on one device with a random batch. FLOPs come from XLA's cost analysis of the compiled step;
the reference rate is a float32 [N, N] x [N, N] matmul timed here, so "of matmul peak" says how well the step
uses what this CPU can do at all. Compile time is the first call minus a steady call.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from compiled_step import compile_train_step  # noqa: E402
from emo_jax.config import load_config  # noqa: E402


def matmul_flops_per_s(n: int = 1024, repeats: int = 10) -> float:
    """Measured float32 matmul rate of this host's first device."""
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    start = time.perf_counter()
    for _ in range(repeats):
        f(a).block_until_ready()
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def configs() -> dict:
    tiny = load_config(os.path.join(_ROOT, "configs/tiny.py:stage2"))
    larger = load_config(os.path.join(_ROOT, "configs/tiny.py:stage2"))
    larger.model.unet.block_out_channels = (64, 128)
    larger.model.unet.norm_groups = 16
    larger.model.latent_size = 32
    larger.data.size = 64
    larger.model.unet.cross_attention_dim = larger.model.unet.audio_dim = 64
    out = {}
    for name, c in (("tiny", tiny), ("larger", larger)):
        c.mesh.shape.update(dict(data=1, fsdp=1, tensor=1))
        c.train.batch_size = 1
        out[name] = c
    return out


def measure(config, steps: int) -> dict:
    step = compile_train_step(config, encoded=False)
    metrics = step.run()
    jax.block_until_ready(metrics)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        metrics = step.run()
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    cost = step.compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    step_s = float(np.median(times))
    flops = float(cost.get("flops", float("nan")))
    return {"batch": config.train.batch_size, "frames": config.model.clip_frames, "pixels": config.data.size,
            "params": int(sum(np.prod(x.shape) for x in jax.tree.leaves(step.state().params))),
            "compile_s": step.compile_s, "step_s": step_s, "examples_per_s": config.train.batch_size / step_s,
            "flops_per_step": flops, "flops_per_s": flops / step_s, "loss": float(metrics["loss"])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=5, help="timed steps per config (after one warm-up step)")
    p.add_argument("--out", default=os.path.join(_ROOT, "benchmarks/results/train_step.json"))
    args = p.parse_args()
    peak = matmul_flops_per_s()
    results = {name: measure(c, args.steps) for name, c in configs().items()}
    for r in results.values():
        r["of_matmul_peak"] = r["flops_per_s"] / peak
    print(f"float32 matmul rate of this CPU: {peak / 1e9:.1f} GFLOP/s")
    print(f"{'config':8} {'params':>10} {'compile s':>10} {'step s':>8} {'ex/s':>7} {'GFLOP/step':>11} "
          f"{'GFLOP/s':>8} {'of peak':>8}")
    for name, r in results.items():
        print(f"{name:8} {r['params']:>10,} {r['compile_s']:>10.1f} {r['step_s']:>8.3f} {r['examples_per_s']:>7.2f} "
              f"{r['flops_per_step'] / 1e9:>11.2f} {r['flops_per_s'] / 1e9:>8.2f} {r['of_matmul_peak']:>8.1%}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump({"device": str(jax.devices()[0]), "matmul_flops_per_s": peak, "configs": results}, f, indent=2)


if __name__ == "__main__":
    main()
