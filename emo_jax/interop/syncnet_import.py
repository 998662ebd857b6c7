"""Loading syncnet_python's SyncNet weights (`syncnet_v2.model`, which the user supplies: a torch.save of
SyncNetModel.S's state dict) into emo_jax/eval/syncnet.py's SyncNet.

The state dict's keys follow S's four nn.Sequential stacks: `netcnnaud` and `netcnnlip` (convolutions at indices
0, 4, 8, 11, 14, 18, each followed by its BatchNorm at the next index; ReLUs and max pools hold nothing) and
`netfcaud` and `netfclip` (Linear 0, BatchNorm1d 1, Linear 3). Each convolution has `weight` and `bias`, each batch
norm `weight`, `bias`, `running_mean`, `running_var` (and, from torch 0.4 on, `num_batches_tracked`, a training
counter, ignored). The file is read by load_state_dict (torch.load with weights_only=True, every tensor checked
finite). Every parameter must have its key with the right shape, and every key but the counters a parameter: a
wrong or missing key is a CheckpointError naming the file and the key.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from emo_jax.errors import CheckpointError
from emo_jax.eval.syncnet import CROP_SIZE, NUM_CEPSTRA, PRECISION, WINDOW_FRAMES, WINDOW_MFCC, SyncNet
from emo_jax.interop.torch_io import StateDict, load_state_dict
from emo_jax.paths import require_file

_CONV_INDEX = {f"conv{k}": i for k, i in enumerate((0, 4, 8, 11, 14, 18), start=1)}
_STACKS = {"audio": ("netcnnaud", "netfcaud"), "lip": ("netcnnlip", "netfclip")}
_LEAF = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}


def torch_key(path: tuple[str, ...]) -> str:
    """Our parameter path -> syncnet_python's key: ('audio', 'conv2', 'bn', 'mean') -> 'netcnnaud.5.running_mean',
    ('lip', 'head', 'fc2', 'kernel') -> 'netfclip.3.weight'."""
    branch, block, layer, leaf = path
    cnn, fc = _STACKS[branch]
    if block == "head":
        index = {"fc1": 0, "bn": 1, "fc2": 3}[layer]
        return f"{fc}.{index}.{_LEAF[leaf]}"
    return f"{cnn}.{_CONV_INDEX[block] + (layer == 'bn')}.{_LEAF[leaf]}"


def _our_layout(leaf: str, value: np.ndarray) -> np.ndarray:
    """torch's Linear [out, in] and Conv [out, in, *kernel] -> Flax's [in, out] and [*kernel, in, out]."""
    if leaf != "kernel":
        return value
    return np.moveaxis(value, (0, 1), (-1, -2)) if value.ndim > 2 else value.T


def param_template(module: SyncNet) -> dict:
    """Parameter shapes and dtypes of `module` (nothing computed)."""
    mfcc = jax.ShapeDtypeStruct((1, NUM_CEPSTRA, WINDOW_MFCC, 1), jnp.float32)
    lips = jax.ShapeDtypeStruct((1, WINDOW_FRAMES, CROP_SIZE, CROP_SIZE, 3), jnp.float32)
    return nn.unbox(jax.eval_shape(module.init, jax.random.key(0), mfcc, lips))["params"]


def syncnet_params(state: StateDict, module: SyncNet, source: str) -> dict:
    """Flax params from SyncNetModel.S's state dict; `source` names it in errors."""
    template = traverse_util.flatten_dict(param_template(module))
    params, used = {}, set()
    for path, want in template.items():
        key = torch_key(path)
        if key not in state:
            raise CheckpointError(f"{source}: key {key!r} missing; pass syncnet_python's syncnet_v2.model or a "
                                  "state dict of its SyncNetModel.S")
        value = _our_layout(path[-1], np.asarray(state[key]))
        if value.shape != want.shape:
            raise CheckpointError(f"{source}: key {key!r} has shape {tuple(np.shape(state[key]))}; SyncNet expects "
                                  f"one that becomes {want.shape} ({'/'.join(path)}); is it another network's file?")
        params[path] = value.astype(want.dtype)
        used.add(key)
    unused = sorted(k for k in state if k not in used and not k.endswith(".num_batches_tracked"))
    if unused:
        raise CheckpointError(f"{source}: {len(unused)} keys SyncNet has no place for: {unused}")
    return traverse_util.unflatten_dict(params)


def load_syncnet(path: str, precision: Any = PRECISION) -> tuple[SyncNet, dict]:
    """(module, params) from syncnet_python's weights file (any torch.save of S's state dict, or the same saved
    as .safetensors)."""
    require_file(path, "SyncNet weights file", "pass syncnet_python's syncnet_v2.model (its download_model.sh "
                 "fetches it)", CheckpointError)
    module = SyncNet(precision=precision)
    return module, jax.device_put(syncnet_params(load_state_dict(path), module, path))
