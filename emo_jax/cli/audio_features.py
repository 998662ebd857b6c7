"""emo-audio-features: per-video-frame wav2vec2 features of an audio or video file, written as .npy.

Frame rate, context, encoder window and sample rate come from --config (default configs/emo_512.py), so the
features equal the ones emo-generate computes for the same audio; the flags below override them.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

import numpy as np

from emo_jax.cli.runner import DEFAULT_CONFIG, ArgumentParser, run
from emo_jax.errors import UsageError


def _parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="emo-audio-features",
        description="Writes [frames, 2*context+1, layers, hidden] float32 wav2vec2 features, frames = round(duration * fps).",
    )
    p.add_argument("audio", help="audio or video file (wav, mp3, flac, m4a, mp4, mkv, mov, ...)")
    p.add_argument("--wav2vec", help="local Hugging Face wav2vec2 folder (config.json + weights); default "
                                     "config.audio.wav2vec_path")
    p.add_argument("--fps", type=float, help="video frame rate (default config.data.fps)")
    p.add_argument("--out", required=True, help="output .npy path")
    p.add_argument("--context", type=int, help="frames of context on each side (default config.model.audio.context)")
    p.add_argument(
        "--include-embedding-layer", action="store_true",
        help="also keep the encoder input (hidden_states[0]) in front of the transformer layers",
    )
    p.add_argument("--window-seconds", type=float,
                   help="audio encoded per window (default config.audio.window_seconds)")
    p.add_argument("--overlap-seconds", type=float, default=5.0, help="extra audio seen on each side (default 5)")
    return p


def _run(args: argparse.Namespace, config) -> None:
    # Imported here so that --help answers without loading JAX.
    from emo_jax.audio import load_audio
    from emo_jax.audio.features import audio_features
    from emo_jax.interop.wav2vec2_import import load_wav2vec2

    wav2vec = args.wav2vec or config.audio.wav2vec_path
    if not wav2vec:
        raise UsageError("no wav2vec2 encoder: pass --wav2vec DIR (a local Hugging Face wav2vec2 folder) or set "
                         "--config.audio.wav2vec_path")
    fps = config.data.fps if args.fps is None else args.fps
    context = config.model.audio.context if args.context is None else args.context
    window = config.audio.window_seconds if args.window_seconds is None else args.window_seconds
    rate = config.audio.sample_rate
    audio = load_audio(args.audio, rate)
    module, params, _ = load_wav2vec2(wav2vec)
    features = audio_features(
        audio, fps, module, params, context=context, include_embedding_layer=args.include_embedding_layer,
        window_seconds=window, overlap_seconds=args.overlap_seconds, sample_rate=rate,
    )
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    np.save(args.out, features)
    print(f"wrote {args.out}: {features.shape} float32 from {len(audio) / rate:.2f} s of audio at {fps:g} fps")


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit status."""
    return run(_parser(), _run, argv, config=DEFAULT_CONFIG)


if __name__ == "__main__":
    sys.exit(main())
