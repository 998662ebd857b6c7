"""Parameter initialisers that carry logical axis names and their kind of initialisation, and `init_params`.

Every parameter is created through one of these initialisers, so its box records both the logical axis names
(the config's rules map them onto a mesh) and how it is initialised (lecun / zeros / ones). `init_params` then
builds a model's parameters without compiling its initialisation: XLA compiles a threefry kernel per
parameter, so a jitted `model.init` of even the tiny model takes minutes on a CPU, while tracing shapes with
jax.eval_shape and sampling each parameter on the host with a seed derived from (key, path) takes seconds, gives
every process the same values, and lets the trainer place each one straight into its sharding.
"""
from __future__ import annotations

import zlib
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct, traverse_util

# Parameter axes: embed (model width, sharded over fsdp), heads/mlp (sharded over tensor), conv_in/conv_out
# (the two channel axes of a conv kernel), norm (replicated). Activations use batch / length / act_embed.


class InitBox(nn.LogicallyPartitioned):
    """LogicallyPartitioned plus the name of the parameter's initialiser (static metadata)."""

    init_kind: str = struct.field(default="", pytree_node=False)


_JAX_INITS = {"lecun": nn.initializers.lecun_normal(), "zeros": nn.initializers.zeros_init(),
              "ones": nn.initializers.ones_init()}


def _boxed(kind: str, axes: tuple[str | None, ...]) -> Callable:
    def init(key, shape, dtype=jnp.float32):
        return InitBox(_JAX_INITS[kind](key, shape, dtype), tuple(axes), init_kind=kind)

    return init


def dense_init(axes: tuple[str | None, ...]):
    return _boxed("lecun", axes)


def conv_init():
    return _boxed("lecun", (None, None, "conv_in", "conv_out"))


def zeros_init(axes: tuple[str | None, ...]):
    return _boxed("zeros", axes)


def ones_init(axes: tuple[str | None, ...]):
    return _boxed("ones", axes)


def constrain(x, axes: tuple[str | None, ...]):
    """Names an activation's axes; the config's rules decide its sharding (a no-op outside a mesh)."""
    return nn.with_logical_constraint(x, axes)


def _host_value(kind: str, shape: tuple[int, ...], dtype, seed: list[int]) -> np.ndarray:
    if kind == "zeros":
        return np.zeros(shape, dtype)
    if kind == "ones":
        return np.ones(shape, dtype)
    assert kind == "lecun", kind
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(shape, dtype=np.float32)
    bad = np.abs(z) > 2
    while bad.any():  # truncated at 2 sigma, as jax's lecun_normal
        z[bad] = rng.standard_normal(int(bad.sum()), dtype=np.float32)
        bad = np.abs(z) > 2
    fan_in = int(np.prod(shape[:-1]))
    std = np.sqrt(1.0 / fan_in) / 0.87962566103423978  # stddev of a unit normal truncated to [-2, 2]
    return (z * std).astype(dtype)


def abstract_params(model: nn.Module, inputs: dict, method: Any = None) -> Any:
    """The boxed parameter tree of shapes (jax.ShapeDtypeStruct), traced without compiling anything."""
    kwargs = {} if method is None else {"method": method}
    return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), **inputs, **kwargs))["params"]


def init_params(model: nn.Module, seed: int, inputs: dict, method: Any = None,
                place: Callable[[tuple, np.ndarray], Any] | None = None) -> Any:
    """Boxed parameters, each sampled on the host from (seed, its path); `place(path, value)` may put it on devices."""
    boxed = abstract_params(model, inputs, method)
    flat = traverse_util.flatten_dict(boxed)  # boxes are not dicts, so they are the leaves
    out = {}
    for path, box in flat.items():
        if not isinstance(box, InitBox):
            raise TypeError(f"parameter {'/'.join(path)} was not created through emo_jax.models.partitioning; "
                            "give it one of dense_init / conv_init / zeros_init / ones_init")
        seed_words = [seed, zlib.crc32("/".join(path).encode())]
        value = _host_value(box.init_kind, tuple(box.value.shape), np.dtype(box.value.dtype), seed_words)
        out[path] = box.replace(value=place(path, value) if place else jnp.asarray(value))
    return traverse_util.unflatten_dict(out)


def random_params(abstract: Any, seed: int) -> dict:
    """Plain parameters for a tree of shapes from modules not built with these initialisers (the frozen
    encoders, when a smoke test runs them with random weights): kernels lecun, norm scales ones, the rest zeros."""
    out = {}
    for path, leaf in traverse_util.flatten_dict(abstract).items():
        kind = {"kernel": "lecun", "scale": "ones"}.get(path[-1], "zeros")
        seed_words = [seed, zlib.crc32("/".join(path).encode())]
        out[path] = jnp.asarray(_host_value(kind, tuple(leaf.shape), np.dtype(leaf.dtype), seed_words))
    return traverse_util.unflatten_dict(out)
