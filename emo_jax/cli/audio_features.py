"""emo-audio-features: per-video-frame wav2vec2 features of an audio or video file, written as .npy."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

import numpy as np


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="emo-audio-features",
        description="Writes [frames, 2*context+1, layers, hidden] float32 wav2vec2 features, frames = round(duration * fps).",
    )
    p.add_argument("audio", help="audio or video file (wav, mp3, flac, m4a, mp4, mkv, mov, ...)")
    p.add_argument("--wav2vec", required=True, help="local Hugging Face wav2vec2 folder (config.json + weights)")
    p.add_argument("--fps", type=float, default=30.0, help="video frame rate (default 30)")
    p.add_argument("--out", required=True, help="output .npy path")
    p.add_argument("--context", type=int, default=2, help="frames of context on each side (default 2)")
    p.add_argument(
        "--include-embedding-layer", action="store_true",
        help="also keep the encoder input (hidden_states[0]) in front of the transformer layers",
    )
    p.add_argument("--window-seconds", type=float, default=20.0, help="audio encoded per window (default 20)")
    p.add_argument("--overlap-seconds", type=float, default=5.0, help="extra audio seen on each side (default 5)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    # Imported here so that --help answers without loading JAX.
    from emo_jax.audio import load_audio
    from emo_jax.audio.features import audio_features
    from emo_jax.interop.wav2vec2_import import load_wav2vec2

    try:
        audio = load_audio(args.audio)
        module, params, _ = load_wav2vec2(args.wav2vec)
        features = audio_features(
            audio, args.fps, module, params, context=args.context,
            include_embedding_layer=args.include_embedding_layer,
            window_seconds=args.window_seconds, overlap_seconds=args.overlap_seconds,
        )
    except ValueError as e:  # AudioError, CheckpointError and bad option values all derive from it
        print(f"emo-audio-features: error: {e}", file=sys.stderr)
        return 2
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    np.save(args.out, features)
    print(f"wrote {args.out}: {features.shape} float32 from {len(audio) / 16000:.2f} s of audio at {args.fps:g} fps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
