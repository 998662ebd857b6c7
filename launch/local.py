#!/usr/bin/env python3
"""Run emo-train on this machine: one process, or N processes on localhost sharing a coordinator
(the multi-host code path without a cluster; CPU devices are split between the processes).

    python launch/local.py --config configs/tiny.py:stage1 --workdir /tmp/run [--processes 2] [--dry-run]
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import parse_with_overrides, quote  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def commands(args, port: int) -> list[tuple[dict, list[str]]]:
    base = ["emo-train", "--config", args.config, "--workdir", args.workdir] + args.overrides
    if args.processes == 1:
        return [({}, base)]
    env = {"JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={args.devices_per_process}"}
    return [(env, base + ["--coordinator", f"127.0.0.1:{port}", "--num-processes", str(args.processes),
                          "--process-id", str(i)]) for i in range(args.processes)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--config", required=True)
    p.add_argument("--workdir", required=True)
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--devices-per-process", type=int, default=4)
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = parse_with_overrides(p, argv)
    plan = commands(args, free_port())
    for env, cmd in plan:
        print(" ".join(f"{k}={quote([v])}" for k, v in env.items()) + (" " if env else "") + quote(cmd), flush=True)
    if args.dry_run:
        return 0
    procs = [subprocess.Popen(cmd, env={**os.environ, **env}) for env, cmd in plan]
    return max(p.wait() for p in procs)


if __name__ == "__main__":
    sys.exit(main())
