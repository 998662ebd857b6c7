"""Where the small CPU train step's time goes besides its kernels: CPU time in the kernel (system) against user
time, page faults per step, and the step's XLA temporary buffer, under glibc malloc settings.

    python benchmarks/cpu_step_memory.py [--rounds 2] [--steps 6] [--out benchmarks/results/cpu_step_memory.json]

The step is cpu_shapes.py's small train_stage2 (Hallo's stage-2 set trainable). PJRT's CPU client allocates the
program's temporaries as one buffer per execution; glibc maps a buffer that large afresh (mmap) and unmaps it when
the step ends, so each step faults every page of it in again. Each variant runs in a fresh process (glibc reads
GLIBC_TUNABLES when a process starts), variants alternating round by round; the table gives each variant's median
over rounds:
  default        glibc as it comes
  hugetlb        glibc.malloc.hugetlb=1: malloc advises transparent huge pages for its mappings
  one-arena      every thread in the main arena, no mmap, no trimming: the buffer stays mapped between steps
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

from cpu_shapes import median_fields, run_child

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = {
    "default": "",
    "hugetlb": "glibc.malloc.hugetlb=1",
    "one-arena": "glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736",
}
FIELDS = ("wall_s", "user_s", "system_s", "minor_faults")


def child(steps: int) -> dict:
    """Per-step wall time, user and system CPU time and minor page faults of the small stage-2-set step, after
    one warm-up call, with its compiled temporary size."""
    import jax

    import cpu_shapes
    from compiled_step import compile_train_step

    config = cpu_shapes.shape_config("small")
    config.train.trainable = cpu_shapes.HALLO_STAGE2
    step = compile_train_step(config, encoded=True)
    jax.block_until_ready(step.run())
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(steps):
        jax.block_until_ready(step.run())
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    return {"wall_s": wall / steps, "user_s": (after.ru_utime - before.ru_utime) / steps,
            "system_s": (after.ru_stime - before.ru_stime) / steps,
            "minor_faults": (after.ru_minflt - before.ru_minflt) / steps,
            "temp_bytes": int(step.compiled.memory_analysis().temp_size_in_bytes)}


def run_one(tunables: str, steps: int) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("GLIBC_TUNABLES", None)
    if tunables:
        env["GLIBC_TUNABLES"] = tunables
    return run_child([sys.executable, os.path.abspath(__file__), "--child", "--steps", str(steps)], env, cwd=_ROOT)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds per variant")
    p.add_argument("--steps", type=int, default=6, help="timed steps per process after one warm-up")
    p.add_argument("--out", default=os.path.join(_ROOT, "benchmarks/results/cpu_step_memory.json"))
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.steps)))
        return
    runs = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name, tunables in VARIANTS.items():
            runs[name].append(run_one(tunables, args.steps))
    rows = []
    print(f"{'variant':10} {'wall s':>7} {'user s':>7} {'system s':>8} {'faults':>8} {'temp MiB':>8}  (per step)")
    for name, results in runs.items():
        row = {"variant": name, "glibc_tunables": VARIANTS[name], "rounds": results,
               **median_fields(results, FIELDS + ("temp_bytes",))}
        if "wall_s" not in row:
            row["error"] = results[-1]["error"]
            print(f"{name:10} error: {row['error']}")
        else:
            print(f"{name:10} {row['wall_s']:7.3f} {row['user_s']:7.3f} {row['system_s']:8.3f} "
                  f"{row['minor_faults']:8.0f} {row['temp_bytes'] / 2**20:8.0f}", flush=True)
        rows.append(row)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump({"host_cpus": os.cpu_count(), "program": "small train_stage2 (benchmarks/cpu_shapes.py)",
                   "rows": rows}, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
