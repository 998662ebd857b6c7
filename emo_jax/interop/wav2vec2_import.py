"""Loading a local Hugging Face wav2vec2 folder (config.json + weights) into the Flax encoder.

Keys follow the one torch <-> Flax rule (emo_jax.interop.keys). A transformers checkpoint adds two things first
undone here: the `wav2vec2.` prefix of its ForCTC / ForPreTraining heads, and the weight norm of the positional
conv, folded into the one effective weight the Flax encoder holds.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from emo_jax.audio.wav2vec2 import Wav2Vec2Config, Wav2Vec2Model
from emo_jax.errors import CheckpointError
from emo_jax.interop.keys import torch_state_to_flax, zeros_template
from emo_jax.interop.torch_io import StateDict, find_weights_file, load_state_dict

logger = logging.getLogger(__name__)

# Heads of Wav2Vec2ForCTC / ForPreTraining / classifiers: present in many checkpoints, not part of the encoder.
_HEAD_PREFIXES = ("lm_head.", "quantizer.", "project_hid.", "project_q.", "masked_spec_embed", "projector.", "classifier.")
_POS_CONV = "encoder.pos_conv_embed.conv."


def _pos_conv_weight(sd: StateDict, path: str) -> np.ndarray:
    """The positional conv's effective weight: weight norm (over all axes but the kernel axis) folded in."""
    plain = _POS_CONV + "weight"
    if plain in sd:
        return sd.pop(plain)
    for g_key, v_key in (
        (_POS_CONV + "weight_g", _POS_CONV + "weight_v"),
        (_POS_CONV + "parametrizations.weight.original0", _POS_CONV + "parametrizations.weight.original1"),
    ):
        if g_key in sd and v_key in sd:
            g = sd.pop(g_key).astype(np.float64)
            v = sd.pop(v_key).astype(np.float64)
            if g.shape != (1, 1, v.shape[2]):
                raise CheckpointError(f"{path}: {g_key!r} has shape {g.shape}, expected (1, 1, {v.shape[2]})")
            return (g * v / np.sqrt(np.square(v).sum(axis=(0, 1), keepdims=True))).astype(np.float32)
    raise CheckpointError(
        f"{path}: missing the positional conv weight: expected {_POS_CONV}weight_g/weight_v or "
        f"{_POS_CONV}parametrizations.weight.original0/original1"
    )


def params_from_state_dict(sd: StateDict, config: Wav2Vec2Config, path: str = "<state dict>") -> dict[str, Any]:
    """Flax params {'params': ...} from a transformers wav2vec2 state dict; `path` names the source in errors."""
    sd = {k.removeprefix("wav2vec2."): v for k, v in sd.items()}
    sd[_POS_CONV + "weight"] = _pos_conv_weight(sd, path)
    module = Wav2Vec2Model(config)
    dummy = jnp.zeros((1, config.receptive_field_samples), jnp.float32)
    template = zeros_template(jax.eval_shape(module.init, jax.random.key(0), dummy)["params"])
    params, missing, unused = torch_state_to_flax(sd, template, path)
    if missing:
        raise CheckpointError(f"{path}: {len(missing)} wav2vec2 keys missing: {missing}; is the checkpoint complete "
                              "and made for the config.json beside it?")
    heads = [k for k in unused if k.startswith(_HEAD_PREFIXES)]
    unexpected = [k for k in unused if not k.startswith(_HEAD_PREFIXES)]
    if heads:
        logger.info("%s: ignoring %d head parameters not used by the encoder (%s)", path, len(heads), ", ".join(heads))
    if unexpected:
        logger.warning("%s: %d unused keys: %s", path, len(unexpected), ", ".join(unexpected))
    return {"params": jax.tree.map(jnp.asarray, params)}


def load_wav2vec2(folder: str) -> tuple[Wav2Vec2Model, dict[str, Any], Wav2Vec2Config]:
    """(module, params, config) from a local Hugging Face wav2vec2 folder (config.json + safetensors or .bin)."""
    weights = find_weights_file(folder, stems=("model", "pytorch_model"))
    config_path = os.path.join(folder, "config.json")
    try:
        config = Wav2Vec2Config.from_json(config_path)
    except ValueError as e:
        raise CheckpointError(str(e)) from e
    params = params_from_state_dict(load_state_dict(weights), config, path=weights)
    return Wav2Vec2Model(config), params, config
