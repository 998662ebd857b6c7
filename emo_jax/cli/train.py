"""emo-train: one EMO training stage on any mesh, from one process or many.

    emo-train --config configs/emo_512.py:stage2 --workdir runs/s2 [--config.train.lr 2e-5 ...]

A run restarted with the same --workdir resumes from its newest intact checkpoint (a damaged newer one is named in a
warning), data position included; --step resumes from that checkpoint or stops with an error naming what is wrong.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from emo_jax.cli.runner import ArgumentParser, log_to_stderr, run


def _parser() -> ArgumentParser:
    p = ArgumentParser(prog="emo-train", description=__doc__.split("\n")[0])
    p.add_argument("--workdir", required=True, help="checkpoints, metrics and TensorBoard events go here")
    p.add_argument("--step", type=int, default=None,
                   help="resume from this checkpoint step (default: the newest intact one)")
    p.add_argument("--coordinator", help="host:port of process 0 (multi-process GPU/CPU runs without SLURM)")
    p.add_argument("--num-processes", type=int, help="processes in the run (with --coordinator)")
    p.add_argument("--process-id", type=int, help="this process's index (with --coordinator)")
    p.add_argument("--random-init-encoders", action="store_true",
                   help="smoke tests only: random VAE and wav2vec2 instead of config.vae.path / audio.wav2vec_path")
    return p


def _run(args: argparse.Namespace, config) -> None:
    # Imported here so that --help answers without loading the trainer.
    from emo_jax.train.train import init_distributed, train

    log_to_stderr()
    init_distributed(args.coordinator, args.num_processes, args.process_id)
    train(config, args.workdir, random_init_encoders=args.random_init_encoders, resume_step=args.step)


def main(argv: Sequence[str] | None = None) -> int:
    return run(_parser(), _run, argv, config=True)


if __name__ == "__main__":
    sys.exit(main())
