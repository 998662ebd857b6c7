"""Data pipeline speed: emo-prepare in video-seconds per second, with the paper's labels (BlazeFace, Face Mesh head
pose) and with the previous ones (Haar, optical-flow speed) in one run, and stage 1 / stage 2 clips per second per
core.

    python benchmarks/data.py [--videos 4] [--seconds 6] [--size 256] [--clips 200] [--out benchmarks/results/data.json]

Everything runs on synthetic talking-head videos made here (the drawn face of the tests' synthetic_videos.py),
in one process with OpenCV on one thread and one Grain read thread, so the rates are per CPU core. prepare
excludes its encoders unless --wav2vec / --vae are given (then it measures those too).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time

import cv2
import numpy as np

# Run from a checkout: the repository (for data_pipeline without an install) and the tests' video maker.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [_ROOT, os.path.join(_ROOT, "tests", "data_pipeline")]
from synthetic_videos import FPS, SIDE, face_frames, tone_with_click, write_mp4  # noqa: E402

from data_pipeline.extract import PrepareConfig  # noqa: E402
from data_pipeline.loader import LoaderConfig, make_dataset, shard_paths, shard_records  # noqa: E402
from data_pipeline.prepare import prepare  # noqa: E402


def make_videos(folder: str, count: int, seconds: float) -> list[str]:
    """`count` videos of a face swaying at a different rate each, with a tone."""
    os.makedirs(folder, exist_ok=True)
    n = round(seconds * FPS)
    paths = []
    for i in range(count):
        frames = face_frames(n, centre_x=lambda t, i=i: SIDE / 2 + 15 * np.sin(2 * np.pi * t * (i + 1) / (4 * FPS)))
        paths.append(write_mp4(os.path.join(folder, f"v{i}.mp4"), frames, tone_with_click(seconds, None)))
    return paths


def clips_per_second(prepared: str, stage: int, clips: int) -> float:
    """Batches of one clip from a single read thread, after a warm-up of 10."""
    records = shard_records(shard_paths(prepared))
    iterator = iter(make_dataset(records, LoaderConfig(stage=stage, batch_size=1, read_threads=1)))
    for _ in range(10):
        next(iterator)
    start = time.perf_counter()
    for _ in range(clips):
        next(iterator)
    return clips / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    """Runs the measurements, prints a table, writes the JSON file."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--videos", type=int, default=4)
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--size", type=int, default=256, help="prepared frame side (paper: 512)")
    p.add_argument("--clips", type=int, default=200)
    p.add_argument("--wav2vec", default="")
    p.add_argument("--vae", default="")
    p.add_argument("--out", default=os.path.join("benchmarks", "results", "data.json"))
    args = p.parse_args(argv)
    cv2.setNumThreads(1)
    cfg = PrepareConfig(size=args.size, min_seconds=2.0, max_seconds=4.0, wav2vec=args.wav2vec, vae=args.vae)
    previous = dataclasses.replace(cfg, detector="haar", speed_estimator="flow")
    with tempfile.TemporaryDirectory() as tmp:
        inputs = make_videos(os.path.join(tmp, "raw"), args.videos, args.seconds)
        start = time.perf_counter()
        prepare(inputs, os.path.join(tmp, "previous"), previous, workers=1)
        previous_seconds = time.perf_counter() - start
        start = time.perf_counter()
        manifest = prepare(inputs, os.path.join(tmp, "out"), cfg, workers=1)
        prepare_seconds = time.perf_counter() - start
        results = {
            "prepare_video_seconds_per_second": args.videos * args.seconds / prepare_seconds,
            "prepare_previous_labels_video_seconds_per_second": args.videos * args.seconds / previous_seconds,
            "stage1_clips_per_second_per_core": clips_per_second(os.path.join(tmp, "out"), 1, args.clips),
            "stage2_clips_per_second_per_core": clips_per_second(os.path.join(tmp, "out"), 2, args.clips),
        }
    results["setup"] = {**{k: v for k, v in vars(args).items() if k != "out"}, "segments": manifest["segments"],
                        "prepare_config": dataclasses.asdict(cfg), "cpu_count": os.cpu_count()}
    for name, value in results.items():
        if name != "setup":
            print(f"{name:<40} {value:10.2f}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
