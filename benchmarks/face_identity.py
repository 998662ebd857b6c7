"""F-SIM on real footage: does dlib's face descriptor tell the same person from different people?

    python benchmarks/face_identity.py [--weights DIR] [--data DIR] [--detector blazeface|blazeface_full|...]
        [--out benchmarks/results/face_identity.json]

Every frame of each talking-head clip in --data (three people, at the clips' own 25 fps) is described once
(emo_jax/eval/face_identity.py: BlazeFace full- then short-range by default, on each frame, dlib's 5-point alignment,
the 128-d descriptor) and compared with each reference: every clip's first frame and the two portraits. The
diagonal (a clip against its own first frame, that frame included) is the same person; every other cell is a
different person, and should score lower cosine similarity and larger distance, frame by frame too. Also printed:
the references' pairwise distances, how much the descriptor moves when dlib's own HOG detector gives the box
instead of BlazeFace (the shape predictor was trained on dlib's boxes), and the time per frame on one core. The
weights come from `python -m emo_jax.eval.fetch dlib`.
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
sys.path[:0] = [_ROOT]
from emo_jax.eval import weights  # noqa: E402
from emo_jax.eval.face_identity import SAME_PERSON_DISTANCE, FaceDescriptor, compare  # noqa: E402
from emo_jax.faces.detect import DETECTORS  # noqa: E402
from emo_jax.video.io import read_video  # noqa: E402

CLIPS = ("SadTalker_examples_ref_video_WDA_KatieHill_000.mp4", "video-retalking_examples_face_2.mp4",
         "video-retalking_examples_face_5.mp4")
PORTRAITS = ("hallo_examples_reference_images_2.jpg", "SadTalker_examples_source_image_art_1.png")
FPS = 25


def read_rgb(path: str) -> np.ndarray:
    image = cv2.imread(path)
    assert image is not None, path
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def hog_box_shift(descriptor: FaceDescriptor, image: np.ndarray) -> dict:
    """The descriptor's distance between BlazeFace's box and dlib's HOG detector's box for the same face."""
    import dlib

    found = dlib.get_frontal_face_detector()(image, 1)
    if not len(found):
        return {"hog_box": None}
    r = max(found, key=lambda r: r.width() * r.height())
    hog = descriptor.describe(image, np.array([r.left(), r.top(), r.right(), r.bottom()]))
    blaze_box = descriptor.largest_face(image)
    blaze = descriptor.describe(image, blaze_box)
    return {"blazeface_box": [round(float(v), 1) for v in blaze_box],
            "hog_box": [r.left(), r.top(), r.right(), r.bottom()],
            "descriptor_distance": float(np.linalg.norm(blaze - hog))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=weights.DEFAULT_FOLDER)
    parser.add_argument("--data", default="/work/shared/data")
    parser.add_argument("--detector", default="blazeface", choices=DETECTORS)
    parser.add_argument("--out", default=os.path.join(_ROOT, "benchmarks", "results", "face_identity.json"))
    args = parser.parse_args()
    cv2.setNumThreads(1)
    descriptor = FaceDescriptor(args.weights, args.detector)

    clips, first_frames, seconds, count = {}, {}, 0.0, 0
    for name in CLIPS:
        frames, _ = read_video(os.path.join(args.data, name), FPS)
        start = time.perf_counter()
        clips[name] = [descriptor.describe_largest(frame) for frame in frames]
        seconds += time.perf_counter() - start
        count += len(frames)
        first_frames[name] = frames[0]
    portraits = {name: read_rgb(os.path.join(args.data, name)) for name in PORTRAITS}
    references = {f"{name} frame 0": first_frames[name] for name in CLIPS} | portraits
    described = {name: descriptor.describe_largest(image) for name, image in references.items()}
    assert all(d is not None for d in described.values()), "a reference without a face"

    matrix = {clip: {ref: compare(described[ref], clips[clip]) for ref in references} for clip in CLIPS}
    labels = dict(zip(CLIPS, ("KatieHill", "rt_face_2", "rt_face_5")))
    short = labels | {f"{clip} frame 0": f"{label} fr0" for clip, label in labels.items()} | dict(
        zip(PORTRAITS, ("hallo_2", "art_1")))
    print(f"F-SIM, mean cosine / mean distance (dlib's same person: distance < {SAME_PERSON_DISTANCE}); rows: clips "
          "(every frame), columns: references")
    print(f"{'':14}" + "".join(f"{short[r]:>16}" for r in references))
    for clip in CLIPS:
        cells = [f"{m['mean_cosine']:.3f} / {m['mean_distance']:.3f}" for m in matrix[clip].values()]
        faces = next(iter(matrix[clip].values()))
        print(f"{short[clip]:14}" + "".join(f"{c:>16}" for c in cells)
              + f"   ({faces['faces_found']}/{faces['frames']} frames with a face)")

    def per_frame(clip: str, ref: str) -> tuple[np.ndarray, np.ndarray]:
        found = np.array([d for d in clips[clip] if d is not None])
        r = described[ref]
        return found @ r / (np.linalg.norm(found, axis=1) * np.linalg.norm(r)), np.linalg.norm(found - r, axis=1)

    margin = {}
    print("\nsame person vs different, frame by frame: the own reference's worst frame vs the best frame against "
          "any other reference")
    for clip in CLIPS:
        own_cos, own_dist = per_frame(clip, f"{clip} frame 0")
        other = [per_frame(clip, ref) for ref in references if ref != f"{clip} frame 0"]
        other_cos, other_dist = np.concatenate([c for c, _ in other]), np.concatenate([d for _, d in other])
        m = margin[clip] = {
            "own_mean_cosine": float(own_cos.mean()), "others_max_mean_cosine": max(float(c.mean()) for c, _ in other),
            "own_min_cosine": float(own_cos.min()), "others_max_cosine": float(other_cos.max()),
            "own_max_distance": float(own_dist.max()), "others_min_distance": float(other_dist.min()),
            "own_frames_within_threshold": int((own_dist < SAME_PERSON_DISTANCE).sum()),
            "other_frames_within_threshold": int((other_dist < SAME_PERSON_DISTANCE).sum()),
            "separated": bool(own_cos.min() > other_cos.max() and own_dist.max() < other_dist.min())}
        print(f"  {short[clip]:14} cosine own min {m['own_min_cosine']:.3f} vs others max "
              f"{m['others_max_cosine']:.3f}; distance own max {m['own_max_distance']:.3f} vs others min "
              f"{m['others_min_distance']:.3f}; frames within {SAME_PERSON_DISTANCE}: own "
              f"{m['own_frames_within_threshold']}/{len(own_cos)}, others {m['other_frames_within_threshold']}/"
              f"{len(other_cos)}; separated: {m['separated']}")

    names = list(references)
    pairwise = {a: {b: float(np.linalg.norm(described[a] - described[b])) for b in names} for a in names}
    print("\nreferences' pairwise descriptor distance")
    print(f"{'':14}" + "".join(f"{short[b]:>16}" for b in names))
    for a in names:
        print(f"{short[a]:14}" + "".join(f"{pairwise[a][b]:>16.3f}" for b in names))

    shifts = {name: hog_box_shift(descriptor, image) for name, image in references.items()}
    print("\ndescriptor distance, BlazeFace box vs dlib's HOG box, same image")
    for name, s in shifts.items():
        print(f"  {short[name]:14} " + (f"{s['descriptor_distance']:.3f}" if s["hog_box"] else "no HOG face"))
    per_frame_ms = 1000 * seconds / count
    print(f"\n{per_frame_ms:.1f} ms per frame ({args.detector} + shape + descriptor, one core), {count} frames")

    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"network": next(iter(matrix[CLIPS[0]].values()))["network"], "fps": FPS, "detector": args.detector,
                   "dlib_bin": weights.DLIB_BIN_VERSION, "matrix": matrix, "margin": margin,
                   "references_pairwise_distance": pairwise, "blazeface_vs_hog_box": shifts,
                   "ms_per_frame": per_frame_ms}, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
