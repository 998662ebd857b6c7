"""Logical axis names for parameters: initialisers wrapped with the names the config's rules map to a mesh."""
from __future__ import annotations

import flax.linen as nn

# Parameter axes: embed (model width, sharded over fsdp), heads/mlp (sharded over tensor), conv_in/conv_out
# (the two channel axes of a conv kernel), norm (replicated). Activations use batch / length / act_embed.


def dense_init(axes: tuple[str | None, ...]):
    return nn.with_logical_partitioning(nn.initializers.lecun_normal(), axes)


def conv_init():
    return nn.with_logical_partitioning(nn.initializers.lecun_normal(), (None, None, "conv_in", "conv_out"))


def zeros_init(axes: tuple[str | None, ...]):
    return nn.with_logical_partitioning(nn.initializers.zeros_init(), axes)


def ones_init(axes: tuple[str | None, ...]):
    return nn.with_logical_partitioning(nn.initializers.ones_init(), axes)


def constrain(x, axes: tuple[str | None, ...]):
    """Names an activation's axes; the config's rules decide its sharding (a no-op outside a mesh)."""
    return nn.with_logical_constraint(x, axes)
