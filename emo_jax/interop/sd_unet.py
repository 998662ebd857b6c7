"""Stable Diffusion 1.5 UNet weights (diffusers folder layout) into the ReferenceNet and the backbone."""
from __future__ import annotations

import json
import logging
import os
from typing import Mapping

from flax import traverse_util

from emo_jax.interop.keys import flax_path_to_torch, torch_state_to_flax
from emo_jax.interop.torch_io import CheckpointError, find_weights_file, load_state_dict
from emo_jax.models.unet_config import UNetConfig
from emo_jax.params import group_of

log = logging.getLogger(__name__)

_ATTN_DOWN, _ATTN_UP = "CrossAttnDownBlock2D", "CrossAttnUpBlock2D"


def unet_folder(path: str) -> str:
    """Accepts an SD pipeline folder (with unet/) or the unet/ folder itself."""
    sub = os.path.join(path, "unet")
    folder = sub if os.path.isdir(sub) else path
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise CheckpointError(f"{path!r} holds no diffusers UNet (no config.json in it or in its unet/ folder); "
                              "pass a local Stable Diffusion 1.5 folder in diffusers layout")
    return folder


def unet_config_from_diffusers(folder: str, **overrides) -> UNetConfig:
    """The sd-mode UNetConfig of a diffusers UNet2DConditionModel config.json."""
    path = os.path.join(unet_folder(folder), "config.json")
    with open(path) as f:
        c = json.load(f)
    down = tuple(c["down_block_types"])
    unknown = [b for b in down + tuple(c["up_block_types"]) if b not in (_ATTN_DOWN, _ATTN_UP, "DownBlock2D", "UpBlock2D")]
    if unknown or c.get("use_linear_projection") or c.get("mid_block_type", "UNetMidBlock2DCrossAttn") != "UNetMidBlock2DCrossAttn":
        raise CheckpointError(f"{path}: only SD1.5-shaped UNets are supported (got blocks {unknown or down}, "
                              f"use_linear_projection={c.get('use_linear_projection')})")
    heads = c.get("attention_head_dim", 8)
    if not isinstance(heads, int):
        raise CheckpointError(f"{path}: per-block attention_head_dim {heads} is not supported; SD1.5 uses one value")
    fields = dict(
        in_channels=c["in_channels"], out_channels=c["out_channels"],
        block_out_channels=tuple(c["block_out_channels"]), attention_levels=tuple(b == _ATTN_DOWN for b in down),
        layers_per_block=c["layers_per_block"], heads=heads, norm_groups=c["norm_num_groups"],
        cross_attention_dim=c["cross_attention_dim"],
    )
    fields.update(overrides)
    return UNetConfig(**fields)


def load_unet_state(folder: str) -> tuple[dict, str]:
    """(state dict, file path) of the diffusers UNet in `folder`."""
    path = find_weights_file(unet_folder(folder), ("diffusion_pytorch_model", "model"))
    return load_state_dict(path), path


def import_unet_params(template: Mapping, state: Mapping, source: str, what: str = "unet") -> tuple[dict, list[str]]:
    """Fills a UNet parameter tree from an SD state dict; returns (params, keys kept at their init).

    Every SD layer the model has must be in the state (a missing one is an error naming it); the layers SD does
    not have (EMO's reference/audio/temporal layers) keep their initial values and are reported.
    """
    params, missing, unused = torch_state_to_flax(state, template, source)
    top = what if what in ("reference_net", "backbone") else "backbone"  # an sd-mode UNet is the backbone
    emo_only = {flax_path_to_torch(p) for p in traverse_util.flatten_dict(template)
                if not group_of((top,) + p).from_sd}
    not_sd = [k for k in missing if k in emo_only]
    truly_missing = [k for k in missing if k not in emo_only]
    if truly_missing:
        raise CheckpointError(f"{source}: {len(truly_missing)} keys the {what} needs are missing, e.g. "
                              f"{truly_missing[:5]}; is this an SD1.5-shaped UNet checkpoint?")
    if not_sd:
        log.info("%s: %d %s parameters are not in SD and keep their initial values", source, len(not_sd), what)
    if unused:
        log.info("%s: %d checkpoint keys unused by the %s (e.g. %s)", source, len(unused), what, unused[:3])
    return params, not_sd


def init_from_sd(params: Mapping, folder: str) -> tuple[dict, dict[str, list[str]]]:
    """SD1.5 weights into both the ReferenceNet and the backbone of an EMO parameter tree.

    Returns (params, kept): per UNet, the parameters SD has no counterpart for (EMO's own layers), which keep
    the values they had. SD's text cross-attention (attn2) has no place in EMO's UNets and is left unused.
    """
    state, path = load_unet_state(folder)
    out, kept = dict(params), {}
    for name in ("reference_net", "backbone"):
        out[name], kept[name] = import_unet_params(params[name], state, path, what=name)
    return out, kept
