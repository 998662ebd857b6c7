"""EMO parameters -> PyTorch safetensors under diffusers / AnimateDiff / Hallo key names, and back.

Layout of an export folder (docs/weights.md has the full key map):
    manifest.json                          config, stage, step, dtype, files and their key counts
    reference_net/ , backbone_unet/        diffusers UNet2DConditionModel folders (config.json + weights)
    vae/                                   diffusers AutoencoderKL folder (when VAE parameters are given)
    motion_modules.safetensors             AnimateDiff v2 motion-module keys (pos_encoder.pe buffers included)
    audio_attention.safetensors            EMO's audio cross-attention inside the backbone's transformer blocks
    audio_proj.safetensors, face_locator.safetensors   Hallo's `audioproj.*` / `face_locator.*` names
    speed.safetensors                      speed encoder and the speed attention inside each motion module

diffusers cannot build a UNet2DConditionModel without text cross-attention (its CrossAttn blocks require a
cross_attention_dim), and EMO's ReferenceNet has no output head. The two UNet folders therefore carry "filler"
tensors for the layers diffusers has and the EMO UNet lacks: attn2 with all-zero weights (its output projection is
zero, so attn2 adds exactly 0), norm2 and conv_norm_out as identity norms, and the ReferenceNet's conv_out as zeros.
from_pretrained loads the folder without missing keys and computes exactly what the EMO UNet computes without its
EMO layers; the ReferenceNet's `.sample` is zero by construction (EMO reads its transformer-block features, never
its prediction). The manifest lists every filler key; import_weights checks they still hold their filler values.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util

from emo_jax.build import abstract_params, vae_config
from emo_jax.config import ConfigError, model_config
from emo_jax.interop.keys import flax_path_to_torch, from_torch_layout, to_torch_layout
from emo_jax.interop.torch_io import CheckpointError, load_state_dict, save_state_dict
from emo_jax.models.condition import UNetCondition
from emo_jax.models.temporal import sinusoidal_positions
from emo_jax.models.unet import UNet
from emo_jax.models.unet_config import UNetConfig
from emo_jax.params import GROUPS, group_of

MANIFEST = "manifest.json"
FORMAT = "emo-jax-export/1"
DTYPES = {"float32": np.float32, "float16": np.float16}

# Parameter group -> file, relative to the export folder, and key prefix per top-level module: both from the
# one table in emo_jax.params (Hallo's Net saves its audio projection as `audioproj.*`, its face locator as
# `face_locator.*`; UNet-internal layers keep the UNet-relative key, as AnimateDiff does).
FILES = {g.name: g.export_file for g in GROUPS}
PREFIXES = {top: g.key_prefix for g in GROUPS for top in g.tops}
PE_KEY = re.compile(r"^(.*\.motion_modules\.\d+)\.temporal_transformer\.transformer_blocks\.\d+\."
                    r"attention_blocks\.\d+\.pos_encoder\.pe$")


def location(path: tuple[str, ...]) -> tuple[str, str]:
    """(file, torch key) of a Flax parameter path of the EMO tree (top level reference_net, backbone, ...)."""
    return group_of(path).export_file, PREFIXES[path[0]] + flax_path_to_torch(path[1:])


def _leaf_template(abstract: Mapping) -> dict:
    """Shape/dtype template whose leaves are zero-cost numpy views (what keys.torch_state_to_flax expects)."""
    return jax.tree.map(lambda s: np.broadcast_to(np.zeros((), s.dtype), s.shape), abstract)


def _emo_template(config: ml_collections.ConfigDict, with_vae: bool) -> dict:
    if config.model.mode != "emo":
        raise ConfigError(f"export/import covers EMO models (model.mode 'emo'), not {config.model.mode!r}")
    abstract = abstract_params(config)
    if not with_vae:
        abstract.pop("vae", None)
    elif "vae" not in abstract:
        raise ConfigError(f"config variant {config.get('variant')!r} has no VAE section, but VAE weights were given")
    return abstract


# ---------------------------------------------------------------------------------------------- diffusers configs


def unet_diffusers_config(u: UNetConfig, sample_size: int) -> dict:
    """diffusers UNet2DConditionModel config.json of an EMO UNet's spatial part (SD1.5's fixed choices spelt out)."""
    # Reference cross-attention reads same-level ReferenceNet tokens, so its context width is the level's width:
    # diffusers takes one cross_attention_dim per down block (mirrored for the up blocks, last one for the mid block).
    cross = list(u.block_out_channels) if u.reference_mode == "cross" else u.cross_attention_dim
    return {
        "_class_name": "UNet2DConditionModel",
        "sample_size": sample_size, "in_channels": u.in_channels, "out_channels": u.out_channels,
        "center_input_sample": False, "flip_sin_to_cos": True, "freq_shift": 0,
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in u.attention_levels],
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(u.attention_levels)],
        "only_cross_attention": False, "block_out_channels": list(u.block_out_channels),
        "layers_per_block": u.layers_per_block, "downsample_padding": 1, "mid_block_scale_factor": 1,
        "act_fn": "silu", "norm_num_groups": u.norm_groups, "norm_eps": 1e-5, "cross_attention_dim": cross,
        "attention_head_dim": u.heads, "use_linear_projection": False, "upcast_attention": False,
    }


def vae_diffusers_config(config: ml_collections.ConfigDict) -> dict:
    """diffusers AutoencoderKL config.json of config.vae (read back by VAEConfig.from_diffusers_json)."""
    v = vae_config(config)
    levels = len(v.block_out_channels)
    return {
        "_class_name": "AutoencoderKL", "in_channels": v.in_channels, "out_channels": v.out_channels,
        "down_block_types": ["DownEncoderBlock2D"] * levels, "up_block_types": ["UpDecoderBlock2D"] * levels,
        "block_out_channels": list(v.block_out_channels), "layers_per_block": v.layers_per_block,
        "act_fn": "silu", "latent_channels": v.latent_channels, "norm_num_groups": v.norm_groups,
        "sample_size": config.model.latent_size * v.downsample_factor, "scaling_factor": v.scaling_factor,
    }


def unet_fillers(u: UNetConfig, present: set[str], dtype: Any) -> dict[str, np.ndarray]:
    """Tensors a diffusers UNet of this shape has and the EMO UNet's spatial part (keys `present`) lacks."""
    sd_shaped = dataclasses.replace(u, text_cross_attention=True, reference_mode=None, audio_attention=False,
                                    temporal=False, speed_attention=False)
    size = u.downsample_factor
    abstract = jax.eval_shape(UNet(sd_shaped).init, jax.random.PRNGKey(0), jnp.zeros((1, size, size, u.in_channels)),
                              jnp.zeros((1,)), UNetCondition(text=jnp.zeros((1, 1, u.cross_attention_dim))))
    fillers = {}
    for path, leaf in traverse_util.flatten_dict(nn.unbox(abstract["params"])).items():
        key = flax_path_to_torch(path)
        if key not in present:
            shape = to_torch_layout(path[-1], np.broadcast_to(np.zeros((), np.bool_), leaf.shape)).shape
            fillers[key] = np.full(shape, 1.0 if path[-1] == "scale" else 0.0, dtype)
    return fillers


def _is_filler_value(key: str, value: np.ndarray) -> bool:
    want = 1.0 if re.search(r"norm[^.]*\.weight$", key) else 0.0
    return bool(np.all(np.asarray(value) == want))


# ------------------------------------------------------------------------------------------------------- export


def export_weights(config: ml_collections.ConfigDict, params: Mapping, out_dir: str, dtype: str = "float32",
                   vae_params: Mapping | None = None, stage: int | None = None, step: int | None = None) -> dict:
    """Writes the export folder (see the module docstring) and returns its manifest."""
    if dtype not in DTYPES:
        raise ValueError(f"export dtype {dtype!r} is not supported; choose one of {sorted(DTYPES)}")
    # Trees straight from model.init carry logical-axis boxes; device_get gathers sharded arrays to the host.
    tree = dict(jax.device_get(nn.unbox(dict(params))))
    if vae_params is not None:
        if "vae" in tree:
            raise ValueError("VAE parameters given twice: both as params['vae'] and as vae_params")
        tree["vae"] = jax.device_get(nn.unbox(vae_params))
    template = traverse_util.flatten_dict(_emo_template(config, "vae" in tree))
    flat = traverse_util.flatten_dict(tree)
    extra = sorted("/".join(p) for p in flat.keys() - template.keys())
    absent = sorted("/".join(p) for p in template.keys() - flat.keys())
    if extra or absent:
        raise ValueError(f"the parameters do not match config variant {config.get('variant')!r}: missing {absent[:5]}"
                         f", unexpected {extra[:5]}; export with the config the parameters were trained with")
    np_dtype = DTYPES[dtype]
    states: dict[str, dict[str, np.ndarray]] = {}
    for path, value in flat.items():
        value = np.asarray(value)
        if value.shape != template[path].shape:
            raise ValueError(f"parameter {'/'.join(path)} has shape {value.shape}, the config expects "
                             f"{template[path].shape}")
        file, key = location(path)
        states.setdefault(file, {})[key] = to_torch_layout(path[-1], value).astype(np_dtype)

    mc = model_config(config)
    size = config.model.latent_size
    folders = {"reference_net": mc.reference_unet, "backbone": mc.unet}
    fillers: dict[str, list[str]] = {}
    os.makedirs(out_dir, exist_ok=True)
    if os.path.exists(os.path.join(out_dir, MANIFEST)):  # until the new one is written, the folder is incomplete
        os.remove(os.path.join(out_dir, MANIFEST))
    for name, ucfg in folders.items():
        file = FILES[name]
        pad = unet_fillers(ucfg, set(states[file]), np_dtype)
        states[file].update(pad)
        fillers[file] = sorted(pad)
        _write_json(os.path.join(out_dir, os.path.dirname(file), "config.json"), unet_diffusers_config(ucfg, size))
    if "vae" in tree:
        _write_json(os.path.join(out_dir, "vae", "config.json"), vae_diffusers_config(config))
    if FILES["temporal"] in states:
        states[FILES["temporal"]].update(_positional_buffers(mc.unet, states[FILES["temporal"]], np_dtype))

    for file, state in states.items():
        os.makedirs(os.path.join(out_dir, os.path.dirname(file)), exist_ok=True)
        save_state_dict(state, os.path.join(out_dir, file), metadata={"format": "pt"})
    manifest = {
        "format": FORMAT,
        "config": json.loads(config.to_json_best_effort()),
        "stage": int(config.train.stage if stage is None else stage),
        "step": None if step is None else int(step),
        "dtype": dtype,
        "files": {file: {"module": next(m for m, f in FILES.items() if f == file), "keys": len(state),
                         "filler_keys": fillers.get(file, [])}
                  for file, state in sorted(states.items())},
    }
    _write_json(os.path.join(out_dir, MANIFEST), manifest)  # last: a folder with a manifest is complete
    return manifest


def _positional_buffers(u: UNetConfig, motion_state: Mapping[str, np.ndarray], dtype: Any) -> dict[str, np.ndarray]:
    """AnimateDiff's `pos_encoder.pe` buffers [1, max_len, C], so the file is a complete AnimateDiff state dict."""
    out = {}
    for key, value in motion_state.items():
        m = re.match(r"^(.*\.attention_blocks\.\d+)\.to_q\.weight$", key)
        if m:
            out[f"{m[1]}.pos_encoder.pe"] = sinusoidal_positions(u.temporal_max_len, value.shape[0])[None].astype(dtype)
    return out


def _write_json(path: str, obj: Any) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------------- import


def check_positional_buffer(key: str, pe: np.ndarray, width: int, source: str) -> None:
    """An AnimateDiff `pos_encoder.pe` buffer must be the sinusoidal table this model computes itself."""
    if pe.ndim != 3 or pe.shape[0] != 1 or pe.shape[2] != width:
        raise CheckpointError(f"{source}: {key!r} has shape {tuple(pe.shape)}, expected (1, max_len, {width})")
    want = sinusoidal_positions(pe.shape[1], width)
    err = float(np.max(np.abs(pe[0].astype(np.float32) - want)))
    if err > 1e-3:  # fp16 storage rounds by up to 5e-4; anything larger is a different encoding
        raise CheckpointError(f"{source}: {key!r} differs from AnimateDiff's sinusoidal positions by {err:.3g}; "
                              "this model computes those positions and cannot carry other (e.g. learned) ones")


def read_manifest(out_dir: str) -> dict:
    path = os.path.join(out_dir, MANIFEST)
    if not os.path.isfile(path):
        raise CheckpointError(f"{out_dir!r} has no {MANIFEST}; pass a folder written by emo-export / export_weights")
    with open(path) as f:
        manifest = json.load(f)
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format {manifest.get('format')!r} is not {FORMAT!r}")
    return manifest


def import_weights(out_dir: str, config: ml_collections.ConfigDict) -> dict:
    """The Flax parameter tree (with 'vae' when the folder has one) of an export folder, as float32 numpy."""
    manifest = read_manifest(out_dir)
    files = manifest["files"]
    template = traverse_util.flatten_dict(_leaf_template(_emo_template(config, FILES["vae"] in files)))
    wanted: dict[str, dict[str, tuple]] = {}
    for path in template:
        file, key = location(path)
        wanted.setdefault(file, {})[key] = path
    missing_files = sorted(set(wanted) - set(files))
    if missing_files:
        raise CheckpointError(f"{out_dir}: the config describes layers stored in {missing_files}, which the export "
                              f"does not have (exported at stage {manifest['stage']}); pass the config it was "
                              "exported with")
    flat = {}
    for file, info in files.items():
        source = os.path.join(out_dir, file)
        state = load_state_dict(source)
        if len(state) != info["keys"]:
            raise CheckpointError(f"{source} holds {len(state)} tensors, the manifest says {info['keys']}")
        keys = wanted.get(file, {})
        for key, path in keys.items():
            if key not in state:
                raise CheckpointError(f"{source}: key {key!r} is missing; the config expects it")
            value = from_torch_layout(path[-1], np.asarray(state[key]))
            if value.shape != template[path].shape:
                raise CheckpointError(f"{source}: key {key!r} has shape {tuple(state[key].shape)}, the config "
                                      f"expects a tensor that becomes {template[path].shape}")
            flat[path] = value.astype(template[path].dtype)
        _check_leftovers(source, state, set(keys), set(info["filler_keys"]))
    return traverse_util.unflatten_dict(flat)


def _check_leftovers(source: str, state: Mapping[str, np.ndarray], used: set[str], fillers: set[str]) -> None:
    """Keys the model has no place for must be untouched fillers or AnimateDiff's positional tables."""
    for key in sorted(set(state) - used):
        pe = PE_KEY.match(key)
        if key in fillers:
            if not _is_filler_value(key, state[key]):
                raise CheckpointError(f"{source}: {key!r} was exported as a filler (a layer diffusers has and EMO "
                                      "does not) but now holds other values, which this model cannot represent")
        elif pe and f"{pe[1]}.temporal_transformer.proj_in.weight" in state:
            width = state[f"{pe[1]}.temporal_transformer.proj_in.weight"].shape[0]
            check_positional_buffer(key, np.asarray(state[key]), width, source)
        else:
            raise CheckpointError(f"{source}: key {key!r} has no place in the model the config describes; "
                                  "pass the config the export was made with")
