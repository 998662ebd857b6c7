"""emo-generate: one portrait + one audio file -> a talking-head mp4 with the audio muxed in."""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from emo_jax.faces.detect import DETECTORS
from emo_jax.cli.runner import ArgumentParser, run
from emo_jax.sample.generate import DEFAULT_SPEED


def _parser() -> ArgumentParser:
    p = ArgumentParser(prog="emo-generate",
                       description="Generates a talking-head video from one portrait and an audio file.")
    p.add_argument("--checkpoint", help="trained checkpoint folder (emo-train output); or --random-init")
    p.add_argument("--random-init", action="store_true",
                   help="smoke test: a fresh random model and random frozen encoders (fixed seed), no weights read")
    p.add_argument("--image", required=True, help="reference portrait (png, jpg, ...)")
    p.add_argument("--audio", required=True, help="driving audio or video file (wav, mp3, m4a, mp4, ...)")
    p.add_argument("--out", required=True, help="output .mp4 path")
    p.add_argument("--seed", type=int, help="noise seed (default config.seed); same seed, same video")
    p.add_argument("--face-box", help="face region x0,y0,x1,y1 in pixels of --image (default: detected)")
    p.add_argument("--detector", default="blazeface", choices=DETECTORS,
                   help="face detector for --image when no --face-box (default blazeface, emo-prepare's; "
                        "haar needs no model files)")
    p.add_argument("--speed", help=f"head speed in the model's unit (model.speed.unit, degrees per frame in "
                                   f"configs/emo_512.py): a number, or a .npy/.txt file with one value per output "
                                   f"frame (speed models only; default {DEFAULT_SPEED})")
    p.add_argument("--steps", type=int, help="DDIM steps (default config.sample.steps)")
    p.add_argument("--ref-scale", type=float, help="reference guidance scale (default config.sample.ref_scale)")
    p.add_argument("--audio-scale", type=float, help="audio guidance scale (default config.sample.audio_scale)")
    p.add_argument("--fps", type=float, help="output frame rate (default config.data.fps, the training rate)")
    p.add_argument("--contact-sheet", help="also write a PNG grid of frames here")
    return p


def _run(args: argparse.Namespace, config) -> None:
    from emo_jax.sample.generate import generate
    from emo_jax.train.checkpoint import restore_model

    print(generate(args, config, restore_model))


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit status."""
    return run(_parser(), _run, argv, config=True)


if __name__ == "__main__":
    sys.exit(main())
