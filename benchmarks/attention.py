"""Attention implementations side by side at the model's shapes: forward + backward time, compile time, and the
largest difference from plain XLA attention, each with the reference-drop key mask (half the batch keeps only
its own keys).

    python benchmarks/attention.py [--shapes paper|small] [--out FILE]

Shapes (stage 2 at 512 px, 12 frames, batch 1; SD1.5 widths, 8 heads): the reference-concat self-attention of
the 64x64, 32x32 and 16x16 levels (queries = h*w per frame, keys = twice that, head dims 40, 80, 160) and a
temporal attention at the 64x64 level (4096 sequences of 16 frames). `small` divides the spatial sides by 4 so
the script runs on a CPU. Implementations: xla, chunked (1024-query chunks) and, on a GPU, jax.nn's cuDNN
kernel; one that fails is recorded with its error. The results go to $OUT/attention.json when OUT is set, else
benchmarks/results/attention_<platform>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)
from emo_jax.models.attention import dot_product_attention  # noqa: E402

HEADS = 8


def shapes(kind: str) -> dict[str, tuple[int, int, int, int, bool]]:
    """name -> (batch, queries, keys, head_dim, masked)."""
    side = 64 if kind == "paper" else 16
    frames = 12
    return {
        f"self+ref {side}x{side}": (frames, side * side, 2 * side * side, 40, True),
        f"self+ref {side // 2}x{side // 2}": (frames, (side // 2) ** 2, 2 * (side // 2) ** 2, 80, True),
        f"self+ref {side // 4}x{side // 4}": (frames, (side // 4) ** 2, 2 * (side // 4) ** 2, 160, True),
        f"temporal {side}x{side}": (side * side, 16, 16, 40, False),
    }


def measure(impl: str, batch: int, queries: int, keys: int, head_dim: int, masked: bool, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.normal(size=(batch, queries, HEADS, head_dim)), jnp.bfloat16)
    k, v = (jnp.asarray(rng.normal(size=(batch, keys, HEADS, head_dim)), jnp.bfloat16) for _ in range(2))
    lengths = jnp.where(jnp.arange(batch) % 2 == 0, keys, keys // 2).astype(jnp.int32) if masked else None

    def loss(q, k, v, impl):
        return jnp.sum(jnp.square(dot_product_attention(q, k, v, lengths, impl=impl).astype(jnp.float32)))

    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)), static_argnums=3)
    forward = jax.jit(lambda q, k, v: dot_product_attention(q, k, v, lengths, impl=impl))
    start = time.perf_counter()
    compiled = step.lower(q, k, v, impl).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(q, k, v))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(q, k, v))
        times.append(time.perf_counter() - start)
    out = forward(q, k, v).astype(jnp.float32)
    reference = jax.jit(lambda q, k, v: dot_product_attention(q, k, v, lengths, impl="xla"))(q, k, v)
    err = float(jnp.max(jnp.abs(out - reference.astype(jnp.float32))) / jnp.max(jnp.abs(reference)))
    return {"compile_s": compile_s, "fwd_bwd_s": statistics.median(times), "max_rel_diff_to_xla": err}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    device = jax.devices()[0]
    parser.add_argument("--shapes", choices=("paper", "small"),
                        default="paper" if device.platform == "gpu" else "small")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    impls = ["xla", "chunked"] + (["cudnn"] if device.platform == "gpu" else [])
    out = args.out or os.path.join(os.environ.get("OUT") or os.path.join(_ROOT, "benchmarks", "results"),
                                   "attention.json" if os.environ.get("OUT") else f"attention_{device.platform}.json")
    results = {"device_kind": device.device_kind, "jax": jax.__version__, "shapes": args.shapes, "heads": HEADS,
               "dtype": "bfloat16", "rows": []}
    print(f"{device.device_kind}, jax {jax.__version__}, {args.shapes} shapes, bf16, forward + backward")
    print(f"{'attention':<20}{'B x L x S x d':>24}" + "".join(f"{i:>22}" for i in impls))
    for name, (b, lq, lk, d, masked) in shapes(args.shapes).items():
        row = {"name": name, "batch": b, "queries": lq, "keys": lk, "head_dim": d, "masked": masked}
        cells = []
        for impl in impls:
            try:
                row[impl] = measure(impl, b, lq, lk, d, masked, args.repeats)
                cells.append(f"{row[impl]['fwd_bwd_s'] * 1e3:9.2f} ms ({row[impl]['compile_s']:4.1f} s)")
            except Exception as e:  # an implementation a backend cannot run is a row entry, not the end
                row[impl] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
                cells.append(f"{'error':>19}")
        results["rows"].append(row)
        print(f"{name:<20}{f'{b}x{lq}x{lk}x{d}':>24}" + "".join(f"{c:>22}" for c in cells), flush=True)
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    print(f"(time per forward + backward, compile in brackets; max relative difference to xla in {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
