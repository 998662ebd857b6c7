#!/usr/bin/env python3
"""Run emo-train on a multi-node GPU cluster under SLURM, one process per GPU.

    python launch/slurm_gpu.py --nodes 4 --gpus-per-node 8 --config configs/emo_512.py:stage2 \
        --workdir /shared/runs/run1 [--partition gpu] [--time 48:00:00] [--dry-run]

Writes an sbatch script next to the workdir and submits it. Inside the job, jax.distributed.initialize()
reads SLURM's environment (coordinator = first node, process id = SLURM_PROCID, one GPU per task).
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import install_command, parse_with_overrides, quote, run_all  # noqa: E402


def sbatch_script(args) -> str:
    train = f"emo-train --config {args.config} --workdir {args.workdir}"
    if args.overrides:
        train += " " + quote(args.overrides)
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={args.name}",
        f"#SBATCH --nodes={args.nodes}",
        f"#SBATCH --ntasks-per-node={args.gpus_per_node}",
        f"#SBATCH --gpus-per-node={args.gpus_per_node}",
        f"#SBATCH --time={args.time}",
        f"#SBATCH --output={args.workdir}/slurm-%j.out",
    ]
    if args.partition:
        lines.append(f"#SBATCH --partition={args.partition}")
    lines += [
        "set -euo pipefail",
        f"cd {args.repo_dir}",
        f"test -d .venv || ({install_command('gpu')})",
        ". .venv/bin/activate",
        "export XLA_PYTHON_CLIENT_MEM_FRACTION=0.92",
        f"srun --kill-on-bad-exit=1 {train}",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--name", default="emo-train")
    p.add_argument("--nodes", type=int, required=True)
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--partition")
    p.add_argument("--time", default="48:00:00")
    p.add_argument("--repo-dir", default=os.getcwd(), help="the checkout every node sees (shared filesystem)")
    p.add_argument("--config", required=True)
    p.add_argument("--workdir", required=True)
    p.add_argument("--dry-run", action="store_true", help="print the sbatch script and command, submit nothing")
    args = parse_with_overrides(p, argv)
    script = sbatch_script(args)
    path = os.path.join(args.workdir, f"{args.name}.sbatch")
    print(f"# {path}\n{script}", end="")
    if not args.dry_run:
        os.makedirs(args.workdir, exist_ok=True)
        with open(path, "w") as f:
            f.write(script)
    return run_all([["sbatch", path]], args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
