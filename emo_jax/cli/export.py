"""emo-export: a training checkpoint -> PyTorch safetensors (diffusers / AnimateDiff / Hallo names); docs/weights.md."""
from __future__ import annotations

import argparse
import sys

from emo_jax.cli.runner import ArgumentParser, run
from emo_jax.interop.export import DTYPES, export_weights


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog="emo-export", description=__doc__)
    parser.add_argument("--checkpoint", required=True, help="the trainer's checkpoint folder")
    parser.add_argument("--out", required=True, help="folder to write (created; existing files are replaced)")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    parser.add_argument("--no-ema", action="store_true", help="export the raw weights instead of their EMA")
    return parser


def _run(args: argparse.Namespace) -> None:
    # Imported here: the trainer pulls in optax/orbax, which the export itself does not need.
    from emo_jax.train.checkpoint import restore_params

    config, params = restore_params(args.checkpoint, step=args.step, use_ema=not args.no_ema)
    vae_params = None
    if config.get("vae") is not None and config.vae.path:
        from emo_jax.encoders import vae

        _, vae_params, _ = vae(config)
    else:
        print("emo-export: config.vae.path is empty, so no vae/ folder is written", file=sys.stderr)
    manifest = export_weights(config, params, args.out, dtype=args.dtype, vae_params=vae_params, step=args.step)
    for file, info in manifest["files"].items():
        print(f"{file:<48}{info['keys']:>6} tensors")
    print(f"wrote {args.out} (stage {manifest['stage']}, {manifest['dtype']}{', EMA' if not args.no_ema else ''})")


def main(argv: list[str] | None = None) -> int:
    return run(_parser(), _run, argv)


if __name__ == "__main__":
    sys.exit(main())
