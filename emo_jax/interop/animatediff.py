"""AnimateDiff v2 motion modules (mm_sd_v15_v2 key layout) into the backbone's temporal layers."""
from __future__ import annotations

import dataclasses
import logging
from typing import Mapping

import numpy as np
from flax import traverse_util

from emo_jax.interop.export import PE_KEY, check_positional_buffer
from emo_jax.interop.keys import flax_path_to_torch, torch_state_to_flax
from emo_jax.interop.torch_io import CheckpointError, load_state_dict
from emo_jax.params import module_of

log = logging.getLogger(__name__)


@dataclasses.dataclass
class AnimateDiffReport:
    """What import_animatediff did, key by key (AnimateDiff spelling)."""

    source: str
    loaded: list[str]  # checkpoint tensors copied into the motion modules
    positions: list[str]  # pos_encoder.pe buffers, checked against the sinusoidal table the model computes
    kept_init: list[str]  # motion-module parameters AnimateDiff does not have (EMO's speed layers)
    notes: list[str]


def import_animatediff(state_or_path: str | Mapping[str, np.ndarray], params: Mapping) -> tuple[dict, AnimateDiffReport]:
    """Fills every backbone motion module from an AnimateDiff v2 checkpoint; returns (params, report).

    Every AnimateDiff key must find its place and every motion module must be in the checkpoint; a wrong shape
    or an unknown key is an error naming it. Replaced leaves are host numpy arrays; all others are passed through.
    """
    if isinstance(state_or_path, str):
        source, state = state_or_path, load_state_dict(state_or_path)
    else:
        source, state = "<AnimateDiff state dict>", dict(state_or_path)
    if "backbone" not in params:
        raise ValueError("params have no 'backbone'; pass the full EMO parameter tree")
    backbone = traverse_util.flatten_dict(dict(params["backbone"]))
    temporal = {p: v for p, v in backbone.items() if module_of(("backbone",) + p) == "temporal"}
    if not temporal:
        raise ValueError("this model has no motion modules (model.unet.temporal is False); AnimateDiff weights "
                         "belong to a stage-2 or stage-3 config")
    kept = sorted(flax_path_to_torch(p) for p in backbone if module_of(("backbone",) + p) == "speed")

    new, missing, unused = torch_state_to_flax(state, traverse_util.unflatten_dict(temporal), source)
    if missing:
        hint = (" AnimateDiff v1 checkpoints (mm_sd_v15) have no mid-block motion module; use v2 (mm_sd_v15_v2)."
                if all(k.startswith("mid_block.") for k in missing) else
                " Is it an AnimateDiff motion module for an SD1.5-shaped UNet of this config's widths?")
        raise CheckpointError(f"{source}: {len(missing)} motion-module keys are missing, e.g. {missing[:4]}.{hint}")
    widths = {flax_path_to_torch(p).split(".temporal_transformer.")[0]: v.shape[-1]
              for p, v in temporal.items() if p[-2:] == ("proj_in", "kernel")}
    positions, notes = [], []
    for key in unused:
        pe = PE_KEY.match(key)
        if not pe or pe[1] not in widths:
            raise CheckpointError(f"{source}: key {key!r} has no place in this model's motion modules; is the "
                                  "checkpoint for a UNet of another shape (e.g. SDXL), or not a motion module?")
        check_positional_buffer(key, np.asarray(state[key]), widths[pe[1]], source)
        positions.append(key)
    lengths = sorted({int(np.shape(state[k])[1]) for k in positions})
    if lengths:
        notes.append(f"positional tables of length {lengths} match the computed sinusoidal positions")
    if kept:
        notes.append(f"{len(kept)} speed-layer tensors are not in AnimateDiff and keep their values")

    flat = traverse_util.flatten_dict(dict(params))
    flat.update({("backbone",) + p: v for p, v in traverse_util.flatten_dict(new).items()})
    report = AnimateDiffReport(source, sorted(set(state) - set(positions)), positions, kept, notes)
    log.info("%s: %d motion-module tensors loaded, %d positional tables checked, %d speed tensors kept",
             source, len(report.loaded), len(positions), len(kept))
    return traverse_util.unflatten_dict(flat), report
