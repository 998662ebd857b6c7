"""What a trained demo model reads from each condition: its denoising error on training clips with the condition
as the data gives it, against the same clips with that condition removed or changed.

    python benchmarks/condition_use.py DEMO_OUT [--stage stage3] [--workdir DIR] [--batches 8]
        [--timesteps 999 700 300] [--out benchmarks/results/condition_use.json]

DEMO_OUT is an `emo-demo --out` folder (its prepared data and the stage's checkpoint, EMA weights, with the config
the checkpoint was trained with; --workdir reads another emo-train run on the same data instead, e.g. a
variant's). Every batch is noised at each fixed timestep with the same noise for every variant, so the
differences are the model's alone. A condition the model uses raises the error when it is taken away; one it
ignores changes nothing. Variants:
  audio dropped / reference dropped / motion dropped   the condition's keep set to False, as in training's dropout
  motion: still last frame     every motion frame the last one (keeps the pose before the clip, not its motion)
  motion: reversed             the motion frames in reverse order
  speed: constant S            (stage 3 models) every frame's speed label S, for each --speeds S
  speed: mirrored              (stage 3 models) max + min of the batch's labels minus the label (fast <-> slow)
  motion dropped, speed ...    the speed variants without motion frames, where only the label tells the speed
                               (their baseline is "motion dropped": the same inputs with the speed as labelled)
A model that carries head motion reads the motion frames' order, not only their last frame; speed layers that
control motion raise the error when the label is wrong, most of all without motion frames.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def variants(speed_layers: bool, speeds: tuple[float, ...]) -> dict:
    """name -> (keeps {audio, ref, motion}, motion-frame change, speed change), each change a function or None."""
    still = lambda m: np.repeat(m[:, -1:], m.shape[1], 1)  # noqa: E731
    reverse = lambda m: m[:, ::-1]  # noqa: E731
    out = {"as trained": ({}, None, None), "audio dropped": ({"audio": False}, None, None),
           "reference dropped": ({"ref": False}, None, None), "motion dropped": ({"motion": False}, None, None),
           "motion: still last frame": ({}, still, None), "motion: reversed": ({}, reverse, None)}
    if speed_layers:
        changes = {f"constant {s}": (lambda s: lambda v: np.full_like(v, s))(s) for s in speeds}
        changes["mirrored"] = lambda v: v.max() + v.min() - v
        for name, change in changes.items():
            out[f"speed: {name}"] = ({}, None, change)
        for name, change in changes.items():
            out[f"motion dropped, speed: {name}"] = ({"motion": False}, None, change)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("demo_out")
    p.add_argument("--stage", default="stage3", choices=("stage2", "stage3"))
    p.add_argument("--workdir", help="emo-train workdir of the model (default: DEMO_OUT/STAGE)")
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--noise-draws", type=int, default=2, help="noise draws per batch and timestep")
    p.add_argument("--timesteps", type=int, nargs="+", default=[999, 700, 300])
    p.add_argument("--speeds", type=float, nargs="+", default=[0.5, 2.5, 4.5])  # the demo labels span 0-4.8
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                 "condition_use.json"))
    args = p.parse_args()

    import jax
    import jax.numpy as jnp

    from emo_jax.build import build_model
    from emo_jax.train.checkpoint import restore_params
    from emo_jax.train.step import denoising_error, model_inputs, noise_schedule
    from emo_jax.train.train import load_encoders, training_dataset

    start = time.perf_counter()
    out_dir = os.path.abspath(args.demo_out)
    workdir = os.path.abspath(args.workdir or os.path.join(out_dir, args.stage))
    config, params = restore_params(workdir, use_ema=True)  # the run's own config: --quick sizes or a variant's
    config.data.path = os.path.join(out_dir, "prepared")
    config.vae.path = os.path.join(out_dir, "encoders", "vae")
    config.audio.wav2vec_path = os.path.join(out_dir, "encoders", "wav2vec2")
    model, _ = build_model(config)
    schedule = noise_schedule(config)
    batches = iter(training_dataset(config))
    batches = [next(batches) for _ in range(args.batches)]
    encoders, frozen = load_encoders(config, sorted(batches[0]), random_init=True)  # latents are precomputed

    @jax.jit
    def error(params, x0, cond, t, key):
        b = x0.shape[0]
        return denoising_error(model, params, schedule, x0, cond, jnp.full((b,), t, jnp.int32),
                               jax.random.normal(key, x0.shape, jnp.float32)).mean()

    speed_layers = config.train.stage == 3
    table = variants(speed_layers, tuple(args.speeds))
    errors = {t: {name: [] for name in table} for t in args.timesteps}
    for i, batch in enumerate(batches):
        inputs = {k: np.asarray(v) for k, v in model_inputs(config, encoders, frozen, batch).items()}
        x0 = inputs.pop("x0")
        b = x0.shape[0]
        for name, (keeps, motion, speed) in table.items():
            cond = dict(inputs)
            for k in ("ref", "audio", "motion"):
                cond[f"{k}_keep"] = np.full((b,), keeps.get(k, True))
            if motion is not None:
                cond["motion_latents_BNHWC"] = motion(cond["motion_latents_BNHWC"])
            if speed is not None:
                cond["speed"] = speed(cond["speed"])
            for t in args.timesteps:
                for draw in range(args.noise_draws):
                    key = jax.random.PRNGKey(1000 * i + draw)
                    errors[t][name].append(float(error(params, x0, cond, t, key)))
    rows = []
    print(f"{'variant':42}" + "".join(f"{f't={t}':>18}" for t in args.timesteps) + "   (error; change against "
          "as trained)")
    for name in table:
        row = {"variant": name}
        cells = []
        for t in args.timesteps:
            e, base = np.array(errors[t][name]), np.array(errors[t]["as trained"])
            change = float(np.mean(e - base))
            row[str(t)] = {"error": float(e.mean()), "change": change, "change_relative": change / float(base.mean())}
            cells.append(f"{e.mean():8.4f} ({100 * change / base.mean():+5.1f}%)")
        rows.append(row)
        print(f"{name:42}" + "".join(f"{c:>18}" for c in cells), flush=True)
    labels = np.concatenate([np.asarray(b["speed"]).ravel() for b in batches]) if speed_layers else None
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump({"demo_out": out_dir, "workdir": workdir, "stage": int(config.train.stage), "batches": args.batches,
                   "clips": int(sum(np.asarray(b[next(iter(b))]).shape[0] for b in batches)),
                   "noise_draws": args.noise_draws, "timesteps": args.timesteps,
                   "speed_labels": None if labels is None else {"min": float(labels.min()), "max": float(labels.max()),
                                                                 "mean": float(labels.mean())},
                   "seconds": time.perf_counter() - start, "rows": rows}, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
