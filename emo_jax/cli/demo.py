"""emo-demo: the whole system on a laptop CPU, with answers known in advance (no network; the only model files are
MediaPipe's face detector and Face Mesh, which `python -m emo_jax.faces.models` fetches once).

    emo-demo --out DIR [--quick]

What it does and the layout of DIR are described in emo_jax/demo/run.py.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

from emo_jax.cli.runner import ArgumentParser, log_to_stderr, run
from emo_jax.errors import UsageError


def _parser() -> ArgumentParser:
    p = ArgumentParser(prog="emo-demo", description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--out", required=True, help="output folder (created; must be empty or absent)")
    p.add_argument("--quick", action="store_true", help="smoke test: tiny data and a few steps (about 3 minutes)")
    p.add_argument("--seed", type=int, default=0, help="seed of training and generation noise")
    return p


def _run(args: argparse.Namespace) -> None:
    if os.path.isdir(args.out) and os.listdir(args.out):
        raise UsageError(f"--out {args.out!r} is not empty; pass a new folder (the demo does not resume)")
    log_to_stderr()
    logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax logs every checkpoint read and write at INFO
    os.makedirs(args.out, exist_ok=True)
    if args.quick and "jax" not in sys.modules:
        # A smoke test is mostly compilation: skip XLA's slow CPU code-generation passes (slower steps, faster
        # compiles; measured 215 -> 190 s for the whole run from a cold cache).
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
                                   " --xla_llvm_disable_expensive_passes=true").strip()
    import jax
    from tqdm.contrib.logging import logging_redirect_tqdm

    from emo_jax.demo.run import format_table, run as run_demo

    # Compiling the train steps and the sampler is most of a short run on a CPU; a persistent cache makes every
    # run after the first one much faster. JAX_COMPILATION_CACHE_DIR, when set, wins.
    if not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", os.path.join(
            os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "emo-jax", "xla"))
    with logging_redirect_tqdm():  # log lines print above the phase bar instead of through it
        metrics = run_demo(os.path.abspath(args.out), args.quick, args.seed)
    print(format_table(metrics))
    print(f"wrote {os.path.join(args.out, 'videos')} and {os.path.join(args.out, 'metrics.json')}")


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit status."""
    return run(_parser(), _run, argv)


if __name__ == "__main__":
    sys.exit(main())
