"""Shot-cut detection: emo-prepare's (data_pipeline/segments.py: PySceneDetect's content measure, ours) against
PySceneDetect itself (the paper's tool) and against emo-prepare's previous grey-histogram threshold, on real
talking-head footage spliced with known transitions.

    PYTHONPATH=/tmp/sdpkgs python benchmarks/shots.py [--data DIR] [--out benchmarks/results/shots.json]

PySceneDetect 0.7.2 requires opencv-python, the GUI build of the OpenCV that emo-jax pins headless; both install the
same `cv2` package, so it is not a dependency of emo-jax. To run this, install it beside the venv without its
dependencies: `pip install --no-deps --target /tmp/sdpkgs scenedetect==0.7.2 platformdirs`.

The footage: the three talking-head clips of ../shared/data cut into six shots and joined at 30 fps by four hard
cuts (one between two moments of the same person, background and framing) and one 0.5 s cross-fade, with a
two-frame flash (+60% brightness, a camera flash) inside one shot, which is not a cut. A detected cut counts as
found when it lies within 2 frames of a hard cut or inside the fade (2 frames either side); any other is false.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)

from data_pipeline.segments import shot_starts  # noqa: E402
from emo_jax.faces.detect import analysis_frame, shrink  # noqa: E402
from emo_jax.video.io import read_video, write_video  # noqa: E402

FPS = 30
SIDE = 512
CLIPS = ("SadTalker_examples_ref_video_WDA_KatieHill_000.mp4", "video-retalking_examples_face_2.mp4",
         "video-retalking_examples_face_5.mp4")
# (clip, first second, seconds): the shots in order; a fade of FADE seconds joins shots 2 and 3.
SHOTS = ((0, 0.0, 3.0), (1, 0.0, 3.0), (2, 0.0, 2.0), (2, 2.5, 1.5), (0, 4.0, 3.0), (0, 0.5, 2.0))
FADE = 0.5
FLASH_SHOT = 1  # two frames in the middle of this shot are brightened


def _square(frames: np.ndarray) -> np.ndarray:
    import cv2

    return np.stack([cv2.resize(f, (SIDE, SIDE), interpolation=cv2.INTER_AREA) for f in frames])


def splice(data: str) -> tuple[np.ndarray, list[int], tuple[int, int]]:
    """(frames [T, SIDE, SIDE, 3], the hard cuts' first frames, the fade's [first, last] frames)."""
    clips = [_square(read_video(os.path.join(data, name), FPS)[0]) for name in CLIPS]
    pieces = [clips[c][round(a * FPS): round((a + s) * FPS)].copy() for c, a, s in SHOTS]
    middle = len(pieces[FLASH_SHOT]) // 2
    flashed = pieces[FLASH_SHOT][middle:middle + 2].astype(np.float32) * 1.6
    pieces[FLASH_SHOT][middle:middle + 2] = np.clip(flashed, 0, 255).astype(np.uint8)
    frames, cuts, fade = [], [], (0, 0)
    for i, piece in enumerate(pieces):
        if i == 3:  # cross-fade from shot 2 into shot 3
            n = round(FADE * FPS)
            w = np.linspace(0, 1, n + 2)[1:-1, None, None, None]
            start = len(frames) - n
            tail = np.asarray(frames[start:], np.float32)
            frames[start:] = list(((1 - w) * tail + w * piece[:n].astype(np.float32)).astype(np.uint8))
            fade = (start, len(frames) - 1)
            piece = piece[n:]
        elif i:
            cuts.append(len(frames))
        frames.extend(piece)
    return np.stack(frames), cuts, fade


def score(found: list[int], cuts: list[int], fade: tuple[int, int]) -> dict:
    hit_cuts = {c for c in cuts if any(abs(f - c) <= 2 for f in found)}
    in_fade = [f for f in found if fade[0] - 2 <= f <= fade[1] + 2]
    false = [f for f in found if f not in in_fade and all(abs(f - c) > 2 for c in cuts)]
    return {"cuts_found": f"{len(hit_cuts)}/{len(cuts)}", "fade_found": bool(in_fade), "false_cuts": len(false),
            "found_frames": sorted(found)}


def ours(frames: np.ndarray) -> list[int]:
    """emo-prepare's cuts, on the RGB copies it detects faces on (192 px with BlazeFace)."""
    return shot_starts([shrink(f, 192)[0] for f in frames])


def previous(frames: np.ndarray, threshold: float = 0.4, bins: int = 32) -> list[int]:
    """emo-prepare's cuts before PySceneDetect's measure: half the L1 distance of consecutive normalised grey
    histograms (320 px copies) above 0.4."""
    import cv2

    starts, last = [], None
    for t, frame in enumerate(frames):
        hist = cv2.calcHist([analysis_frame(frame)[0]], [0], None, [bins], [0, 256]).ravel()
        hist /= max(hist.sum(), 1.0)
        if last is not None and 0.5 * np.abs(hist - last).sum() > threshold:
            starts.append(t)
        last = hist
    return starts


def pyscenedetect(path: str, detector) -> list[int]:
    from scenedetect import detect

    return [start.frame_num for start, _ in detect(path, detector)[1:]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.path.join(_ROOT, "..", "shared", "data"))
    parser.add_argument("--out", default=os.path.join(_ROOT, "benchmarks", "results", "shots.json"))
    args = parser.parse_args(argv)
    from scenedetect import AdaptiveDetector, ContentDetector, HistogramDetector, __version__

    frames, cuts, fade = splice(args.data)
    results = {"setup": {"frames": len(frames), "fps": FPS, "side": SIDE, "hard_cuts": cuts, "fade": list(fade),
                         "scenedetect": __version__, "clips": list(CLIPS)}}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "spliced.mp4")
        write_video(path, frames, FPS)
        runs = {"emo-prepare (HSV content, 27)": lambda: ours(read_video(path, FPS)[0]),
                "previous emo-prepare (grey histogram, 0.4)": lambda: previous(read_video(path, FPS)[0]),
                "ContentDetector (default 27)": lambda: pyscenedetect(path, ContentDetector()),
                "AdaptiveDetector (default)": lambda: pyscenedetect(path, AdaptiveDetector()),
                "HistogramDetector (default)": lambda: pyscenedetect(path, HistogramDetector())}
        for name, run in runs.items():
            start = time.perf_counter()
            found = run()
            results[name] = {**score(found, cuts, fade), "ms_per_frame": 1e3 * (time.perf_counter() - start)
                             / len(frames)}
    print(f"{len(frames)} frames at {FPS} fps; hard cuts at {cuts}; fade over frames {fade[0]}-{fade[1]}")
    print(f"{'detector':<44} {'cuts':>6} {'fade':>6} {'false':>6} {'ms/frame':>9}")
    for name, r in results.items():
        if name != "setup":
            print(f"{name:<44} {r['cuts_found']:>6} {str(r['fade_found']):>6} {r['false_cuts']:>6} "
                  f"{r['ms_per_frame']:9.2f}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
