"""emo-train's periodic evaluation (config.eval): every eval.every steps, held-out clips generated with the
current EMA weights, measured, and logged beside the training metrics.

The held-out clips are the first eval.clips segments (in shard order) of an emo-prepare folder
(eval.data_path) with at least eval.frames frames. For each one the model sees what emo-generate would give it:
the segment's first frame as the reference, its face mask (the union of its face boxes), its audio and, for
stage-3 models, its speed labels; it generates eval.frames frames from eval.seed, which does not change between
evaluations, so two evaluations differ only by the weights. The generated clips are compared with the real ones:

    fvd, fid                   emo-eval's FVD (I3D logits of 16-frame windows) and per-frame FID, when their
                               weights files are in eval.weights; "not computed: ..." once in the log otherwise
    identity_accuracy          share of generated frames closer to their own reference than to every other
                               clip's (emo_jax/demo/metrics.py; needs two clips or more)
    boundary_change,           mean |frame change| across clip boundaries and inside clips: a jump at the
      inside_change            boundaries means the motion frames do not carry the video over
    lip_sync                   with eval.mouth_colour: the share of the lower face in the mouth's colour against
                               loudness (the demo's measure: its drawn mouths have one colour)

With eval.clips this small, FVD and FID are a tracking signal for one run, not numbers to put beside the paper's
Table 1 (emo-eval over a full test set is). Under several processes each one generates every P-th clip; feature
statistics and per-clip measures are merged over the processes, so the numbers do not depend on P.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from emo_jax.config import model_config, section
from emo_jax.errors import ConfigError

log = logging.getLogger("emo_jax.train.evaluate")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """config.eval; the module docstring says what each measure is."""

    every: int = 0  # steps between evaluations; 0: none
    data_path: str = ""  # emo-prepare folder of held-out segments (not in config.data.path)
    clips: int = 8  # held-out segments generated at each evaluation
    frames: int = 48  # frames generated per segment (FVD needs 16 or more)
    weights: str = ""  # folder of emo-eval's weights files; "" = emo-eval's default folder
    fid_every: int = 1  # FID on every k-th generated frame
    fvd_stride: int = 16  # FVD windows start every s frames
    seed: int = 0
    mouth_colour: tuple = ()  # RGB of the mouths for the lip-sync measure (the demo's drawn faces); (): off
    save_videos: bool = True  # <workdir>/eval/<step>/<clip>.mp4, generated | real side by side

    def check(self, config: ml_collections.ConfigDict) -> None:
        if self.every < 0:
            raise ConfigError(f"eval.every must be >= 0 (0: no evaluation), got {self.every}")
        if not self.every:
            return
        if config.train.stage not in (2, 3):
            raise ConfigError(f"eval.every is {self.every} but train.stage {config.train.stage} trains no video "
                              "model; the periodic evaluation generates videos, so use it in stages 2 and 3 (or "
                              "set eval.every 0)")
        if not self.data_path:
            raise ConfigError("eval.every is set but eval.data_path is empty: pass --config.eval.data_path FOLDER, "
                              "an emo-prepare output of held-out videos")
        for name in ("clips", "frames", "fid_every", "fvd_stride"):
            if getattr(self, name) < 1:
                raise ConfigError(f"eval.{name} must be at least 1, got {getattr(self, name)}")


def eval_config(config: ml_collections.ConfigDict) -> EvalConfig:
    """config.eval as an EvalConfig (all defaults when the config has no eval section), checked."""
    node = config.get("eval")
    e = EvalConfig() if node is None else section(EvalConfig, node, "eval")
    e.check(config)
    return e


@dataclasses.dataclass
class HeldOutClip:
    """One held-out segment, cut to the frames an evaluation generates."""

    name: str  # source file name#segment index
    frames: np.ndarray  # uint8 [T, S, S, 3], the real frames; frame 0 is the reference
    mask: np.ndarray  # float32 [S, S], the union of the T frames' face boxes
    audio: np.ndarray  # float32 [samples] of the T frames
    features: np.ndarray | None  # float32 [T, 2m + 1, L, D] from the record, or None (computed from `audio`)
    signals: dict[str, np.ndarray]  # the per-frame signals the model reads (EMOConfig.frame_signals), each [T, ...]


def held_out_clips(config: ml_collections.ConfigDict, e: EvalConfig) -> tuple[list[HeldOutClip], list[str]]:
    """(the first e.clips usable segments of e.data_path, the reasons the segments before them were skipped)."""
    from data_pipeline.crop import union_mask
    from data_pipeline.loader import read_manifest, shard_paths, shard_records
    from data_pipeline.schema import decode_jpeg, decode_record
    from emo_jax.audio.features import add_context
    from emo_jax.paths import require_folder
    from emo_jax.train.train import check_prepared_settings

    require_folder(e.data_path, "eval.data_path", "pass an emo-prepare output folder of held-out videos", ConfigError)
    probe = config.copy_and_resolve_references()
    probe.data.path = e.data_path  # the same checks as the training data, naming this folder
    check_prepared_settings(probe, read_manifest(e.data_path))
    records = shard_records(shard_paths(e.data_path))
    signal_names = model_config(config).frame_signals
    clips, skipped = [], []
    for i in range(len(records)):
        if len(clips) == e.clips:
            break
        r = decode_record(records[i])
        name = f"{os.path.basename(r.source)}#{r.segment_index}"
        if r.num_frames < e.frames:
            skipped.append(f"{name}: {r.num_frames} frames, fewer than eval.frames {e.frames}")
            continue
        lacking = [name for name in signal_names if getattr(r, name, None) is None]
        if lacking:
            raise ConfigError(f"eval.data_path {e.data_path!r}: the records have no {lacking}, which this model reads "
                              "per frame; prepare the held-out videos with this emo-prepare version")
        t = e.frames
        samples = int(round(t * r.audio_sample_rate / r.fps))
        features = None
        if r.audio_features is not None:
            # Context over the whole segment, as the loader gives it: frames near the cut see real neighbours.
            features = add_context(r.audio_features.astype(np.float32), config.model.audio.context)[:t]
        clips.append(HeldOutClip(
            name=name, frames=np.stack([decode_jpeg(j) for j in r.frames_jpeg[:t]]),
            mask=union_mask(r.face_boxes[:t], r.size).astype(np.float32), audio=r.audio[:samples],
            features=features, signals={name: getattr(r, name)[:t] for name in signal_names}))
    if not clips:
        raise ConfigError(f"eval.data_path {e.data_path!r} has no segment of at least eval.frames {e.frames} frames "
                          f"({len(records)} segments); lower eval.frames or prepare longer held-out videos")
    if len(clips) < e.clips:
        log.warning("eval.data_path %s holds %d usable segments, fewer than eval.clips %d", e.data_path, len(clips),
                    e.clips)
    for reason in skipped:
        log.info("evaluation skips %s", reason)
    return clips, skipped


@dataclasses.dataclass
class FrechetMetric:
    """A Fréchet metric's network: features of a batch of items, fresh statistics, and how the items are cut from
    a clip's frames (FID: frames; FVD: 16-frame windows)."""

    extract: Callable[[np.ndarray], np.ndarray]
    new_stats: Callable[[], Any]
    items: Callable[[np.ndarray], list[np.ndarray]]


def frechet_metrics(e: EvalConfig) -> tuple[dict[str, FrechetMetric], dict[str, str]]:
    """({'fvd': ..., 'fid': ...} for the weights files present in e.weights, {name: why not computed})."""
    from emo_jax.eval import fid, fvd, weights
    from emo_jax.eval.fvd import ClipWindows
    from emo_jax.interop.metric_networks import load_extractors

    extractors, missing = load_extractors(e.weights or weights.DEFAULT_FOLDER)

    def windows(frames):
        cut = ClipWindows(stride=e.fvd_stride)
        return [w for w in (cut.push(f) for f in frames) if w is not None]

    metrics = {}
    if "FVD" in extractors:
        metrics["fvd"] = FrechetMetric(extractors["FVD"], fvd.new_stats, windows)
    if "FID" in extractors:
        metrics["fid"] = FrechetMetric(extractors["FID"], fid.new_stats, lambda frames: list(frames[::e.fid_every]))
    return metrics, {name.lower(): f"{why} (eval.weights)" for name, why in missing.items()}


class PeriodicEvaluation:
    """Loads the held-out clips, the encoders and the metric networks once; `evaluate(state)` generates and measures.

    `metrics` replaces the FVD/FID networks read from eval.weights (tests pass small ones)."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str, precomputed_audio: bool,
                 random_init_encoders: bool = False, metrics: dict[str, FrechetMetric] | None = None):
        from emo_jax import encoders
        from emo_jax.models.vae_codec import VAECodec
        from emo_jax.sample.sampler import check_video_model

        self.config, self.workdir = config, workdir
        self.e = e = eval_config(config)
        check_video_model(config)
        self.clips, self.skipped = held_out_clips(config, e)
        p, count = jax.process_index(), jax.process_count()
        self.mine = list(range(p, len(self.clips), count))  # this process's clips
        vae_module, vae_params, _ = encoders.vae(config, random_init=random_init_encoders)
        self.codec = VAECodec(vae_module, vae_params, chunk=config.model.clip_frames)
        self.audio = None
        if not (precomputed_audio and all(c.features is not None for c in self.clips)):
            self.audio = encoders.audio_encoder(config, random_init=random_init_encoders)[:2]
        if metrics is None:
            metrics, self.missing = frechet_metrics(e)
        else:
            self.missing = {}
        self.metrics = metrics
        for name, why in self.missing.items():
            log.warning("periodic evaluation: %s %s", name, why)
        self._real_stats: dict | None = None  # the real clips' features do not change: extracted once

    def due(self, step: int) -> bool:
        return bool(self.e.every) and step % self.e.every == 0

    def _features(self, clip: HeldOutClip) -> np.ndarray:
        if clip.features is not None and self.audio is None:
            return clip.features
        from emo_jax.audio.features import audio_features

        c = self.config
        encoder, params = self.audio
        return audio_features(clip.audio, c.data.fps, encoder, params, context=c.model.audio.context,
                              window_seconds=c.audio.window_seconds)[:self.e.frames]

    def generate(self, params: Any) -> dict[int, np.ndarray]:
        """{clip index: uint8 frames [T, S, S, 3]} of this process's clips, generated with `params`."""
        from emo_jax.sample.sampler import Sampler

        s = self.config.sample
        sampler = Sampler(self.config, params)
        out = {}
        for k in self.mine:
            clip = self.clips[k]
            ref = sampler.reference(self.codec.encode(clip.frames[:1]))
            latents = sampler.sample(ref, self._features(clip), clip.mask, self.e.seed + k, s.ref_scale,
                                     s.audio_scale, clip.signals)
            out[k] = self.codec.decode(latents)
        return out

    def evaluate(self, state, step: int) -> dict[str, float | None]:
        """The measures of the EMA weights in `state` (a TrainState), the same on every process."""
        from emo_jax.train.state import merge

        params = merge(state.params, state.ema)  # the EMA of the trained leaves, the frozen ones as they are
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            # Each process samples its clips on its own devices, from a whole copy of the weights.
            params = multihost_utils.process_allgather(params, tiled=True)
        return self.measure(self.generate(params), step)

    def measure(self, generated: dict[int, np.ndarray], step: int | None = None) -> dict[str, float | None]:
        """Measures of this process's generated clips merged with the other processes'; writes the videos."""
        from emo_jax.eval.clips import continuity, identity_accuracy, loudness_per_frame, mouth_opening, pearson
        from emo_jax.eval.distributed import allgather_stats
        from emo_jax.eval.frechet import frechet_distance_between

        e, f = self.e, self.config.model.clip_frames
        crops = [c.frames[0] for c in self.clips]
        rows = np.full((len(self.clips), 4), np.nan)  # identity, boundary, inside, lip sync per clip
        generated_stats = {name: m.new_stats() for name, m in self.metrics.items()}
        real_stats = {name: m.new_stats() for name, m in self.metrics.items()} if self._real_stats is None else None
        for k, video in generated.items():
            clip = self.clips[k]
            boundary, inside = continuity(video, f)
            identity = identity_accuracy(video, k, crops) if len(crops) > 1 else np.nan
            sync = np.nan
            if e.mouth_colour:
                opening = mouth_opening(video, tuple(e.mouth_colour))
                sync = pearson(opening, loudness_per_frame(clip.audio, self.config.data.fps, len(video)))
            rows[k] = (identity, boundary, inside, sync)
            for name, m in self.metrics.items():
                sides = [(generated_stats[name], video)] + ([(real_stats[name], clip.frames)] if real_stats else [])
                for side, frames in sides:
                    items = m.items(frames)
                    if items:
                        side.add(m.extract(np.stack(items)))
            if step is not None and e.save_videos:
                self._save(step, clip, video)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            # Each clip's row is filled by the one process that generated it, NaN elsewhere.
            gathered = np.asarray(multihost_utils.process_allgather(rows.astype(np.float32)))
            rows = np.where(np.isnan(gathered), 0, gathered).sum(0)
            rows[np.isnan(gathered).all(0)] = np.nan
        result: dict[str, float | None] = {}
        for column, name in enumerate(("identity_accuracy", "boundary_change", "inside_change", "lip_sync")):
            values = rows[:, column]
            result[name] = float(np.nanmean(values)) if np.isfinite(values).any() else None
        if not e.mouth_colour:
            del result["lip_sync"]
        if real_stats is not None:
            self._real_stats = {name: allgather_stats(stats) for name, stats in real_stats.items()}
        for name, stats in generated_stats.items():
            a, b = allgather_stats(stats), self._real_stats[name]
            result[name] = frechet_distance_between(a, b) if min(a.count, b.count) >= 2 else None
        result["clips"] = len(self.clips)
        return result

    def _save(self, step: int, clip: HeldOutClip, video: np.ndarray) -> None:
        from emo_jax.video.io import write_video

        folder = os.path.join(self.workdir, "eval", str(step))
        os.makedirs(folder, exist_ok=True)
        name = clip.name.replace("#", "_").replace(os.sep, "_")
        write_video(os.path.join(folder, f"{name}.mp4"), np.concatenate([video, clip.frames], axis=2),
                    self.config.data.fps, audio=clip.audio)
