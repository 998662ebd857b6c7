#!/usr/bin/env python3
"""Run emo-train on a Cloud TPU pod slice: create the TPU VM, install on every worker, run on --worker=all.

    python launch/tpu_pod.py --name emo --zone us-east5-a --accelerator v5p-128 --repo URL --commit SHA \
        --config configs/emo_512.py:stage2 --workdir gs://BUCKET/run1 [--spot] [--dry-run]
    python launch/tpu_pod.py ... --xpk-cluster CLUSTER --image IMAGE   # the same job through xpk

Every worker runs the same program; jax.distributed.initialize() needs no arguments on a TPU pod.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import install_command, parse_with_overrides, quote, run_all  # noqa: E402

RUNTIMES = {"v4": "tpu-ubuntu2204-base", "v5e": "v2-alpha-tpuv5-lite", "v5litepod": "v2-alpha-tpuv5-lite",
            "v5p": "v2-alpha-tpuv5", "v6e": "v2-alpha-tpuv6e"}


def build(args) -> list[list[str]]:
    train = f"emo-train --config {args.config} --workdir {args.workdir}"
    if args.overrides:
        train += " " + quote(args.overrides)
    if args.xpk_cluster:
        return [["xpk", "workload", "create", "--cluster", args.xpk_cluster, "--workload", args.name,
                 "--tpu-type", args.accelerator, "--num-slices", str(args.slices), "--base-docker-image", args.image,
                 "--command", f"{install_command('tpu')} && {train}"]]
    generation = args.accelerator.split("-")[0]
    if generation not in RUNTIMES:
        raise SystemExit(f"--accelerator {args.accelerator}: unknown TPU generation; known: {sorted(RUNTIMES)}")
    ssh = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", args.name, f"--zone={args.zone}", "--worker=all"]
    create = ["gcloud", "compute", "tpus", "tpu-vm", "create", args.name, f"--zone={args.zone}",
              f"--accelerator-type={args.accelerator}", f"--version={args.runtime or RUNTIMES[generation]}"]
    if args.spot:
        create.append("--spot")
    checkout = f"(test -d emo-jax || git clone {args.repo} emo-jax) && cd emo-jax && git fetch -q && git checkout -q {args.commit}"
    return [
        create,
        ssh + ["--command", f"{checkout} && {install_command('tpu')}"],
        ssh + ["--command", f"cd emo-jax && . .venv/bin/activate && {train}"],
    ]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--name", required=True)
    p.add_argument("--zone", default="us-east5-a")
    p.add_argument("--accelerator", required=True, help="slice name, e.g. v5p-128, v5litepod-64, v6e-64")
    p.add_argument("--runtime", help="TPU VM software version (default by generation)")
    p.add_argument("--repo", required=True, help="git URL of your emo-jax repository (every worker clones it)")
    p.add_argument("--commit", default="main")
    p.add_argument("--config", required=True)
    p.add_argument("--workdir", required=True)
    p.add_argument("--spot", action="store_true")
    p.add_argument("--xpk-cluster", help="submit through xpk to this GKE cluster instead of a TPU VM")
    p.add_argument("--image", default="python:3.11", help="xpk base docker image")
    p.add_argument("--slices", type=int, default=1)
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = parse_with_overrides(p, argv)
    return run_all(build(args), args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
