"""Does a trained demo model carry head motion? Its generated head roll against the real one, teacher-forced.

    python benchmarks/motion_continuation.py DEMO_OUT [--videos id0_0 id1_1 ...] [--start 60] [--frames 48]
        [--speeds 0.1 1.3 2.5] [--out benchmarks/results/motion_continuation.json]

DEMO_OUT is an `emo-demo --out` folder (its prepared data, encoders and stage-2/3 checkpoints). For each training
video (default: the first of each identity) the model generates `--frames` frames from the video's own audio
features and face mask, with the video's first frame as the reference, twice: starting a video (the first clip's
motion frames are the model's stand-in, as emo-generate starts) and continuing the real video from frame
`--start` (its real last n latents as motion frames: Sampler.stream's motion_latents). The head roll velocity of
each output is measured as the demo measures it (emo_jax.demo.metrics: roll against the reference crop, smoothed
and differenced as emo-prepare's speed label) beside the real frames' and the label. The stage-3 model runs at
each --speeds setting. A model whose temporal layers carry motion continues a real roll at about the real
velocity; one that ignores the speed setting gives the same velocity at every setting.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data_pipeline.schema import decode_jpeg  # noqa: E402
from emo_jax.audio.features import add_context  # noqa: E402
from emo_jax.demo.evaluate import Generator  # noqa: E402
from emo_jax.demo.metrics import head_roll, roll_velocity  # noqa: E402
from emo_jax.demo.run import demo_configs, read_records  # noqa: E402


def velocity(frames: np.ndarray, reference: np.ndarray) -> dict:
    """Mean roll velocity (degrees per frame) over the readable frames, and the readable share."""
    v = roll_velocity(head_roll(frames, reference))
    ok = v[np.isfinite(v)]
    return {"velocity": float(ok.mean()) if len(ok) else float("nan"), "readable": len(ok) / len(v)}


@dataclasses.dataclass
class Window:
    """What every generation of one training video reads, prepared once: frames [start, start + frames)."""

    name: str
    reference: np.ndarray  # uint8 [S, S, 3]: the video's first frame
    audio: np.ndarray  # float32 [frames, 2m + 1, L, D]
    mask: np.ndarray  # float32 [S, S]: the record's face mask
    motion: np.ndarray  # float32 [n, h, w, C]: the real latents just before `start`
    row: dict  # the label and the real frames' velocity


def window(rec, name: str, start: int, frames: int, context: int, n: int) -> Window:
    real = np.stack([decode_jpeg(j) for j in rec.frames_jpeg])
    frames = min(frames, len(real) - start)
    stop = start + frames
    return Window(name, real[0], add_context(rec.audio_features.astype(np.float32), context)[start:stop],
                  rec.face_mask.astype(np.float32), rec.latents[start - n:start].astype(np.float32),
                  {"video": name, "frames": frames, "label": float(np.nanmean(rec.speed[start:stop])),
                   "real": velocity(real[start:stop], real[0])})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("demo_out")
    p.add_argument("--videos", nargs="*", help="training video names without .mp4 (default: one per identity)")
    p.add_argument("--start", type=int, default=60)
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--speeds", type=float, nargs="*", default=[0.1, 1.3, 2.5])
    p.add_argument("--out", default="benchmarks/results/motion_continuation.json")
    args = p.parse_args(argv)
    out = args.demo_out
    configs = demo_configs(False)
    for c in configs.values():
        c.data.path = os.path.join(out, "prepared")
        c.vae.path = os.path.join(out, "encoders", "vae")
        c.audio.wav2vec_path = os.path.join(out, "encoders", "wav2vec2")
    records = {os.path.splitext(os.path.basename(r.source))[0]: r for r in read_records(os.path.join(out, "prepared"))}
    names = args.videos or sorted({n.split("_")[0]: n for n in sorted(records, reverse=True)}.values())
    m = configs["stage2"].model
    windows = [window(records[name], name, args.start, args.frames, m.audio.context, m.motion_frames)
               for name in names]
    rows, start = [], time.time()
    for stage, settings in (("stage2", [None]), ("stage3", args.speeds)):
        gen = Generator(configs[stage], os.path.join(out, stage))
        s, c = gen.sampler, gen.config.sample
        for w in windows:
            ref = s.reference(gen.codec.encode(w.reference[None]))  # once per video and model
            row = {"stage": stage, **w.row}
            for speed in settings:
                signals = None if speed is None else {"speed": np.full(len(w.audio), speed, np.float32)}
                key = "no speed" if speed is None else f"speed {speed}"
                row[key] = {how: velocity(gen.codec.decode(s.sample(
                    ref, w.audio, w.mask, 0, c.ref_scale, c.audio_scale, signals=signals,
                    motion_latents=w.motion if how == "continued" else None)), w.reference)
                    for how in ("new", "continued")}
            rows.append(row)
            print(json.dumps(row), flush=True)
        del gen
    print(f"\n{'stage':<8}{'video':<8}{'label':>7}{'real':>7}  generated velocity (readable share), new / continued")
    for r in rows:
        cells = [f"{k}: " + " / ".join(f"{v[h]['velocity']:.2f} ({v[h]['readable']:.0%})" for h in ("new", "continued"))
                 for k, v in r.items() if k.startswith(("no speed", "speed"))]
        print(f"{r['stage']:<8}{r['video']:<8}{r['label']:>7.2f}{r['real']['velocity']:>7.2f}  " + "; ".join(cells))
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump({"demo_out": out, "start": args.start, "seconds": time.time() - start, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
