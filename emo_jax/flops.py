"""Matmul FLOPs of a traced program, counted on its jaxpr.

XLA's cost analysis counts the body of a loop once (a `lax.map` over query chunks, a `lax.scan` of sampler
steps), so a program with loops reports a fraction of its work. Counting the jaxpr instead multiplies every scan
body by its length, follows remat (the recomputed forward inside the backward pass is counted again) and custom
derivative rules, and takes the costlier branch of a `cond`, except a `lax.platform_dependent` choice: there it
counts the branch for an accelerator (the default one), the program emo-compile and benchmarks/gpu.py measure,
not a CPU-only form (emo_jax.models.attention's blocked CPU attention). Only dot_general and conv_general_dilated are
counted (2 FLOPs per multiply-add): the usual "model FLOPs", which elementwise work adds a few percent to.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from jax.extend import core as jcore


@dataclass(frozen=True)
class FlopCount:
    flops: float
    unbounded_loops: int  # while loops (trip count unknown when tracing): their bodies are counted once
    opaque_kernels: int  # Pallas kernels without a cost estimate: counted as zero


def _dot_flops(eqn) -> float:
    (contract_lhs, _), _ = eqn.params["dimension_numbers"]
    lhs = eqn.invars[0].aval.shape
    return 2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in contract_lhs)


def _valid_taps(out: int, window: int, stride: int, lhs_dilation: int, rhs_dilation: int, pad_lo: int,
                size: int) -> int:
    """(output position, kernel tap) pairs of one spatial axis that read a real input element, not padding or
    a hole of an input dilation (the transposed convolutions of a strided one's gradient are mostly holes)."""
    last = (size - 1) * lhs_dilation
    return sum(1 for o in range(out) for k in range(window)
               if 0 <= (i := o * stride + k * rhs_dilation - pad_lo) <= last and i % lhs_dilation == 0)


def _conv_flops(eqn) -> float:
    p = eqn.params
    dims = p["dimension_numbers"]  # specs: (batch or out-feature dim, feature dim, *spatial dims)
    lhs, kernel, out = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape, eqn.outvars[0].aval.shape
    taps = math.prod(
        _valid_taps(out[o], kernel[r], stride, ld, rd, lo, lhs[i])
        for i, r, o, stride, ld, rd, (lo, _) in zip(dims.lhs_spec[2:], dims.rhs_spec[2:], dims.out_spec[2:],
                                                     p["window_strides"], p["lhs_dilation"], p["rhs_dilation"],
                                                     p["padding"]))
    return 2.0 * out[dims.out_spec[0]] * out[dims.out_spec[1]] * kernel[dims.rhs_spec[1]] * taps


def _sub_jaxprs(value) -> list:
    if isinstance(value, jcore.ClosedJaxpr):
        return [value.jaxpr]
    if isinstance(value, jcore.Jaxpr):
        return [value]
    if isinstance(value, (tuple, list)):
        return [j for v in value for j in _sub_jaxprs(v)]
    return []


def _accelerator_branch(platforms: tuple) -> int:
    """The branch of a platform_dependent choice that an accelerator runs: the default (platforms None), else
    the first one naming a platform other than the CPU."""
    for i, names in enumerate(platforms):
        if names is None:
            return i
    return next(i for i, names in enumerate(platforms) if any(n != "cpu" for n in names))


def _count(jaxpr, platform_vars: dict | None = None) -> tuple[float, int, int]:
    """(FLOPs, while loops, opaque kernels). platform_vars: the variables of `jaxpr` that hold a
    platform_index, with its platforms (from an eqn here, or passed in by an enclosing call)."""
    flops, loops, opaque = 0.0, 0, 0
    platform_vars = dict(platform_vars or {})
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "platform_index":
            platform_vars[eqn.outvars[0]] = eqn.params["platforms"]
        elif name == "dot_general":
            flops += _dot_flops(eqn)
        elif name == "conv_general_dilated":
            flops += _conv_flops(eqn)
        elif name == "pallas_call":
            estimate = eqn.params.get("cost_estimate")
            if estimate is not None and getattr(estimate, "flops", None) is not None:
                flops += float(estimate.flops)
            else:
                opaque += 1
        elif name == "cond":
            branches = _sub_jaxprs(eqn.params["branches"])
            index = eqn.invars[0]
            if isinstance(index, jcore.Var) and index in platform_vars:
                chosen = _count(branches[_accelerator_branch(platform_vars[index])])
            else:
                chosen = max((_count(j) for j in branches), key=lambda c: c[0])
            flops, loops, opaque = flops + chosen[0], loops + chosen[1], opaque + chosen[2]
        else:
            times = eqn.params["length"] if name == "scan" else 1
            loops += name == "while"
            for sub in (j for v in eqn.params.values() for j in _sub_jaxprs(v)):
                # A call whose inputs are its body's inputs (jit, remat, custom rules) passes platform indices on.
                inner = {v: platform_vars[outer] for v, outer in zip(sub.invars, eqn.invars)
                         if isinstance(outer, jcore.Var) and outer in platform_vars} \
                    if len(sub.invars) == len(eqn.invars) else {}
                f, w, o = _count(sub, inner)
                flops, loops, opaque = flops + times * f, loops + w, opaque + o
    return flops, loops, opaque


def count_flops(closed_jaxpr) -> FlopCount:
    """Matmul and convolution FLOPs of a ClosedJaxpr (for example `jax.jit(f).trace(*args).jaxpr`): of the
    whole, unpartitioned program; divide by the device count for a sharded program's share per device.

    Dead code is removed first, as XLA would: a traced gradient holds work whose result nothing uses (the weight
    gradients of frozen layers in stage 3, which the masked optimizer drops, are 25% of its matmuls)."""
    # jax's own dead-code elimination (recursing into jit, scan, remat, cond, custom rules); it is internal API,
    # kept working by the jax pin in constraints.txt.
    from jax._src.interpreters import partial_eval as pe

    jaxpr, _ = pe.dce_jaxpr(closed_jaxpr.jaxpr, [True] * len(closed_jaxpr.jaxpr.outvars))
    flops, loops, opaque = _count(jaxpr)
    return FlopCount(flops, loops, opaque)
