"""Sampler speed: seconds per generated frame and compile time, scan sampler against a Python-loop sampler.

    python benchmarks/sampler.py [--config configs/tiny.py:stage2] [--clips 8] [--out benchmarks/results/sampler.json]

Both samplers do the same math from the same pieces of emo_jax.sample.sampler (guided_output, clip_condition,
clip_noise, ddim_step): the scan sampler as one compiled chunk program per `clips_per_chunk` clips, the loop
sampler as a jitted clip-condition call per clip and a jitted guided DDIM step per step, driven from Python.
A random model (fixed seed, zero-initialised layers given values) and random audio features stand in for
trained weights and wav2vec2, which do not change the cost. Compile time = first run - steady run.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)
from emo_jax.config import parse_config_args  # noqa: E402
from emo_jax.diffusion import ddim_step, ddim_step_pairs, ddim_timesteps, make_schedule  # noqa: E402
from emo_jax.models.emo import EMO  # noqa: E402
from emo_jax.sample.generate import random_model_params  # noqa: E402
from emo_jax.sample.sampler import Sampler, clip_condition, clip_noise, guided_output  # noqa: E402


class LoopSampler:
    """The same sampler with the clip and step loops in Python: one jitted call per clip and per step."""

    def __init__(self, sampler: Sampler):
        self.s, spec, model = sampler, sampler.spec, EMO(sampler.cfg)
        self.schedule = make_schedule(prediction_type=spec.prediction_type,
                                      rescale_zero_terminal_snr=spec.zero_terminal_snr)
        self.pairs = list(zip(*(np.asarray(a) for a in ddim_step_pairs(
            ddim_timesteps(self.schedule, spec.steps, spec.spacing)))))
        self.condition = jax.jit(lambda params, ref, audio, mask, prev, first: clip_condition(
            model, params, ref, audio, None, mask, prev, first))

        def step(params, x, t, t_prev, cond, scales):
            out = guided_output(model, params, spec.guidance, x, t, cond, scales)
            return ddim_step(self.schedule, out, t, t_prev, x)

        self.step = jax.jit(step)

    def sample(self, ref, audio_TCLD, mask_HW, seed, ref_scale, audio_scale) -> np.ndarray:
        s, f = self.s, self.s.clip_frames
        n = s.cfg.motion_frames
        key, previous = jax.random.PRNGKey(seed), jnp.zeros((1, n) + s.latent_shape, jnp.float32)
        mask = jnp.asarray(mask_HW)[None, :, :, None]
        scales = jnp.asarray([ref_scale, audio_scale], jnp.float32)
        clips = []
        for index in range(s.num_clips(len(audio_TCLD))):
            audio = audio_TCLD[index * f:(index + 1) * f]
            audio = np.concatenate([audio, np.zeros((f - len(audio),) + audio.shape[1:], audio.dtype)])
            cond = self.condition(s.params, ref, jnp.asarray(audio), mask, previous, jnp.asarray(index == 0))
            x = clip_noise(key, jnp.int32(index), (1, f) + s.latent_shape)
            for t, t_prev in self.pairs:
                x = self.step(s.params, x, t, t_prev, cond, scales)
            previous = x[:, -n:]
            clips.append(np.asarray(x[0]))
        return np.concatenate(clips)[:len(audio_TCLD)]


def _timed(fn) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main(argv: list[str] | None = None) -> int:
    """Runs both samplers twice (compile + steady), prints a table, writes the JSON file."""
    argv = list(sys.argv[1:] if argv is None else argv)
    config, rest = parse_config_args(argv, default="configs/tiny.py:stage2")
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clips", type=int, default=8, help="clips of audio to generate (default 8)")
    p.add_argument("--out", default=os.path.join("benchmarks", "results", "sampler.json"))
    args = p.parse_args(rest)

    params = random_model_params(config)
    flat = traverse_util.flatten_dict(params)
    rng = np.random.default_rng(0)
    for path, value in flat.items():
        if not np.any(np.asarray(value)):  # zero-initialised layers come alive, as in a trained model
            flat[path] = 0.05 * rng.standard_normal(value.shape).astype(np.float32)
    sampler = Sampler(config, traverse_util.unflatten_dict(flat))
    m, frames = config.model, args.clips * config.model.clip_frames
    ref = sampler.reference(rng.standard_normal((1, m.latent_size, m.latent_size, 4)).astype(np.float32))
    audio = rng.standard_normal((frames, 2 * m.audio.context + 1, m.audio.layers, m.audio.feature_dim))
    audio = audio.astype(np.float32)
    mask = np.ones((sampler.mask_size,) * 2, np.float32)
    run_args = (ref, audio, mask, 0, config.sample.ref_scale, config.sample.audio_scale)

    results = {"config": argv[argv.index("--config") + 1] if "--config" in argv else "configs/tiny.py:stage2",
               "frames": frames, "steps": config.sample.steps, "guidance": config.sample.guidance,
               "clips_per_chunk": config.sample.clips_per_chunk, "backend": jax.default_backend()}
    outputs, loop = {}, LoopSampler(sampler)
    for name, run in [("scan", lambda: sampler.sample(*run_args)), ("loop", lambda: loop.sample(*run_args))]:
        first, _ = _timed(run)
        steady, outputs[name] = _timed(run)
        results[name] = {"seconds_per_frame": steady / frames, "compile_seconds": first - steady,
                         "first_run_seconds": first}
    diff = np.abs(outputs["scan"] - outputs["loop"]).max() / np.abs(outputs["loop"]).max()
    results["scan_vs_loop_rel_err"] = float(diff)

    print(f"{'sampler':<8} {'s/frame':>10} {'compile s':>10} {'first run s':>12}")
    for name in ("scan", "loop"):
        r = results[name]
        print(f"{name:<8} {r['seconds_per_frame']:10.4f} {r['compile_seconds']:10.2f} {r['first_run_seconds']:12.2f}")
    print(f"{frames} frames, {config.sample.steps} steps, {config.sample.guidance} guidance; scan vs loop "
          f"max rel. diff {diff:.2e}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
