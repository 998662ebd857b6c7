"""Head-rotation speed (degrees per frame) on real talking-head footage: the range EMO's speed buckets must cover.

    python benchmarks/head_speed.py [VIDEO ...] [--fps 30] [--smooth 2.0] [--detector full|short]
        [--out benchmarks/results/head_speed.json] [--png /tmp/head_pose.png]

Default videos: the .mp4 files in /work/shared/data. Each is read twice: at its own frame rate, and resampled to
--fps (the training rate, configs/emo_512.py data.fps) by nearest timestamps as emo-prepare reads it (25 -> 30
fps repeats every fifth frame: a raw speed of 0 there, then a double step). Face boxes come from BlazeFace
(--detector, full-range by default) through emo_jax.faces.detect.track_faces on every 5th frame, gaps up to 10
frames bridged (emo-prepare's defaults); landmarks are tracked by Face Mesh, pose and speed computed by
emo_jax.faces.head_pose. Printed per clip and pooled: percentiles of the raw and smoothed speed, and the share of
frames nearest each of configs/emo_512.py's speed-bucket centres. Also the speed of a still head: one frame
repeated 30 times, exactly, with Gaussian pixel noise (sigma 3 grey levels), and shifted by a random whole pixel
(-1, 0 or 1 each way) and JPEG re-encoded (quality 90) each time: the floor the tracker itself adds, also in
degrees per second at the clip's rate.
--png draws the landmarks (stable points green) and the head axes (x red, y green, z blue) on the first clip's
middle frame. One thread for OpenCV and the interpreters, so times are per CPU core.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

import cv2
import numpy as np

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [_ROOT]
from emo_jax.faces.blazeface import BlazeFaceDetector  # noqa: E402
from data_pipeline.extract import PrepareConfig  # noqa: E402
from emo_jax.faces.mesh import FaceMesh  # noqa: E402
from emo_jax.faces.detect import track_faces  # noqa: E402
from emo_jax.faces.head_pose import STABLE_POINTS, head_pose, rotation_speed, smooth_rotations  # noqa: E402
from emo_jax.config import load_config  # noqa: E402
from emo_jax.video.io import read_video  # noqa: E402

PERCENTILES = (5, 25, 50, 75, 95)


def jpeg(frame: np.ndarray, quality: int) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def summary(speed: np.ndarray) -> dict[str, float]:
    finite = speed[np.isfinite(speed)]
    if not len(finite):
        return {"frames": 0}
    return {"frames": int(len(finite)), "mean": float(finite.mean()), "max": float(finite.max()),
            **{f"p{p}": float(v) for p, v in zip(PERCENTILES, np.percentile(finite, PERCENTILES))}}


DETECT_EVERY = PrepareConfig.detect_every


def measure(frames: np.ndarray, detector: BlazeFaceDetector, mesh: FaceMesh, smooth: float) -> dict:
    """Boxes, landmarks, pose and raw / smoothed speed of one clip, with the time each step took."""
    start = time.perf_counter()
    boxes = track_faces(frames, [0], detector, DETECT_EVERY, 2 * DETECT_EVERY)
    detect_s = time.perf_counter() - start
    start = time.perf_counter()
    points, presence = mesh.track(frames, boxes)
    mesh_s = time.perf_counter() - start
    pose = head_pose(points)
    return {"points": points, "presence": presence, "pose": pose,
            "raw": rotation_speed(pose.rotations), "smoothed": rotation_speed(smooth_rotations(pose.rotations, smooth)),
            "detect_ms": 1e3 * detect_s / len(frames), "mesh_ms": 1e3 * mesh_s / len(frames)}


def draw(frame: np.ndarray, points: np.ndarray, pose, t: int, path: str) -> None:
    image = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
    for i, (x, y, _) in enumerate(points):
        stable = i in STABLE_POINTS
        cv2.circle(image, (int(x), int(y)), 3 if stable else 1, (0, 255, 0) if stable else (0, 0, 255), -1)
    origin = pose.translation[t, :2]
    length = 0.6 * np.ptp(points[:, 0])
    for axis, colour in zip(range(3), [(0, 0, 255), (0, 255, 0), (255, 0, 0)]):  # x red, y green, z blue (BGR)
        end = origin + length * pose.rotations[t, :2, axis]
        cv2.arrowedLine(image, tuple(origin.astype(int)), tuple(end.astype(int)), colour, 3)
    yaw, pitch, roll = pose.angles[t]
    cv2.putText(image, f"yaw {yaw:.1f} pitch {pitch:.1f} roll {roll:.1f}", (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.9,
                (255, 255, 255), 2)
    cv2.imwrite(path, image)


def _cells(stats: dict) -> str:
    return " ".join(f"{stats.get(f'p{p}', np.nan):6.3f}" for p in PERCENTILES) + f" {stats.get('mean', np.nan):6.3f}"


def table_row(name: str, frames: int, fps: float, ms: float, raw: dict, smoothed: dict) -> str:
    return f"{name:<44} {frames:5d} {fps:5.1f} {ms:6.2f} | {_cells(raw)} | {_cells(smoothed)}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("videos", nargs="*", default=sorted(glob.glob("/work/shared/data/*.mp4")))
    p.add_argument("--fps", type=float, default=30.0, help="the training frame rate the labels are made at")
    p.add_argument("--smooth", type=float, default=2.0, help="Gaussian sigma of the rotation smoothing, frames")
    p.add_argument("--out", default=os.path.join(_ROOT, "benchmarks", "results", "head_speed.json"))
    p.add_argument("--detector", choices=("full", "short"), default="full", help="BlazeFace model")
    p.add_argument("--png", default="", help="draw landmarks and head axes on the first clip's middle frame")
    args = p.parse_args(argv)
    if not args.videos:
        p.error("no videos given and none in /work/shared/data")
    cv2.setNumThreads(1)
    detector, mesh = BlazeFaceDetector(args.detector), FaceMesh(threads=1)
    results: dict = {"clips": {}, "pooled": {}}
    pooled: dict[str, list[np.ndarray]] = {}
    columns = " ".join(f"{'p' + str(q):>6}" for q in PERCENTILES) + f" {'mean':>6}"
    print(f"{'':<44} {'':>5} {'':>5} {'mesh':>6} | {'raw speed, degrees per frame':<41} | smoothed")
    header = f"{'clip':<44} {'frames':>5} {'fps':>5} {'ms/fr':>6} | {columns} | {columns}"
    print(header)
    for path in args.videos:
        name = os.path.basename(path)
        for rate in (None, args.fps):
            frames, fps = read_video(path, rate)
            got = measure(frames, detector, mesh, args.smooth)
            kind = "source" if rate is None else "resampled"
            raw, smoothed = summary(got["raw"]), summary(got["smoothed"])
            results["clips"][f"{name}@{kind}"] = {
                "fps": fps, "frames": len(frames), "frames_with_face": int(np.isfinite(got["raw"]).sum()),
                "detect_ms_per_frame_every_5th": got["detect_ms"], "mesh_ms_per_frame": got["mesh_ms"], "raw": raw,
                "smoothed": smoothed, "angles_deg_p5_p95": np.nanpercentile(got["pose"].angles, [5, 95], 0).tolist()}
            print(table_row(f"{name[:34]} @{fps:g}", len(frames), fps, got["mesh_ms"], raw, smoothed))
            for which in ("raw", "smoothed"):
                pooled.setdefault(f"{kind}_{which}", []).append(got[which])
            if args.png and rate is None and path == args.videos[0]:
                t = len(frames) // 2
                draw(frames[t], got["points"][t], got["pose"], t, args.png)
                print(f"  drew frame {t} to {args.png}: yaw/pitch/roll {np.round(got['pose'].angles[t], 1).tolist()}")
    print("pooled over the clips")
    for key, value in pooled.items():
        results["pooled"][key] = summary(np.concatenate(value))
    for kind in ("source", "resampled"):
        raw, smoothed = results["pooled"][f"{kind}_raw"], results["pooled"][f"{kind}_smoothed"]
        print(table_row(f"all clips, {kind}", raw["frames"], np.nan, np.nan, raw, smoothed))
    # Which of the model's speed buckets the resampled, smoothed labels fall nearest to (by centre).
    centres = np.asarray(load_config(os.path.join(_ROOT, "configs", "emo_512.py")).model.speed.centres)
    labels = np.concatenate(pooled["resampled_smoothed"])
    labels = labels[np.isfinite(labels)]
    nearest = np.bincount(np.abs(labels[:, None] - centres).argmin(axis=1), minlength=len(centres)) / len(labels)
    results["pooled"]["nearest_bucket_share"] = dict(zip(map(str, centres.tolist()), nearest.tolist()))
    print("share of the resampled, smoothed frames nearest each configs/emo_512.py speed centre: "
          + ", ".join(f"{c:g}: {f:.0%}" for c, f in zip(centres, nearest)))

    frame = read_video(args.videos[0])[0][0]
    box = track_faces([frame], [0], detector, 1, 0)[0]
    noise = np.random.default_rng(0)
    still = {"exact": [frame] * 30,
             "noise_sigma_3": [np.clip(frame + noise.normal(0, 3, frame.shape), 0, 255).astype(np.uint8)
                               for _ in range(30)],
             "jitter_1px_jpeg90": [jpeg(np.roll(frame, tuple(noise.integers(-1, 2, 2)), axis=(0, 1)), 90)
                                   for _ in range(30)]}
    for name, frames in still.items():
        points, _ = mesh.track(frames, np.stack([box] * 30))
        rotations = head_pose(points).rotations
        raw, smoothed = summary(rotation_speed(rotations)), summary(rotation_speed(smooth_rotations(rotations,
                                                                                                    args.smooth)))
        results[f"still_{name}"] = {"raw": raw, "smoothed": smoothed,
                                    "smoothed_mean_degrees_per_second": smoothed["mean"] * args.fps}
        print(table_row(f"still head ({name}), 30 repeats", raw["frames"], np.nan, np.nan, raw, smoothed))

    results["setup"] = {"videos": [os.path.basename(v) for v in args.videos], "fps": args.fps,
                        "smooth_frames": args.smooth, "detector": detector.name, "cpu_count": os.cpu_count(),
                        "threads": 1}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
