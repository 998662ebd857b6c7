"""How much a demo model's videos change from frame to frame, against the training videos, and how visible the
speed label is in those videos: the two conditions a speed control needs.

    python benchmarks/frame_change.py DEMO_OUT [--workdir DIR ...] [--identities 2] [--videos 6]
        [--out benchmarks/results/frame_change.json]

DEMO_OUT is an `emo-demo --out` folder. Data rows (its prepared training clips, the first --videos): the mean
|frame change| (0-255 grey levels, 32 px crops) of the frames, of their VAE round trip (the model's latents
decoded), and, over every prepared clip, the latents' mean |change| per speed-label range with the rank
correlation between label and change (how much of a frame's change the label explains). Model rows (each
--workdir, default DEMO_OUT/stage2, an emo-train stage-2 run on the same data): the first --identities portraits
generated on their held-out audio as emo-generate makes them, with the config's guidance scales and with none
(1, 1); mean |frame change| inside clips and across clip boundaries, its ratio to the training frames', and lip
sync (emo_jax.demo's measure). A video model changes about as much as its data; much more is flicker, which the
demo's head-velocity measure cannot tell from head motion.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SPEED_RANGES = ((0.0, 0.3), (0.3, 0.9), (0.9, 1.5), (1.5, 2.2), (2.2, 3.0), (3.0, 4.0), (4.0, float("inf")))


def data_rows(records: list, codec, videos: int) -> dict:
    from data_pipeline.schema import decode_jpeg
    from emo_jax.demo.evaluate import spearman
    from emo_jax.eval.clips import frame_changes as change

    frames, decoded = [], []
    for r in records[:videos]:
        x = np.stack([decode_jpeg(j) for j in r.frames_jpeg])
        frames.append(change(x).mean())
        decoded.append(change(codec.decode(np.asarray(r.latents, np.float32))).mean())
    labels = np.concatenate([np.asarray(r.speed, np.float32)[1:] for r in records])
    latent = np.concatenate([change(np.asarray(r.latents, np.float32)) for r in records])
    ranges = []
    for lo, hi in SPEED_RANGES:
        m = (labels >= lo) & (labels < hi)
        ranges.append({"speed": [lo, hi], "frames": int(m.sum()),
                       "latent_change": float(latent[m].mean()) if m.any() else float("nan")})
    return {"frame_change": float(np.mean(frames)), "vae_round_trip_change": float(np.mean(decoded)),
            "latent_change_by_speed": ranges, "spearman_speed_latent_change": spearman(labels, latent)}


def model_rows(demo_out: str, workdir: str, identities: int, seed: int = 0) -> list[dict]:
    from emo_jax.audio import load_audio
    from emo_jax.demo.evaluate import Generator
    from emo_jax.demo.metrics import mouth_opening, pearson
    from emo_jax.eval.clips import continuity, loudness_per_frame
    from emo_jax.train.checkpoint import restore_params

    config, _ = restore_params(workdir, use_ema=True)
    config.vae.path = os.path.join(demo_out, "encoders", "vae")
    config.audio.wav2vec_path = os.path.join(demo_out, "encoders", "wav2vec2")
    gen = Generator(config, workdir)  # the guidance scales are inputs of its compiled program, not constants
    inputs = []
    for k in range(identities):
        reference, mask = gen.reference(os.path.join(demo_out, "data", f"id{k}_portrait.png"))
        audio = load_audio(os.path.join(demo_out, "data", "heldout", f"id{k}.wav"))
        inputs.append((reference, mask, audio))
    rows = []
    for scales in ((config.sample.ref_scale, config.sample.audio_scale), (1.0, 1.0)):
        config.sample.ref_scale, config.sample.audio_scale = scales  # Generator.frames reads them from its config
        measured = []
        for reference, mask, audio in inputs:
            video = gen.frames(reference, mask, audio, seed)
            boundary, inside = continuity(video, config.model.clip_frames)
            loud = loudness_per_frame(audio, config.data.fps, len(video))
            measured.append((inside, boundary, pearson(mouth_opening(video), loud)))
        inside, boundary, lip = np.mean(measured, axis=0)
        rows.append({"workdir": workdir, "steps": int(config.train.steps), "ref_scale": scales[0],
                     "audio_scale": scales[1], "inside_change": float(inside), "boundary_change": float(boundary),
                     "lip_sync": float(lip)})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("demo_out")
    p.add_argument("--workdir", nargs="+", help="stage-2 emo-train workdirs (default: DEMO_OUT/stage2)")
    p.add_argument("--identities", type=int, default=2)
    p.add_argument("--videos", type=int, default=6)
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                 "frame_change.json"))
    args = p.parse_args()

    from emo_jax import encoders
    from emo_jax.demo.run import demo_configs, read_records
    from emo_jax.models.vae_codec import VAECodec

    start = time.perf_counter()
    out_dir = os.path.abspath(args.demo_out)
    config = demo_configs(False)["stage2"]
    config.vae.path = os.path.join(out_dir, "encoders", "vae")
    module, params, _ = encoders.vae(config)
    data = data_rows(read_records(os.path.join(out_dir, "prepared")), VAECodec(module, params, chunk=4), args.videos)
    print(f"training frames: |frame change| {data['frame_change']:.2f}, "
          f"VAE round trip {data['vae_round_trip_change']:.2f}")
    print("latent |change| by speed label: " + ", ".join(
        f"[{r['speed'][0]:g}, {r['speed'][1]:g}) {r['latent_change']:.4f} ({r['frames']})"
        for r in data["latent_change_by_speed"]) + f"; Spearman {data['spearman_speed_latent_change']:.2f}")
    rows = []
    print(f"{'workdir':32}{'steps':>6}{'guidance':>10}{'inside':>8}{'boundary':>10}{'x data':>8}{'lip sync':>10}")
    for workdir in [os.path.abspath(w) for w in (args.workdir or [os.path.join(out_dir, "stage2")])]:
        for row in model_rows(out_dir, workdir, args.identities):
            row["inside_over_data"] = row["inside_change"] / data["frame_change"]
            rows.append(row)
            print(f"{workdir[-32:]:32}{row['steps']:>6}{row['ref_scale']:>5g},{row['audio_scale']:<4g}"
                  f"{row['inside_change']:>8.2f}{row['boundary_change']:>10.2f}{row['inside_over_data']:>8.2f}"
                  f"{row['lip_sync']:>10.2f}", flush=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump({"demo_out": out_dir, "identities": args.identities, "videos": args.videos, "data": data,
                   "models": rows, "seconds": time.perf_counter() - start}, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
