"""emo-demo: the whole system on a laptop CPU, no weights, no network, with answers known in advance.

    emo-demo --out DIR [--quick]

Draws talking heads whose mouth opening is the loudness of their speech, prepares them with emo-prepare (with a
tiny wav2vec2 and a small VAE, both trained here first), trains stage 1 and stage 2 with emo-train's trainer,
generates every identity on held-out speech with emo-generate's code, and measures identity, lip sync (with a
silent-audio control) and continuity across clips. Layout of DIR:
    data/        training videos (mp4 + audio), held-out speech (wav), portraits (png)
    encoders/    wav2vec2/ (Hugging Face folder), vae/ (diffusers folder), both trained on the training videos
    prepared/    emo-prepare output with audio features and latents (prepared_frames/: the VAE's training crops)
    stage1/, stage2/   emo-train workdirs
    videos/      <identity>.mp4 and <identity>_silent.mp4 (the control), contact_sheet.png
    metrics.json the table below, as numbers
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from typing import Iterator, Sequence

import ml_collections
import numpy as np
from tqdm import tqdm

from emo_jax.errors import RunError

# Demo targets (issue #10): what the default run should reach; --quick is a smoke test and is not held to them.
TARGETS = {"identity_accuracy": 0.9, "lip_sync": 0.5, "control_abs_max": 0.2}

PHASES = ("data", "encoders", "prepare", "train stage 1", "train stage 2", "generate + measure")


class Phases:
    """Wall-clock seconds per named phase, in order, with one progress bar over the phases."""

    def __init__(self, names: Sequence[str]):
        self.seconds: dict[str, float] = {}
        self._bar = tqdm(total=len(names), unit="phase", desc="emo-demo")

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self._bar.set_postfix_str(name)
        start = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - start
        self._bar.update()

    def close(self) -> None:
        self._bar.close()


def demo_configs(quick: bool) -> dict[str, ml_collections.ConfigDict]:
    from configs import demo

    return {v: demo.get_config(v + (",quick" if quick else "")) for v in ("stage1", "stage2")}


def prepare_config(config: ml_collections.ConfigDict, wav2vec: str = "", vae: str = ""):
    """emo-prepare's settings for the demo videos: the config's frame rate, crop size and framing, one segment per
    video; the Haar detector and the image-motion speed, which need no model files (the demo reads no weights and
    no network; it trains no speed layers)."""
    from data_pipeline.extract import PrepareConfig

    return PrepareConfig(fps=config.data.fps, size=config.data.size, min_seconds=2.0, max_seconds=12.0,
                         detector="haar", speed_estimator="flow",
                         face_expand=config.data.face_expand, audio_sample_rate=config.audio.sample_rate,
                         audio_window_seconds=config.audio.window_seconds, wav2vec=wav2vec, vae=vae)


def read_records(prepared: str) -> list:
    """Every segment record of an emo-prepare output folder."""
    from data_pipeline.loader import shard_paths, shard_records
    from data_pipeline.schema import decode_record

    records = shard_records(shard_paths(prepared))
    return [decode_record(records[i]) for i in range(len(records))]


def _check_prepared(manifest: dict, expected: int) -> None:
    if manifest["segments"] < expected:
        raise RunError(f"emo-prepare kept {manifest['segments']} segments of {expected} demo videos "
                           f"(skipped: {manifest['skipped']}); the demo's drawings should always be found")


def run(out: str, quick: bool, seed: int = 0) -> dict:
    """All phases into `out`; returns the metrics dict (also written to out/metrics.json)."""
    from data_pipeline.prepare import INLINE, prepare
    from data_pipeline.schema import decode_jpeg
    from emo_jax.demo.data import write_demo_data, write_portrait
    from emo_jax.audio import load_audio
    from emo_jax.demo.encoders import pretrain_wav2vec2, train_vae, write_vae_folder, write_wav2vec2_folder
    from emo_jax.demo.evaluate import generate_and_measure
    from emo_jax.train.train import train

    configs = demo_configs(quick)
    c1, c2 = configs["stage1"], configs["stage2"]
    path = lambda *parts: os.path.join(out, *parts)  # noqa: E731
    phases = Phases(PHASES)
    with phases("data"):
        data = write_demo_data(path("data"), c2)
    with phases("encoders"):
        waves = [load_audio(v) for v in data.videos]  # the training videos' speech only: held-out audio stays unseen
        w2v_params, _ = pretrain_wav2vec2(c2, waves, seed)
        wav2vec = write_wav2vec2_folder(c2, path("encoders", "wav2vec2"), w2v_params)
        # A first pass without encoders gives the crops the VAE must reconstruct, framed exactly as training sees them.
        _check_prepared(prepare(data.videos, path("prepared_frames"), prepare_config(c2), runner=INLINE),
                        len(data.videos))
        plain = read_records(path("prepared_frames"))
        frames = np.stack([decode_jpeg(j) for r in plain for j in r.frames_jpeg])
        vae_params, scaling = train_vae(c2, frames, seed)
        vae = write_vae_folder(c2, vae_params, scaling, path("encoders", "vae"))
    with phases("prepare"):
        manifest = prepare(data.videos, path("prepared"), prepare_config(c2, wav2vec, vae), runner=INLINE)
        _check_prepared(manifest, len(data.videos))
    portraits = [write_portrait(path("data", f"{ident.name}_portrait.png"), ident, c2.demo.render_side)
                 for ident in data.identities]
    for c in (c1, c2):
        c.data.path, c.vae.path, c.audio.wav2vec_path, c.seed = path("prepared"), vae, wav2vec, seed
    c2.init.previous_stage = path("stage1")
    with phases("train stage 1"):
        train(c1, path("stage1"))
    with phases("train stage 2"):
        train(c2, path("stage2"))
    with phases("generate + measure"):
        results = generate_and_measure(c2, path("stage2"), [i.name for i in data.identities], portraits,
                                       data.heldout_audio, path("videos"), seed)
    phases.close()
    metrics = summarise(out, results, phases.seconds, quick, c1, c2, manifest)
    with open(path("metrics.json"), "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=1)
    return metrics


def _final_loss(workdir: str) -> float | None:
    try:
        with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
            lines = [json.loads(line) for line in f if line.strip()]
    except OSError:
        return None
    return float(lines[-1]["loss"]) if lines and "loss" in lines[-1] else None


def summarise(out: str, results: list, seconds: dict[str, float], quick: bool, c1: ml_collections.ConfigDict,
              c2: ml_collections.ConfigDict, manifest: dict) -> dict:
    """The metrics JSON: per-video measures, their means, phase times, and the run's sizes."""
    videos = [dataclasses.asdict(r) for r in results]
    mean = lambda key: float(np.mean([v[key] for v in videos]))  # noqa: E731
    return {
        "quick": quick,
        "identity_accuracy": mean("identity_accuracy"),
        "lip_sync_mean": mean("lip_sync"),
        "lip_sync_control_mean": mean("lip_sync_control"),
        "continuity": {"boundary_change": mean("boundary_change"), "inside_change": mean("inside_change")},
        "videos": videos,
        "targets": TARGETS,
        "seconds": {**seconds, "total": float(sum(seconds.values()))},
        "sizes": {"identities": c2.demo.identities, "training_videos": manifest["inputs"],
                  "training_frames": manifest["frames"], "frame_size": c2.data.size, "fps": c2.data.fps,
                  "heldout_seconds": c2.demo.heldout_seconds,
                  "stage1_steps": c1.train.steps, "stage2_steps": c2.train.steps, "ddim_steps": c2.sample.steps},
        "final_loss": {"stage1": _final_loss(os.path.join(out, "stage1")),
                       "stage2": _final_loss(os.path.join(out, "stage2"))},
    }


def format_table(metrics: dict) -> str:
    """The metrics as a plain-text table for the terminal."""
    lines = [f"{'identity':<10}{'frames':>7}{'id acc':>8}{'lip sync':>10}{'control':>9}{'boundary':>10}"
             f"{'inside':>8}"]
    for v in metrics["videos"]:
        lines.append(f"{v['identity']:<10}{v['frames']:>7}{v['identity_accuracy']:>8.2f}{v['lip_sync']:>10.2f}"
                     f"{v['lip_sync_control']:>9.2f}{v['boundary_change']:>10.2f}{v['inside_change']:>8.2f}")
    cont = metrics["continuity"]
    lines.append(f"{'mean':<10}{'':>7}{metrics['identity_accuracy']:>8.2f}{metrics['lip_sync_mean']:>10.2f}"
                 f"{metrics['lip_sync_control_mean']:>9.2f}{cont['boundary_change']:>10.2f}"
                 f"{cont['inside_change']:>8.2f}")
    t = TARGETS
    lines.append(f"targets (full run): identity accuracy >= {t['identity_accuracy']}, lip sync >= {t['lip_sync']}, "
                 f"|control| <= {t['control_abs_max']}; boundary change close to inside change")
    lines.append("")
    lines += [f"{name:<22}{s:>8.1f} s" for name, s in metrics["seconds"].items()]
    return "\n".join(lines)
