"""Test code run in several real JAX processes on the CPU, joined by jax.distributed (gloo collectives, jax's CPU
default), one CPU device each.

`run_processes(argv_of, n)` starts `python -m tests.eval.multiprocess ARGV...` n times, with argv_of(process id,
coordinator address), and returns each process's (exit status, stdout, stderr). The modes:

- `stats ADDRESS N I OUT`: process I's statistics (process_stats(I)) through allgather_stats, written to OUT
  (FeatureStats.save), and allgather_json of a small record, written to OUT.json;
- `eval EMO-EVAL-ARGS...`: emo-eval's main with those arguments, both metrics on a small feature function
  (tiny_load) instead of the full-size networks.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from typing import Callable

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
D = 16


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def run_processes(argv_of: Callable[[int, str], list[str]], n: int = 2,
                  timeout: float = 120.0) -> list[tuple[int, str, str]]:
    address = f"localhost:{_free_port()}"
    # One CPU device per process: the pytest process forces 8 (tests/conftest.py), the children must not inherit it.
    flags = re.sub(r"--xla_force_host_platform_device_count=\S+", "", os.environ.get("XLA_FLAGS", "")).strip()
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
    procs = [subprocess.Popen([sys.executable, "-m", "tests.eval.multiprocess", *map(str, argv_of(i, address))],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(n)]
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            results.append((proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


def process_features(process: int) -> np.ndarray:
    """A different number of correlated features with a large mean for each process."""
    rng = np.random.default_rng(100 + process)
    mixing = np.random.default_rng(99).normal(size=(D, D))
    return rng.normal(size=(40 + 25 * process, D)) @ mixing + 50.0


def process_stats(process: int):
    """process_features(process) added in two batches."""
    from emo_jax.eval.frechet import FeatureStats

    x = process_features(process)
    stats = FeatureStats("test", D)
    stats.add(x[:7]), stats.add(x[7:])
    return stats


def tiny_load(args, devices):
    """emo-eval's _load with both metrics on a cheap feature function of the frames' corner pixels."""
    import jax.numpy as jnp

    from emo_jax.cli.eval import _Metric
    from emo_jax.eval.extract import ShardedExtractor
    from emo_jax.eval.frechet import FeatureStats, frechet_distance_between

    projection = np.random.default_rng(0).normal(size=(4 * 8 * 3, 4)).astype(np.float32)

    def frames(p, x_NHWC):
        return (x_NHWC[:, :4, :8].astype(jnp.float32) / 255.0).reshape(len(x_NHWC), -1) @ p

    def clips(p, x_NTHWC):
        return (x_NTHWC[:, :, :4, :8].astype(jnp.float32) / 255.0).mean(axis=1).reshape(len(x_NTHWC), -1) @ p

    return {"FID": _Metric(lambda: FeatureStats("tiny_frames", 4),
                           ShardedExtractor(frames, projection, args.fid_batch, devices), frechet_distance_between),
            "FVD": _Metric(lambda: FeatureStats("tiny_clips", 4),
                           ShardedExtractor(clips, projection, args.fvd_batch, devices), frechet_distance_between)}, {}


def _stats(address: str, n: int, process: int, out: str) -> None:
    import jax

    jax.distributed.initialize(coordinator_address=address, num_processes=n, process_id=process)
    from emo_jax.eval.distributed import allgather_json, allgather_stats

    assert jax.process_count() == n and jax.local_device_count() == 1
    stats = process_stats(process)
    allgather_stats(stats).save(out)
    with open(out + ".json", "w") as f:
        json.dump(allgather_json({"process": process, "rows": stats.count, "name": "é" * process}), f)


def main(argv: list[str]) -> int:
    if argv[0] == "stats":
        _stats(argv[1], int(argv[2]), int(argv[3]), argv[4])
        return 0
    assert argv[0] == "eval", argv
    from emo_jax.cli import eval as emo_eval

    emo_eval._load = tiny_load
    return emo_eval.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
