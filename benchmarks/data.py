"""Data pipeline speed: emo-prepare in video-seconds per second, with the paper's labels (BlazeFace, Face Mesh head
pose) and with the previous ones (Haar, optical-flow speed), inline and on Beam's DirectRunner at 1 and 2 worker
processes, the projected wall time of EMO's 250-hour corpus on N workers, the encoders' own cost, and stage 1 /
stage 2 clips per second per core, in one run.

    python benchmarks/data.py [--videos 8] [--seconds 10] [--size 256] [--clips 200] [--encoders]
                              [--out benchmarks/results/data.json]

Everything runs on synthetic talking-head videos made here (the drawn face of the tests' synthetic_videos.py),
with OpenCV on one thread per process and one Grain read thread, so the label rates are per CPU core (the
encoders' JAX uses every core of the host). prepare runs
without encoders; --encoders adds a run over the first video with a VAE of SD1.5's shape and a wav2vec2-base,
random weights written here with diffusers / transformers (their cost does not depend on the weights), and
reports their seconds per video-second on this CPU apart from the labels'.
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
from data_pipeline.prepare import INLINE, prepare  # noqa: E402

CORPUS_HOURS = 250.0  # EMO's training corpus (the paper, section 4.1), before HDTF and VFHQ
PROJECTED_WORKERS = (16, 64, 256, 1024)
ENCODER_VIDEO_SECONDS = 3.0


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


def paper_size_encoders(folder: str) -> tuple[str, str]:
    """(wav2vec2 folder, VAE folder) of wav2vec2-base's and SD1.5's VAE's shapes with random weights."""
    import torch
    from diffusers import AutoencoderKL
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    wav2vec, vae = os.path.join(folder, "wav2vec2_base"), os.path.join(folder, "sd15_vae")
    Wav2Vec2Model(Wav2Vec2Config()).save_pretrained(wav2vec)  # the defaults are wav2vec2-base's
    AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                  down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                  sample_size=512).save_pretrained(vae)
    return wav2vec, vae


def timed_prepare(inputs: list[str], output: str, cfg: PrepareConfig, **kwargs) -> tuple[float, dict]:
    start = time.perf_counter()
    manifest = prepare(inputs, output, cfg, **kwargs)
    return time.perf_counter() - start, manifest


def main(argv: list[str] | None = None) -> int:
    """Runs the measurements, prints a table, writes the JSON file."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--videos", type=int, default=8)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--size", type=int, default=256, help="prepared frame side (paper: 512)")
    p.add_argument("--clips", type=int, default=200)
    p.add_argument("--encoders", action="store_true", help="also time paper-size random VAE + wav2vec2 encoders")
    p.add_argument("--out", default=os.path.join("benchmarks", "results", "data.json"))
    args = p.parse_args(argv)
    cv2.setNumThreads(1)
    os.environ["OPENCV_FOR_THREADS_NUM"] = "1"  # the DirectRunner's worker processes too
    cfg = PrepareConfig(size=args.size, min_seconds=2.0, max_seconds=4.0)
    previous = dataclasses.replace(cfg, detector="haar", speed_estimator="flow")
    video_seconds = args.videos * args.seconds
    runs = {}  # name -> (runner, workers, settings)
    runs["inline, previous labels"] = (INLINE, 1, previous)
    runs["inline"] = (INLINE, 1, cfg)
    runs["DirectRunner, 1 worker"] = ("DirectRunner", 1, cfg)
    runs["DirectRunner, 2 workers"] = ("DirectRunner", 2, cfg)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        inputs = make_videos(os.path.join(tmp, "raw"), args.videos, args.seconds)
        for k, (name, (runner, workers, settings)) in enumerate(runs.items()):
            seconds, manifest = timed_prepare(inputs, os.path.join(tmp, f"out{k}"), settings, workers=workers,
                                              runner=runner)
            rows.append({"run": name, "runner": runner, "workers": workers, "seconds": seconds,
                         "video_seconds_per_second": video_seconds / seconds,
                         "video_seconds_per_second_per_worker": video_seconds / seconds / workers})
        encoder_row = None
        if args.encoders:
            wav2vec, vae = paper_size_encoders(os.path.join(tmp, "encoders"))
            # One short video: on a CPU the paper-size VAE takes about two seconds per 256 px frame.
            short = make_videos(os.path.join(tmp, "short"), 1, ENCODER_VIDEO_SECONDS)
            encoded = dataclasses.replace(cfg, wav2vec=wav2vec, vae=vae)
            seconds, _ = timed_prepare(short, os.path.join(tmp, "encoded"), encoded, runner=INLINE)
            labels_only, _ = timed_prepare(short, os.path.join(tmp, "labels"), cfg, runner=INLINE)
            encoder_row = {"video_seconds": ENCODER_VIDEO_SECONDS, "seconds_with_encoders": seconds,
                           "seconds_labels_only": labels_only, "encoder_seconds": seconds - labels_only,
                           "encoder_seconds_per_video_second": (seconds - labels_only) / ENCODER_VIDEO_SECONDS,
                           "frame_size": args.size, "vae": "SD1.5 shape, random weights",
                           "wav2vec2": "wav2vec2-base shape, random weights"}
        per_worker = rows[3]["video_seconds_per_second_per_worker"]  # Beam's overhead included
        corpus_seconds = CORPUS_HOURS * 3600
        projection = {str(n): corpus_seconds / (per_worker * n) / 3600 for n in PROJECTED_WORKERS}
        results = {
            "prepare": rows,
            "prepare_video_seconds_per_second": rows[1]["video_seconds_per_second"],
            "prepare_previous_labels_video_seconds_per_second": rows[0]["video_seconds_per_second"],
            "corpus_hours": CORPUS_HOURS,
            "projected_labels_wall_hours_by_workers": projection,
            "encoders": encoder_row,
            "stage1_clips_per_second_per_core": clips_per_second(os.path.join(tmp, "out1"), 1, args.clips),
            "stage2_clips_per_second_per_core": clips_per_second(os.path.join(tmp, "out1"), 2, args.clips),
        }
        if encoder_row:
            # JAX runs the encoders on every core of this host, so these are hours of this whole machine.
            results["projected_encoder_hours_on_this_host"] = (encoder_row["encoder_seconds_per_video_second"]
                                                               * corpus_seconds / 3600)
    results["setup"] = {**{k: v for k, v in vars(args).items() if k != "out"}, "segments": manifest["segments"],
                        "prepare_config": dataclasses.asdict(cfg), "cpu_count": os.cpu_count()}
    print(f"{'emo-prepare run':<28}{'workers':>8}{'seconds':>9}{'video-s/s':>11}{'per worker':>12}")
    for r in rows:
        print(f"{r['run']:<28}{r['workers']:>8}{r['seconds']:>9.1f}{r['video_seconds_per_second']:>11.2f}"
              f"{r['video_seconds_per_second_per_worker']:>12.2f}")
    print(f"{CORPUS_HOURS:.0f} hours of video, labels only, on N DirectRunner-rate workers: "
          + ", ".join(f"{n}: {h:.1f} h" for n, h in projection.items()))
    if encoder_row:
        print(f"encoders (VAE + wav2vec2, paper shapes, {args.size} px): "
              f"{encoder_row['encoder_seconds_per_video_second']:.2f} s per video-second on this host "
              f"({os.cpu_count()} cores); {results['projected_encoder_hours_on_this_host']:.0f} host-hours for "
              f"{CORPUS_HOURS:.0f} hours of video")
    for name in ("stage1_clips_per_second_per_core", "stage2_clips_per_second_per_core"):
        print(f"{name:<40} {results[name]:10.2f}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
