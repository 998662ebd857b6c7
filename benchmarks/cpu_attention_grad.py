"""The CPU attention gradient's two key/value products side by side: dV = P^T dO and dK = dS^T Q, i.e.
sum over l of a[n, l, s] * b[n, l, d], as XLA's dot (einsum "nls,nld->nsd") and as a fused multiply-and-sum,
at the blocks emo_jax.models.attention._cpu_attention hands its gradient for benchmarks/cpu_shapes.py's small
shapes (8 heads folded into the batch). The model picks per shape (attention._left_transposed_product); this
script shows what each form costs where.

    python benchmarks/cpu_attention_grad.py [--rounds 5] [--out benchmarks/results/cpu_attention_grad.json]
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
from emo_jax.models.attention import _left_transposed_product  # noqa: E402

# name -> (n, l, s, d): the [N, L, S] block and [N, L, D] operand at the small shapes (16x16 latents, 12 + 4
# frames, widths 64/128/256/256, 8 heads; a self+ref block holds 8 heads' scores, CPU_SCORE_BLOCK_BYTES).
CASES = {
    "temporal 16x16 level": (2048, 16, 16, 8),
    "temporal 8x8 level": (1024, 16, 16, 16),
    "temporal 4x4 level": (256, 16, 16, 32),
    "self+ref 16x16 level (a block)": (8, 256, 512, 8),
    "self+ref 8x8 level (a block)": (16, 64, 128, 16),
    "audio 16x16 level": (128, 256, 32, 8),
    "audio 8x8 level": (128, 64, 32, 16),
}
FORMS = {
    "dot": lambda a, b: jnp.einsum("nls,nld->nsd", a, b),
    "multiply-and-sum": lambda a, b: (a[..., None] * b[:, :, None, :]).sum(axis=1),
    "chosen": _left_transposed_product,
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds; each times 10 calls per form")
    p.add_argument("--out", default=os.path.join(_ROOT, "benchmarks/results/cpu_attention_grad.json"))
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = []
    print(f"{'case':32s} {'n, l, s, d':>20s} " + " ".join(f"{f:>17s}" for f in FORMS) + "  dot / chosen")
    for name, (n, l, s, d) in CASES.items():
        a = jnp.asarray(rng.standard_normal((n, l, s)), jnp.float32)
        b = jnp.asarray(rng.standard_normal((n, l, d)), jnp.float32)
        compiled = {f: jax.jit(fn).lower(a, b).compile() for f, fn in FORMS.items()}
        want = np.asarray(compiled["dot"](a, b))
        times = {f: [] for f in FORMS}
        for _ in range(args.rounds):  # forms alternate, so they share the host's state
            for f, c in compiled.items():
                jax.block_until_ready(c(a, b))
                start = time.perf_counter()
                for _ in range(10):
                    jax.block_until_ready(c(a, b))
                times[f].append((time.perf_counter() - start) / 10)
        ms = {f: statistics.median(t) * 1e3 for f, t in times.items()}
        err = float(np.abs(np.asarray(compiled["multiply-and-sum"](a, b)) - want).max() / np.abs(want).max())
        rows.append({"case": name, "shape": [n, l, s, d], "ms": ms, "max_rel_diff": err})
        print(f"{name:32s} {str((n, l, s, d)):>20s} " + " ".join(f"{ms[f]:14.3f} ms" for f in FORMS)
              + f"  {ms['dot'] / ms['chosen']:.2f}x")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"host_cpus": os.cpu_count(), "rounds": args.rounds, "rows": rows}, f, indent=1)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
