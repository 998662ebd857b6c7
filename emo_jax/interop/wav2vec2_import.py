"""Loading a local Hugging Face wav2vec2 folder (config.json + weights) into the Flax encoder."""
from __future__ import annotations

import logging
import os
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from emo_jax.audio.wav2vec2 import Wav2Vec2Config, Wav2Vec2Model
from emo_jax.interop.torch_io import CheckpointError, StateDict, find_weights_file, load_state_dict

logger = logging.getLogger(__name__)

# Heads of Wav2Vec2ForCTC / ForPreTraining / classifiers: present in many checkpoints, not part of the encoder.
_HEAD_PREFIXES = ("lm_head.", "quantizer.", "project_hid.", "project_q.", "masked_spec_embed", "projector.", "classifier.")
_POS_CONV = "encoder.pos_conv_embed.conv."


def torch_key(flax_path: tuple[str, ...]) -> str:
    """The transformers Wav2Vec2Model key of a Flax parameter path, e.g. ('encoder', 'layers_0', ..., 'kernel')."""
    *modules, leaf = flax_path
    modules = [re.sub(r"^(conv_layers|layers)_(\d+)$", r"\1.\2", m) for m in modules]
    return ".".join(modules + ["bias" if leaf == "bias" else "weight"])


def _to_flax_layout(w: np.ndarray, leaf: str) -> np.ndarray:
    if leaf != "kernel":
        return w
    # Linear [out, in] -> [in, out]; Conv1d [out, in, width] -> [width, in, out].
    return w.T if w.ndim == 2 else w.transpose(2, 1, 0)


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
    module = Wav2Vec2Model(config)
    n = config.receptive_field_samples
    shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, n), jnp.float32))["params"]
    flat = {}
    for key_path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]:
        flax_path = tuple(k.key for k in key_path)
        key = torch_key(flax_path)
        if key == _POS_CONV + "weight":
            w = _pos_conv_weight(sd, path)
        elif key in sd:
            w = sd.pop(key)
        else:
            raise CheckpointError(f"{path}: missing key {key!r} (Flax parameter {'/'.join(flax_path)})")
        w = _to_flax_layout(np.asarray(w, dtype=np.float32), flax_path[-1])
        if w.shape != leaf.shape:
            raise CheckpointError(
                f"{path}: key {key!r} has shape {w.shape} in Flax layout, the config asks for {leaf.shape}; "
                "does config.json belong to these weights?"
            )
        flat[flax_path] = jnp.asarray(w)
    heads = sorted(k for k in sd if k.startswith(_HEAD_PREFIXES))
    unexpected = sorted(k for k in sd if not k.startswith(_HEAD_PREFIXES))
    if heads:
        logger.info("%s: ignoring %d head parameters not used by the encoder (%s)", path, len(heads), ", ".join(heads))
    if unexpected:
        logger.warning("%s: %d unused keys: %s", path, len(unexpected), ", ".join(unexpected))
    tree: dict[str, Any] = {}
    for flax_path, w in flat.items():
        node = tree
        for k in flax_path[:-1]:
            node = node.setdefault(k, {})
        node[flax_path[-1]] = w
    return {"params": tree}


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
