"""TPU slice names -> device topologies for ahead-of-time compilation on a CPU host, and each chip's specs."""
from __future__ import annotations

import dataclasses
import math
import re

from emo_jax.errors import RunError

GiB = 1 << 30


@dataclasses.dataclass(frozen=True)
class ChipSpec:
    """Public per-chip numbers (Cloud TPU system architecture pages)."""

    kind: str
    hbm_bytes: int
    peak_bf16_flops: float
    cores_per_chip_in_name: int  # v4/v5p slice names count TensorCores (2 per chip); v5e/v6e count chips
    dims: int  # 3D torus (v4, v5p) or 2D (v5e, v6e)
    hbm_bytes_per_s: float  # HBM bandwidth


CHIPS = {
    "v4": ChipSpec("v4", 32 * GiB, 275e12, 2, 3, 1228e9),
    "v5p": ChipSpec("v5p", 95 * GiB, 459e12, 2, 3, 2765e9),
    "v5e": ChipSpec("v5e", 16 * GiB, 197e12, 1, 2, 819e9),
    "v6e": ChipSpec("v6e", 32 * GiB, 918e12, 1, 2, 1640e9),
}
_ALIASES = {"v5litepod": "v5e", "v5lite": "v5e", "v6litepod": "v6e", "v6lite": "v6e"}


def _grid(chips: int, dims: int) -> tuple[int, ...]:
    """The chip grid Cloud TPU uses for a slice of `chips` chips (powers of two, as even as possible)."""
    if chips < 1 or chips & (chips - 1):
        raise ValueError(f"{chips} chips: slice sizes are powers of two")
    if dims == 2:
        if chips == 1:
            return (1, 1)
        a = 2 ** (int(math.log2(chips)) // 2)
        return (a, chips // a)
    shape = [1, 1, 1]
    for i in range(int(math.log2(chips))):
        shape[i % 3] *= 2
    # Cloud TPU spells 3D slices ascending with any 1 last: 2x2x1, 2x2x2, 2x2x4, 2x4x4, 4x4x4, ...
    return tuple(sorted(shape, key=lambda d: (d == 1, d)))


def parse_topology(name: str) -> tuple[ChipSpec, str, int]:
    """'v5p-128' / 'v5litepod-64' / 'v5e:4x4' -> (chip spec, jax topology name, number of chips)."""
    m = re.fullmatch(r"(v\d+[a-z]*)[-:](\S+)", name.strip().lower())
    if not m:
        raise ValueError(f"topology {name!r}: expected a slice name like v5p-128, v5e-64, v6e-64 or v4-32, "
                         "or a grid like v5e:4x4")
    kind, rest = _ALIASES.get(m.group(1), m.group(1)), m.group(2)
    if kind not in CHIPS:
        raise ValueError(f"topology {name!r}: unknown TPU generation {m.group(1)!r}; known: {sorted(CHIPS)}, v5litepod")
    chip = CHIPS[kind]
    if "x" in rest:
        grid = tuple(int(x) for x in rest.split("x"))
    else:
        count = int(rest)
        if count % chip.cores_per_chip_in_name:
            raise ValueError(f"topology {name!r}: {kind} slice sizes count TensorCores and must be even")
        grid = _grid(count // chip.cores_per_chip_in_name, chip.dims)
    return chip, f"{kind}:{'x'.join(str(g) for g in grid)}", math.prod(grid)


def topology_devices(name: str):
    """(chip spec, devices) of a TPU slice, described without a TPU (needs libtpu installed)."""
    import os

    from jax.experimental import topologies

    # Describing a topology loads libtpu, which otherwise takes a machine-wide lock that any other process
    # with jax imported (a test run, a notebook) may hold; nothing here talks to a real TPU.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    chip, jax_name, _ = parse_topology(name)
    try:
        desc = topologies.get_topology_desc(platform="tpu", topology_name=jax_name)
    except Exception as e:  # jax raises RuntimeError or ValueError depending on what is missing
        raise RunError(f"cannot describe TPU topology {jax_name} ({name}): {e}; ahead-of-time TPU compiles need "
                           "libtpu (pip install -e '.[tpu]')") from e
    return chip, list(desc.devices)
