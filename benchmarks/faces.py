"""Face detectors side by side: time per frame on one thread, and how often each finds the face on real frames
as they are, rotated by 30 and 45 degrees, and shrunk so the face is ~40 px wide.

    python benchmarks/faces.py [FILE ...] [--fps 2] [--max-frames 20] [--out benchmarks/results/faces.json]

FILEs are videos or images (default: the files in /work/shared/data, where the project keeps sample media).
Video frames are taken at --fps, at most --max-frames a file. Every frame is first shrunk to emo-prepare's
analysis size (longer side 320, emo_jax/faces/detect.py's ANALYSIS_SIDE); all detectors get that RGB frame.
The reference face is the largest box BlazeFace full-range finds on the unmodified frame (frames where it finds
none are left out); a detector finds the face when one of its boxes has its centre within half the face's width
of where the reference face's centre moved to and a width between half and twice the face's.
Detectors: OpenCV's Haar cascade (emo_jax/faces/detect.py) and MediaPipe's BlazeFace short- and full-range
(emo_jax/faces/blazeface.py), each on one thread; ms/frame is the mean over all frames of all four kinds, the
detector call alone (the frames are made beforehand).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import cv2
import numpy as np

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)
from emo_jax.faces.blazeface import BlazeFaceDetector  # noqa: E402
from emo_jax.faces.detect import ANALYSIS_SIDE, HaarFaceDetector, largest  # noqa: E402
from emo_jax.video import iter_frames  # noqa: E402
from emo_jax.video.image import read_image  # noqa: E402

SAMPLES = "/work/shared/data"
IMAGES = (".png", ".jpg", ".jpeg")
VIDEOS = (".mp4", ".mov", ".mkv", ".webm", ".avi")
SMALL_FACE = 40.0
VARIANTS = ("as is", "rotated 30", "rotated 45", f"face {SMALL_FACE:.0f} px")


def read_frames(path: str, fps: float, max_frames: int) -> list[np.ndarray]:
    """RGB frames of an image (one) or a video (at `fps`, at most `max_frames`), shrunk to the analysis size."""
    if path.lower().endswith(IMAGES):
        frames = [read_image(path)]
    else:
        frames = []
        for frame in iter_frames(path, fps):
            frames.append(frame)
            if len(frames) == max_frames:
                break
    out = []
    for frame in frames:
        h, w = frame.shape[:2]
        scale = min(1.0, ANALYSIS_SIDE / max(h, w))
        if scale < 1.0:
            frame = cv2.resize(frame, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        out.append(np.ascontiguousarray(frame))
    return out


def variant(frame: np.ndarray, face: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray, float]:
    """(the frame changed as `name` says, where the face's centre goes, the face's expected width)."""
    h, w = frame.shape[:2]
    centre = np.array([(face[0] + face[2]) / 2, (face[1] + face[3]) / 2])
    width = float(face[2] - face[0])
    if name == "as is":
        return frame, centre, width
    fill = frame.reshape(-1, 3).mean(axis=0)
    if name.startswith("rotated"):
        matrix = cv2.getRotationMatrix2D((w / 2, h / 2), float(name.split()[1]), 1.0)
        rotated = cv2.warpAffine(frame, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                 borderValue=tuple(float(v) for v in fill))
        return rotated, matrix[:, :2] @ centre + matrix[:, 2], width
    # Shrunk by area averaging and centred on the frame's mean colour: a small face in a frame of the same size.
    scale = min(1.0, SMALL_FACE / width)
    sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
    canvas = np.empty_like(frame)
    canvas[:] = np.round(fill).astype(np.uint8)
    left, top = (w - sw) // 2, (h - sh) // 2
    canvas[top : top + sh, left : left + sw] = cv2.resize(frame, (sw, sh), interpolation=cv2.INTER_AREA)
    return canvas, centre * [sw / w, sh / h] + [left, top], width * scale


def finds(boxes: np.ndarray, centre: np.ndarray, width: float) -> bool:
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    widths = boxes[:, 2] - boxes[:, 0]
    near = np.linalg.norm(centres - centre, axis=1) < width / 2
    return bool(np.any(near & (widths > width / 2) & (widths < 2 * width)))


def main(argv: list[str] | None = None) -> int:
    """Runs the measurements, prints a table, writes the JSON file."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("files", nargs="*", help=f"videos or images (default: those in {SAMPLES})")
    p.add_argument("--fps", type=float, default=2.0, help="video frames taken per second")
    p.add_argument("--max-frames", type=int, default=20, help="at most this many frames a video")
    p.add_argument("--out", default=os.path.join("benchmarks", "results", "faces.json"))
    args = p.parse_args(argv)
    files = args.files
    if not files and os.path.isdir(SAMPLES):
        files = sorted(os.path.join(SAMPLES, f) for f in os.listdir(SAMPLES) if f.lower().endswith(IMAGES + VIDEOS))
    if not files:
        p.error(f"no media files given and {SAMPLES} has none")
    cv2.setNumThreads(1)
    detectors = [HaarFaceDetector(), BlazeFaceDetector("short", threads=1), BlazeFaceDetector("full", threads=1)]
    reference = detectors[2]
    for detector in detectors:  # first calls allocate; keep them out of the timings
        detector(np.zeros((ANALYSIS_SIDE, ANALYSIS_SIDE, 3), np.uint8))
    seconds = {d.name: 0.0 for d in detectors}
    found = {d.name: dict.fromkeys(VARIANTS, 0) for d in detectors}
    counts = dict.fromkeys(VARIANTS, 0)
    per_file = {}
    for path in files:
        frames = read_frames(path, args.fps, args.max_frames)
        with_face = 0
        for frame in frames:
            faces = reference(frame)
            if not len(faces):
                continue
            with_face += 1
            face = largest(faces)
            for name in VARIANTS:
                image, centre, width = variant(frame, face, name)
                counts[name] += 1
                for detector in detectors:
                    start = time.perf_counter()
                    boxes = detector(image)
                    seconds[detector.name] += time.perf_counter() - start
                    found[detector.name][name] += finds(boxes, centre, width)
        per_file[os.path.basename(path)] = {"frames": len(frames), "frames_with_reference_face": with_face,
                                            "size": list(frames[0].shape[:2]) if frames else None}
    total = sum(counts.values())
    if not total:
        p.error("BlazeFace full-range found no face in any frame; nothing to compare")
    results = {d.name: {"ms_per_frame": 1e3 * seconds[d.name] / total, "found": found[d.name]} for d in detectors}
    results["setup"] = {"frames": counts, "files": per_file, "fps": args.fps, "max_frames": args.max_frames,
                        "analysis_side": ANALYSIS_SIDE, "small_face_px": SMALL_FACE, "threads": 1,
                        "reference": reference.name, "cpu_count": os.cpu_count()}
    print(f"{'detector':<26} {'ms/frame':>9}" + "".join(f" {v:>12}" for v in VARIANTS))
    for d in detectors:
        print(f"{d.name:<26} {results[d.name]['ms_per_frame']:9.2f}"
              + "".join(f" {f'{found[d.name][v]}/{counts[v]}':>12}" for v in VARIANTS))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
