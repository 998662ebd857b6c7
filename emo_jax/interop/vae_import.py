"""Loading a diffusers `vae/` folder (config.json + weights) into the Flax AutoencoderKL."""
from __future__ import annotations

import os
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from emo_jax.errors import CheckpointError
from emo_jax.interop.keys import torch_state_to_flax, zeros_template
from emo_jax.interop.torch_io import StateDict, find_weights_file, load_state_dict
from emo_jax.models.vae import AutoencoderKL, VAEConfig
from emo_jax.paths import require_folder

# Checkpoints saved before diffusers renamed its attention layers (SD1.5's VAE files among them) still use
# query/key/value/proj_attn; diffusers renames them on load, and so do we.
_DEPRECATED_ATTENTION = re.compile(r"^(.*\.attentions\.\d+)\.(query|key|value|proj_attn)\.(weight|bias)$")
_NEW_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def rename_deprecated_attention_keys(state: StateDict) -> StateDict:
    """query/key/value/proj_attn -> to_q/to_k/to_v/to_out.0 inside attention blocks; other keys unchanged."""
    out = {}
    for key, value in state.items():
        m = _DEPRECATED_ATTENTION.match(key)
        out[f"{m[1]}.{_NEW_NAMES[m[2]]}.{m[3]}" if m else key] = value
    return out


def param_template(module: AutoencoderKL) -> dict:
    """Parameter tree of the right shapes and dtypes without computing an initialisation."""
    size = module.config.downsample_factor
    dummy = jax.ShapeDtypeStruct((1, size, size, module.config.in_channels), jnp.float32)
    return zeros_template(nn.unbox(jax.eval_shape(module.init, jax.random.key(0), dummy))["params"])


def load_vae(folder: str, attention_impl: str = "xla", dtype: Any = jnp.float32,
             ) -> tuple[AutoencoderKL, dict, VAEConfig]:
    """(module, params, config) from a local diffusers AutoencoderKL folder; every VAE key must be present."""
    require_folder(folder, "VAE folder", "pass the vae/ sub-folder of a local diffusers model "
                   "(e.g. <stable-diffusion-v1-5>/vae)", CheckpointError)
    config = VAEConfig.from_diffusers_json(os.path.join(folder, "config.json"))
    weights = find_weights_file(folder, stems=("diffusion_pytorch_model",))
    state = rename_deprecated_attention_keys(load_state_dict(weights))
    module = AutoencoderKL(config, attention_impl=attention_impl, dtype=dtype)
    params, missing, unused = torch_state_to_flax(state, param_template(module), weights)
    if missing:
        raise CheckpointError(
            f"{weights}: {len(missing)} VAE keys missing: {missing}; is the checkpoint complete and made for "
            f"{os.path.join(folder, 'config.json')}?"
        )
    if unused:
        raise CheckpointError(
            f"{weights}: {len(unused)} keys the VAE built from config.json has no place for: {unused}; "
            "config.json and the weights file describe different models"
        )
    return module, jax.device_put(params), config
