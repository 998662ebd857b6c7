"""The one description of a training batch: per training stage, what the step needs, as the loader delivers it
raw (uint8 frames, 16 kHz audio) and, where the records carry them, encoded (VAE latents, wav2vec2 features).

The loader (data_pipeline/loader.py) produces these fields, the trainer checks its first batch against them,
the step reads them by role, and the planner, the benchmarks and the tests build their batches from them.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

import jax
import ml_collections
import numpy as np

from emo_jax.config import model_config
from emo_jax.models.condition import frame_signal_specs, frame_signals


@dataclasses.dataclass(frozen=True)
class Field:
    """One entry of a batch: its name and its per-example shape and dtype (the batch adds a leading axis)."""

    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclasses.dataclass(frozen=True)
class Input:
    """Something the step needs: its raw field and, if it has one, the encoded field that replaces it."""

    raw: Field
    encoded: Field | None = None


# Which config setting each dimension of a raw field follows, for the message when data and config disagree.
_SOURCES = {"target": "data.size (and model.clip_frames)", "motion": "data.size (and model.motion_frames)",
            "reference": "data.size", "face_mask": "data.size",
            "audio": "audio.sample_rate, data.fps, model.clip_frames and model.audio.context"}


def audio_samples(config: ml_collections.ConfigDict) -> int:
    """Raw audio per example: the clip's frames plus m frames of context on each side."""
    m = config.model
    return round((m.clip_frames + 2 * m.audio.context) * config.audio.sample_rate / config.data.fps)


def batch_spec(config: ml_collections.ConfigDict) -> dict[str, Input]:
    """role -> Input for config.train.stage: target, reference, face_mask, and from stage 2 motion, audio and the
    per-frame signals the model reads (EMOConfig.frame_signals: speed in stage 3), each [clip_frames, ...]."""
    m, stage, s = config.model, config.train.stage, config.data.size
    h, c = m.latent_size, m.unet.in_channels
    if stage == 1:
        return {"target": Input(Field("target", (s, s, 3), "uint8"), Field("target_latent", (h, h, c), "float32")),
                "reference": Input(Field("reference", (s, s, 3), "uint8"),
                                   Field("reference_latent", (h, h, c), "float32")),
                "face_mask": Input(Field("face_mask", (s, s), "uint8"))}
    if stage not in (2, 3):
        raise ValueError(f"train.stage {stage} has no training batches; emo-train trains stages 1-3")
    f, n, a = m.clip_frames, m.motion_frames, m.audio
    spec = {
        "target": Input(Field("target", (f, s, s, 3), "uint8"), Field("target_latents", (f, h, h, c), "float32")),
        "motion": Input(Field("motion", (n, s, s, 3), "uint8"), Field("motion_latents", (n, h, h, c), "float32")),
        "reference": Input(Field("reference", (s, s, 3), "uint8"), Field("reference_latent", (h, h, c), "float32")),
        "face_mask": Input(Field("face_mask", (s, s), "uint8")),
        "audio": Input(Field("audio", (audio_samples(config),), "float32"),
                       Field("audio_features", (f, 2 * a.context + 1, a.layers, a.feature_dim), "float32")),
    }
    for name, (shape, dtype) in frame_signal_specs(model_config(config).frame_signals, (f,)).items():
        spec[name] = Input(Field(name, shape, dtype))
    return spec


def chosen_fields(spec: Mapping[str, Input], keys) -> dict[str, Field]:
    """role -> the field the step reads: the encoded one where the batch has it, else the raw one."""
    out = {}
    for role, entry in spec.items():
        field = entry.encoded if entry.encoded is not None and entry.encoded.name in keys else entry.raw
        if field.name not in keys:
            raise ValueError(f"the batches lack {field.name!r} (they have {sorted(keys)}); was the data prepared "
                             "for this training stage?")
        out[role] = field
    return out


def check_batch(spec: Mapping[str, Input], batch: Mapping[str, np.ndarray]) -> dict[str, Field]:
    """The fields the step reads from `batch`, after checking each one's shape and dtype against the config."""
    fields = chosen_fields(spec, batch.keys())
    for role, field in fields.items():
        value = np.asarray(batch[field.name])
        if value.shape[1:] != field.shape or value.dtype != np.dtype(field.dtype):
            source = (_SOURCES.get(role, "model.clip_frames") if field is spec[role].raw else
                      "the model section (latent and feature sizes)")
            raise ValueError(f"batch field {field.name!r} is {value.dtype.name} {value.shape[1:]} per example, the "
                             f"config expects {field.dtype} {field.shape} (from {source}); prepare the data with "
                             "this config's settings or set them to the data's")
    return fields


def abstract_batch(spec: Mapping[str, Input], batch_size: int, encoded: bool = True,
                   sharding: Callable[[int], jax.sharding.Sharding] | None = None) -> dict[str, jax.ShapeDtypeStruct]:
    """A batch of ShapeDtypeStructs, encoded fields where they exist (or raw ones); `sharding(ndim)` places them."""
    out = {}
    for entry in spec.values():
        field = entry.encoded if encoded and entry.encoded is not None else entry.raw
        shape = (batch_size,) + field.shape
        out[field.name] = jax.ShapeDtypeStruct(shape, np.dtype(field.dtype),
                                               sharding=None if sharding is None else sharding(len(shape)))
    return out


def random_batch(spec: Mapping[str, Input], batch_size: int, rng: np.random.Generator,
                 encoded: bool = False) -> dict[str, np.ndarray]:
    """Random values of the right shapes and dtypes (benchmarks and tests): frames 0-255, masks 0/1, per-frame
    signals >= 0 (integer ones 0 or 1), everything else standard normal."""
    out = {}
    for name, s in abstract_batch(spec, batch_size, encoded).items():
        if s.dtype == np.uint8:
            high = 2 if name == "face_mask" else 256
            out[name] = rng.integers(0, high, s.shape, dtype=np.uint8)
        elif np.issubdtype(s.dtype, np.integer):
            out[name] = rng.integers(0, 2, s.shape).astype(s.dtype)
        else:
            value = rng.standard_normal(s.shape).astype(s.dtype)
            out[name] = np.abs(value) if name in frame_signals() else value
    return out
