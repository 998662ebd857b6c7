"""The one rule that turns a Flax parameter path into a PyTorch (diffusers / AnimateDiff / Hallo / transformers'
wav2vec2) key, and back.

Flax module names cannot hold dots, so a torch list index `down_blocks.0` is spelt `down_blocks_0` in Flax.
Only the names in INDEXED are treated that way, so `linear_1` (a real diffusers name) is left alone. A double
underscore inside one Flax module name is one level of torch nesting (`mid_block__resnets_0` -> `mid_block.resnets.0`).
Leaves: Dense `kernel` [in, out] <-> `weight` [out, in]; Conv `kernel` [kh, kw, in, out] <-> `weight`
[out, in, kh, kw]; Conv1d `kernel` [k, in, out] <-> `weight` [out, in, k]; norm `scale` <-> `weight`; Embed
`embedding` [num, dim] <-> nn.Embedding's `weight` [num, dim]; `bias` <-> `bias`.
"""
from __future__ import annotations

import re
from typing import Mapping

import jax
import numpy as np
from flax import traverse_util

from emo_jax.errors import CheckpointError

INDEXED = (
    "down_blocks", "up_blocks", "resnets", "attentions", "downsamplers", "upsamplers", "transformer_blocks",
    "to_out", "net", "motion_modules", "attention_blocks", "norms", "blocks", "layers", "conv_layers",
)
_INDEXED_RE = re.compile(r"^(%s)_(\d+)$" % "|".join(INDEXED))


def flax_path_to_torch(path: tuple[str, ...]) -> str:
    """('down_blocks_0', 'resnets_1', 'conv1', 'kernel') -> 'down_blocks.0.resnets.1.conv1.weight'."""
    *mods, leaf = path
    parts = [_INDEXED_RE.sub(r"\1.\2", m) for mod in mods for m in mod.split("__")]
    parts.append({"kernel": "weight", "scale": "weight", "embedding": "weight", "bias": "bias"}.get(leaf, leaf))
    return ".".join(parts)


def to_torch_layout(leaf_name: str, value: np.ndarray) -> np.ndarray:
    """Flax leaf -> torch tensor layout."""
    if leaf_name == "kernel" and value.ndim == 2:
        return value.T
    if leaf_name == "kernel" and value.ndim == 4:
        return value.transpose(3, 2, 0, 1)
    if leaf_name == "kernel" and value.ndim == 3:  # Conv1d [k, in, out] <-> [out, in, k]
        return value.transpose(2, 1, 0)
    return value


def from_torch_layout(leaf_name: str, value: np.ndarray) -> np.ndarray:
    """torch tensor -> Flax leaf layout (inverse of to_torch_layout)."""
    if leaf_name == "kernel" and value.ndim == 2:
        return value.T
    if leaf_name == "kernel" and value.ndim == 4:
        return value.transpose(2, 3, 1, 0)
    if leaf_name == "kernel" and value.ndim == 3:
        return value.transpose(2, 1, 0)
    return value


def flax_to_torch_state(params: Mapping, prefix: str = "") -> dict[str, np.ndarray]:
    """A (nested) Flax parameter dict as a torch-keyed state dict of numpy arrays."""
    out = {}
    for path, value in traverse_util.flatten_dict(params).items():
        out[prefix + flax_path_to_torch(path)] = to_torch_layout(path[-1], np.asarray(value))
    return out


def zeros_template(shapes: Mapping) -> dict:
    """A template for torch_state_to_flax from an eval_shape tree: broadcast views of one zero, no memory used."""
    return jax.tree.map(lambda s: np.broadcast_to(np.zeros((), s.dtype), s.shape), shapes)


def torch_state_to_flax(
    state: Mapping[str, np.ndarray],
    template: Mapping,
    source: str,
    prefix: str = "",
) -> tuple[dict, list[str], list[str]]:
    """Fills a Flax parameter template from a torch state dict.

    Returns (params, missing, unused): `missing` are template paths (torch spelling) with no key in the state
    (their template values are kept), `unused` are state keys the template has no place for. A key present with
    the wrong shape raises, naming `source` and the key.
    """
    flat = traverse_util.flatten_dict(template)
    out, missing, used = {}, [], set()
    for path, tmpl in flat.items():
        key = prefix + flax_path_to_torch(path)
        if key not in state:
            missing.append(key)
            out[path] = tmpl
            continue
        value = from_torch_layout(path[-1], np.asarray(state[key]))
        if tuple(value.shape) != tuple(np.shape(tmpl)):
            raise CheckpointError(
                f"{source}: key {key!r} has shape {tuple(state[key].shape)}, the model expects a tensor that "
                f"becomes {tuple(np.shape(tmpl))}; is the checkpoint made for a different config?"
            )
        out[path] = value.astype(np.asarray(tmpl).dtype if hasattr(tmpl, "dtype") else np.float32)
        used.add(key)
    unused = sorted(k for k in state if k.startswith(prefix) and k not in used)
    return traverse_util.unflatten_dict(out), missing, unused
