"""The one place that turns the config's mesh shape and logical-axis rules into device meshes and shardings."""
from __future__ import annotations

import logging
from typing import Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

log = logging.getLogger(__name__)

AXES = ("data", "fsdp", "tensor")


def mesh_shape(shape: dict, n_devices: int) -> tuple[int, ...]:
    """Resolves one -1 entry so the product equals the device count."""
    sizes = [int(shape[a]) for a in AXES]
    if sizes.count(-1) > 1:
        raise ValueError(f"mesh.shape {dict(shape)}: at most one axis may be -1")
    known = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        if n_devices % known:
            raise ValueError(f"mesh.shape {dict(shape)} does not divide {n_devices} devices")
        sizes[sizes.index(-1)] = n_devices // known
    if int(np.prod(sizes)) != n_devices:
        raise ValueError(f"mesh.shape {dict(shape)} needs {int(np.prod(sizes))} devices, there are {n_devices}; "
                         "use -1 on one axis to fill")
    return tuple(sizes)


def make_mesh(shape: dict, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (data, fsdp, tensor) mesh; on real hardware jax's mesh_utils orders devices by the interconnect."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = mesh_shape(shape, len(devices))
    from jax.experimental import mesh_utils

    # A mesh axis that is a product of whole physical axes first; else one that splits a physical axis (8 data x
    # 2 fsdp x 2 tensor on a 2x4x4 v5p-64: each mesh axis still runs along the torus), else enumeration order.
    # mesh_utils refuses a layout in three ways, all caught here:
    # - a RuntimeError (jax's not-implemented subclass of it): no assignment of mesh axes to physical axes exists
    #   (2 x 8 x 4 on an 8x8 v5e-64 without a split);
    # - ValueError: the shape does not match the devices;
    # - AssertionError: the devices are not a contiguous block of the torus (every other chip of a slice), or
    #   not one device per chip.
    reasons = []
    for split in (False, True):
        try:
            return Mesh(mesh_utils.create_device_mesh(sizes, devices=devices, allow_split_physical_axes=split), AXES)
        except (ValueError, RuntimeError, AssertionError) as e:
            # Both attempts' reasons go into the warning, each cut: an assertion's message lists every device.
            reasons.append(f"{'with' if split else 'without'} split axes, {type(e).__name__}: {str(e)[:200]}")
    # Still a correct mesh, only possibly a slower one: neighbours on a mesh axis may sit far apart on the
    # interconnect. The warning names the shape so a user on real hardware can pick one mesh_utils maps.
    log.warning("jax mesh_utils cannot lay mesh %s over %d %s devices (%s); using them in enumeration order, which "
                "can make collectives slower", dict(zip(AXES, sizes)), len(devices), devices[0].device_kind,
                "; ".join(reasons))
    return Mesh(np.asarray(devices).reshape(sizes), AXES)


def rules_tuple(rules) -> tuple:
    return tuple((name, tuple(target) if isinstance(target, list) else target) for name, target in rules)


def _fit(spec: PartitionSpec, shape: tuple[int, ...], mesh: Mesh) -> PartitionSpec:
    """Drops mesh axes from dimensions they do not divide (small layers stay replicated instead of failing)."""
    out = []
    for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        names = () if axes is None else (axes if isinstance(axes, tuple) else (axes,))
        kept = tuple(a for a in names if dim % mesh.shape[a] == 0)
        while kept and dim % int(np.prod([mesh.shape[a] for a in kept])):
            kept = kept[:-1]
        out.append(None if not kept else kept[0] if len(kept) == 1 else kept)
    return PartitionSpec(*out)


def param_shardings(boxed_params, mesh: Mesh, rules) -> object:
    """NamedShardings for a tree of nn.LogicallyPartitioned (boxed) parameters or their eval_shape."""
    specs = nn.get_partition_spec(boxed_params)
    mesh_specs = nn.logical_to_mesh(specs, rules_tuple(rules))
    shapes = nn.unbox(boxed_params)
    return jax.tree.map(lambda s, x: NamedSharding(mesh, _fit(s, tuple(x.shape), mesh)), mesh_specs, shapes,
                        is_leaf=lambda s: isinstance(s, PartitionSpec))


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    """Leading axis over (data, fsdp), the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(("data", "fsdp"), *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())
