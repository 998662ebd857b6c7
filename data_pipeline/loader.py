"""Grain input pipeline: segment records -> per-process shard -> seeded shuffle -> stage clips -> batches.

Records come from emo-prepare's ArrayRecord shards (shard_records) or from the TFDS builder's array_record
files (data_pipeline.tfds_builder.tfds_records); everything after that is the same pipeline.

Elements (numpy; frames stay uint8 RGB so the host sends 4x fewer bytes; the model scales them):
  stage 1:    target [S, S, 3], reference [S, S, 3] (same segment, >= reference_margin frames away),
              face_mask [S, S] (the target's face box)
  stages 2-3: motion [n, S, S, 3] and target [f, S, S, 3] (n + f contiguous frames), reference [S, S, 3]
              (a frame outside the clip when the segment has one), face_mask [S, S] (union of the target
              frames' boxes), audio [round((f + 2m) * sr / fps)] for the target frames with m = context on each
              side (zero-padded past the segment), and each per-frame signal the record has (schema.FRAME_SIGNALS:
              speed [f]) for the target frames.
Records of schema v2 that carry them add (float32):
  latents     stage 1: target_latent, reference_latent [h, w, C] of the frames above;
              stages 2-3: motion_latents [n, h, w, C], target_latents [f, h, w, C], reference_latent [h, w, C]
  features    stages 2-3: audio_features [f, 2m + 1, L, D]: each target frame's wav2vec features with m frames
              on each side; past the segment's ends the edge frame repeats (emo_jax.audio.features.add_context
              over the segment, so context inside the segment is real audio even beyond the clip)
A batch stacks elements on a new leading axis. The iterator's get_state()/set_state() make it checkpointable.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Sequence

import grain
from absl import flags
import numpy as np

from data_pipeline.crop import union_mask
from data_pipeline.schema import FRAME_SIGNALS, SegmentRecord, decode_jpeg, decode_record


@dataclasses.dataclass(frozen=True)
class LoaderConfig:
    """Input pipeline settings for one training stage."""

    stage: int
    batch_size: int
    seed: int = 0
    motion_frames: int = 4
    clip_frames: int = 12
    reference_margin: int = 15  # stage 1: reference at least 0.5 s (at 30 fps) from the target
    context: int = 2  # m: audio context on each side of the target frames
    read_threads: int = 2
    workers: int = 0  # > 0: decode in that many prefetch processes

    @classmethod
    def from_config(cls, config, batch_size: int) -> "LoaderConfig":
        """The settings a training config implies, each field named as the config names it (model.motion_frames,
        model.clip_frames, model.audio.context, data.reference_margin, data.workers)."""
        m, d = config.model, config.data
        return cls(stage=config.train.stage, batch_size=batch_size, seed=config.seed, motion_frames=m.motion_frames,
                   clip_frames=m.clip_frames, context=m.audio.context, reference_margin=d.reference_margin,
                   workers=d.workers)

    def validate(self) -> None:
        """Raises ValueError naming the setting that cannot work."""
        if self.stage not in (1, 2, 3):
            raise ValueError(f"stage must be 1, 2 or 3, got {self.stage}")
        if self.batch_size < 1 or self.motion_frames < 0 or self.clip_frames < 1 or self.context < 0:
            raise ValueError(f"batch_size and clip_frames must be >= 1, motion_frames and context >= 0: {self}")


def read_manifest(prepared_dir: str) -> dict:
    """An emo-prepare output folder's manifest.json (its settings under "config")."""
    manifest_path = os.path.join(prepared_dir, "manifest.json")
    if not os.path.isfile(manifest_path):
        raise ValueError(f"{prepared_dir!r} has no manifest.json; point at an emo-prepare --output folder")
    with open(manifest_path, encoding="utf-8") as f:
        return json.load(f)


def shard_paths(prepared_dir: str) -> list[str]:
    """The shard files listed in an emo-prepare output folder's manifest.json."""
    shards = read_manifest(prepared_dir)["shards"]
    if not shards:
        raise ValueError(f"{prepared_dir!r} holds no segments (see the skipped inputs in its manifest.json)")
    return [os.path.join(prepared_dir, s) for s in shards]


def shard_records(paths: Sequence[str]) -> grain.MapDataset:
    """The serialised segment records of emo-prepare shards, in shard order."""
    return grain.MapDataset.source(grain.sources.ArrayRecordDataSource(list(paths)))


def segment_dataset(
    records: grain.MapDataset, seed: int, process_index: int = 0, process_count: int = 1
) -> grain.MapDataset:
    """This process's segments, reshuffled every epoch, repeated forever, decoded to SegmentRecord.

    Each process keeps every process_count-th segment from process_index on, after cutting the total to a
    multiple of process_count, so processes hold disjoint sets of equal size and their epochs stay in step.
    """
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} must be in [0, process_count={process_count})")
    ds = records
    per_process = len(ds) // process_count
    if per_process == 0:
        raise ValueError(f"{len(ds)} segments cannot feed {process_count} processes; prepare more data")
    ds = ds[process_index : per_process * process_count : process_count]
    return ds.shuffle(seed=seed).repeat(None).map(decode_record)


def _frame(record: SegmentRecord, t: int) -> np.ndarray:
    return decode_jpeg(record.frames_jpeg[t])


def _audio_span(record: SegmentRecord, first: int, frames: int) -> np.ndarray:
    """Audio of `frames` frames from frame `first` (may be negative or run past the end: zeros there)."""
    per_frame = record.audio_sample_rate / record.fps
    start, length = round(first * per_frame), round(frames * per_frame)
    out = np.zeros(length, np.float32)
    lo, hi = max(start, 0), min(start + length, len(record.audio))
    if hi > lo:
        out[lo - start : hi - start] = record.audio[lo:hi]
    return out


def _other_frame(rng: np.random.Generator, num_frames: int, lo: int, hi: int) -> int:
    """A frame index outside [lo, hi), uniformly; any frame when [lo, hi) covers the whole segment."""
    outside = num_frames - (hi - lo)
    if outside <= 0:
        return int(rng.integers(num_frames))
    k = int(rng.integers(outside))
    return k if k < lo else k + (hi - lo)


class ClipSampler:
    """Draws one training example for the configured stage from a segment (a grain random map)."""

    def __init__(self, cfg: LoaderConfig):
        self.cfg = cfg

    def __call__(self, record: SegmentRecord, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return self._image(record, rng) if self.cfg.stage == 1 else self._video(record, rng)

    def _image(self, record: SegmentRecord, rng: np.random.Generator) -> dict[str, np.ndarray]:
        margin, n = self.cfg.reference_margin, record.num_frames
        if n <= margin:
            raise ValueError(f"segment {record.source}#{record.segment_index} has {n} frames, too few for "
                             f"reference_margin {margin}; lower reference_margin")
        # Only targets with a frame >= margin away on some side; for n > 2 * margin that is every frame.
        target = int(rng.choice([t for t in range(n) if t >= margin or t <= n - 1 - margin]))
        reference = _other_frame(rng, n, max(0, target - margin + 1), min(n, target + margin))
        out = {
            "target": _frame(record, target),
            "reference": _frame(record, reference),
            "face_mask": union_mask(record.face_boxes[target : target + 1], record.size),
        }
        if record.latents is not None:
            out["target_latent"] = record.latents[target].astype(np.float32)
            out["reference_latent"] = record.latents[reference].astype(np.float32)
        return out

    def _video(self, record: SegmentRecord, rng: np.random.Generator) -> dict[str, np.ndarray]:
        cfg, n = self.cfg, record.num_frames
        length = cfg.motion_frames + cfg.clip_frames
        if n < length:
            raise ValueError(f"segment {record.source}#{record.segment_index} has {n} frames, fewer than "
                             f"motion_frames + clip_frames = {length}; prepare longer segments")
        start = int(rng.integers(n - length + 1))
        first_target, m = start + cfg.motion_frames, cfg.context
        frames = np.stack([_frame(record, t) for t in range(start, start + length)])
        reference = _other_frame(rng, n, start, start + length)
        out = {
            "motion": frames[: cfg.motion_frames],
            "target": frames[cfg.motion_frames :],
            "reference": _frame(record, reference),
            "face_mask": union_mask(record.face_boxes[first_target : start + length], record.size),
            "audio": _audio_span(record, first_target - m, cfg.clip_frames + 2 * m),
        }
        for name in FRAME_SIGNALS:
            if getattr(record, name) is not None:
                out[name] = getattr(record, name)[first_target : start + length]
        if record.audio_features is not None:
            # Row k: target frame k with its m neighbours on each side, the segment's edge frame repeated past it.
            around = np.clip(np.arange(first_target - m, first_target + cfg.clip_frames + m), 0, n - 1)
            windows = around[np.arange(cfg.clip_frames)[:, None] + np.arange(2 * m + 1)[None, :]]
            out["audio_features"] = record.audio_features[windows].astype(np.float32)
        if record.latents is not None:
            out["motion_latents"] = record.latents[start:first_target].astype(np.float32)
            out["target_latents"] = record.latents[first_target : start + length].astype(np.float32)
            out["reference_latent"] = record.latents[reference].astype(np.float32)
        return out


def make_dataset(
    records: grain.MapDataset, cfg: LoaderConfig, process_index: int = 0, process_count: int = 1
) -> grain.IterDataset:
    """Batches for one process from serialised records; iter() it, checkpoint it with get_state()/set_state()."""
    cfg.validate()
    ds = segment_dataset(records, cfg.seed, process_index, process_count)
    # The clip seed differs from the shuffle seed so clip choice and order do not correlate.
    ds = ds.random_map(ClipSampler(cfg), seed=cfg.seed + 1).batch(cfg.batch_size, drop_remainder=True)
    iterable = ds.to_iter_dataset(grain.ReadOptions(num_threads=cfg.read_threads, prefetch_buffer_size=2))
    if cfg.workers > 0:
        # mp_prefetch reads grain's absl flags; a program not started through absl.app (pytest, a plain
        # script) has not parsed them, and their defaults are what we want.
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        iterable = iterable.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.workers))
    return iterable
