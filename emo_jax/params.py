"""The model's top-level modules as groups of one parameter tree: counts, and trainable masks per stage."""
from __future__ import annotations

from typing import Mapping

import jax
import numpy as np
from flax import traverse_util

MODULES = ("vae", "reference_net", "backbone", "audio_proj", "audio_attention", "temporal", "face_locator", "speed")

# What each training stage updates (EMO paper, section 3.3): stage 1 learns the image model; stage 2 adds the
# temporal and audio layers and trains everything; stage 3 trains only temporal + speed layers, keeping the audio
# layers fixed on purpose.
STAGE_TRAINABLE = {
    0: ("backbone",),
    1: ("reference_net", "backbone", "face_locator"),
    2: ("reference_net", "backbone", "face_locator", "audio_proj", "audio_attention", "temporal"),
    3: ("temporal", "speed"),
}


def module_of(path: tuple[str, ...]) -> str:
    """Which top-level module a parameter path belongs to."""
    top = path[0]
    if top in ("reference_net", "audio_proj", "face_locator", "vae"):
        return top
    if top == "speed_encoder":
        return "speed"
    if top == "backbone":
        inner = "/".join(path)
        if "speed_attn" in inner or "speed_norm" in inner:
            return "speed"
        if "motion_modules" in inner:
            return "temporal"
        if "audio_attn" in inner or "norm_audio" in inner:
            return "audio_attention"
        return "backbone"
    raise ValueError(f"parameter path {'/'.join(path)} belongs to no known module")


def count_by_module(params: Mapping) -> dict[str, int]:
    """Parameter counts per module (shapes suffice, so eval_shape outputs work)."""
    counts: dict[str, int] = {}
    for path, leaf in traverse_util.flatten_dict(params).items():
        name = module_of(path)
        counts[name] = counts.get(name, 0) + int(np.prod(leaf.shape))
    return counts


def trainable_mask(params: Mapping, modules: tuple[str, ...]):
    """A pytree of bools like params: True where the parameter's module is in `modules`."""
    unknown = set(modules) - set(MODULES)
    if unknown:
        raise ValueError(f"unknown trainable modules {sorted(unknown)}; choose from {MODULES}")
    flat = traverse_util.flatten_dict(params)
    mask = {path: module_of(path) in modules for path in flat}
    return jax.tree.unflatten(jax.tree.structure(params), [mask[p] for p in flat])
