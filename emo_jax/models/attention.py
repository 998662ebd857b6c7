"""Every attention in the model goes through `dot_product_attention`, whose implementation a config picks.

The one mask the model needs drops the reference tokens appended to a self-attention's keys (classifier-free
guidance and condition dropout), so masks are given as the number of valid keys from the start, kv_lengths_B:
every implementation takes that form, cuDNN's fused kernel included (it refuses a [B, 1, 1, S] key mask:
"Bias must have same seq length as QKV", seen on an H200 with jax 0.11.2).
"""
from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from emo_jax.models.partitioning import dense_init, zeros_init

IMPLEMENTATIONS = ("xla", "chunked", "jax", "cudnn", "pallas_tpu", "splash")
# Backends each implementation cannot run on, and what to choose there instead. CPU is not listed for the TPU
# kernels: a CPU host compiles TPU programs ahead of time (emo-compile), and splash runs on a CPU in Pallas
# interpret mode (tests).
_UNSUPPORTED = {"cudnn": ("tpu",), "pallas_tpu": ("gpu",), "splash": ("gpu",)}
SPLASH_BLOCK = 512  # the largest splash block (queries and keys); smaller ones where the sequence is shorter


def _key_mask(kv_lengths_B, keys: int):
    """[B, S] True for the first kv_lengths_B[b] keys, or None."""
    return None if kv_lengths_B is None else jnp.arange(keys)[None, :] < kv_lengths_B[:, None]


def _xla_attention(q_BLHD, k_BSHD, v_BSHD, kv_lengths_B=None):
    """Plain XLA attention; on a CPU, the same math in cache-sized blocks (`_cpu_attention`)."""
    if kv_lengths_B is None:
        return jax.lax.platform_dependent(q_BLHD, k_BSHD, v_BSHD, cpu=_cpu_attention, default=_dense_attention)
    return jax.lax.platform_dependent(q_BLHD, k_BSHD, v_BSHD, kv_lengths_B, cpu=_cpu_attention,
                                      default=_dense_attention)


def _dense_attention(q_BLHD, k_BSHD, v_BSHD, kv_lengths_B=None):
    """All scores at once, [B, H, L, S] (what TPUs and GPUs were measured with: compile_plan, gpu.json)."""
    scale = q_BLHD.shape[-1] ** -0.5
    scores = jnp.einsum("blhd,bshd->bhls", q_BLHD, k_BSHD, preferred_element_type=jnp.float32) * scale
    if kv_lengths_B is not None:
        scores = jnp.where(_key_mask(kv_lengths_B, k_BSHD.shape[1])[:, None, None, :], scores,
                           jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v_BSHD.dtype)
    return jnp.einsum("bhls,bshd->blhd", probs, v_BSHD)


# Bytes of float32 scores one block of `_cpu_attention` holds: a few MB stay in a CPU's caches. On 2 cores,
# 4-8 MB ran 256 x 512-key attentions 4.6x faster forward and 1.5x with gradients than all scores at once;
# 16 MB and more lost most of it (benchmarks/cpu_shapes.py).
CPU_SCORE_BLOCK_BYTES = 4 << 20
# Below this many scores per (example, head) blocking costs more than it saves (temporal and audio attentions).
_CPU_BLOCK_MIN_SCORES = 1 << 16


def _cpu_attention(q_BLHD, k_BSHD, v_BSHD, kv_lengths_B=None):
    """The same attention laid out for a CPU: heads folded into the batch ([B * H, L, D], each head's rows
    contiguous), softmax normalised after the value product (one pass less over the scores), a gradient that
    recomputes the scores from the saved row log-sum-exp (`_rows_attention`), and, where one head's scores are
    large, a block of heads (or of queries) at a time under lax.map so each block's scores stay in cache. Equal
    to `_dense_attention` within float32 rounding, values and gradients (tests)."""
    b, length, heads, head_dim = q_BLHD.shape
    keys = k_BSHD.shape[1]
    fold = lambda t: t.transpose(0, 2, 1, 3).reshape(b * heads, t.shape[1], head_dim)  # noqa: E731
    q, k, v = fold(q_BLHD), fold(k_BSHD), fold(v_BSHD)
    full = jnp.full((b,), keys, jnp.int32) if kv_lengths_B is None else kv_lengths_B.astype(jnp.int32)
    lengths = jnp.repeat(full, heads)
    if length * keys * 4 <= CPU_SCORE_BLOCK_BYTES:
        out = _rows_attention(q, k, v, lengths)
    else:  # blocks of queries, every head's keys whole (sequences no CPU trains on: 2,048 x 4,096 and up)
        rows = max(1, CPU_SCORE_BLOCK_BYTES // (keys * 4))
        pad = -length % rows
        q_CNRD = jnp.pad(q, ((0, 0), (0, pad), (0, 0))).reshape(b * heads, -1, rows, head_dim).swapaxes(0, 1)
        out = jax.lax.map(lambda qc: _rows_attention(qc, k, v, lengths), q_CNRD)
        out = out.swapaxes(0, 1).reshape(b * heads, -1, head_dim)[:, :length]
    return out.reshape(b, heads, length, head_dim).transpose(0, 2, 1, 3)


def _scores(q_NLD, k_NSD, lengths_N):
    """Scaled float32 scores [N, L, S], keys past each row's length at the float32 minimum."""
    scores = jnp.einsum("nld,nsd->nls", q_NLD, k_NSD, preferred_element_type=jnp.float32) * q_NLD.shape[-1] ** -0.5
    return jnp.where(jnp.arange(k_NSD.shape[1])[None, None, :] < lengths_N[:, None, None], scores,
                     jnp.finfo(jnp.float32).min)


def _attend(q_NLD, k_NSD, v_NSD, lengths_N):
    """(attention output [N, L, D], row log-sum-exp of the scores [N, L])."""
    scores = _scores(q_NLD, k_NSD, lengths_N)
    top = jax.lax.stop_gradient(scores.max(axis=-1, keepdims=True))  # a constant of the softmax
    weights = jnp.exp(scores - top)
    total = weights.sum(axis=-1, keepdims=True)
    out = jnp.einsum("nls,nsd->nld", weights.astype(v_NSD.dtype), v_NSD, preferred_element_type=jnp.float32)
    return (out / total).astype(v_NSD.dtype), (top + jnp.log(total))[..., 0]


def _block_rows(per_row_scores: int, n: int) -> int:
    """Rows (heads of examples) per block: as many as fit CPU_SCORE_BLOCK_BYTES of scores; all of them when the
    scores are small (temporal and audio attentions), where blocking costs more than it saves."""
    if per_row_scores < _CPU_BLOCK_MIN_SCORES:
        return n
    return max(1, min(n, CPU_SCORE_BLOCK_BYTES // (per_row_scores * 4)))


@jax.custom_vjp
def _rows_attention(q_NLD, k_NSD, v_NSD, lengths_N):
    return _rows_attention_fwd(q_NLD, k_NSD, v_NSD, lengths_N)[0]


def _rows_attention_fwd(q_NLD, k_NSD, v_NSD, lengths_N):
    rows = _block_rows(q_NLD.shape[1] * k_NSD.shape[1], q_NLD.shape[0])
    out, lse = _in_blocks(lambda q, k, v, n: _attend(q, k, v, n), (q_NLD, k_NSD, v_NSD, lengths_N), rows)
    return out, (q_NLD, k_NSD, v_NSD, lengths_N, out, lse)


def _rows_attention_bwd(residuals, d_out_NLD):
    """Softmax attention's gradient from the saved output and log-sum-exp, block by block as the forward:
    P = exp(S - lse), dV = P^T dO, dS = P * (dO V^T - rowsum(dO * O)), dQ = dS K / sqrt(d), dK = dS^T Q / sqrt(d)."""
    q_NLD, k_NSD, v_NSD, lengths_N, out_NLD, lse_NL = residuals
    scale = q_NLD.shape[-1] ** -0.5

    def block(q, k, v, n, out, lse, d_out):
        probs = jnp.exp(_scores(q, k, n) - lse[..., None])
        d_out32 = d_out.astype(jnp.float32)
        d_v = _left_transposed_product(probs, d_out32)
        d_probs = jnp.einsum("nld,nsd->nls", d_out32, v.astype(jnp.float32))
        delta = (d_out32 * out.astype(jnp.float32)).sum(axis=-1, keepdims=True)
        d_scores = probs * (d_probs - delta) * scale
        d_q = jnp.einsum("nls,nsd->nld", d_scores, k.astype(jnp.float32))
        d_k = _left_transposed_product(d_scores, q.astype(jnp.float32))
        return d_q.astype(q.dtype), d_k.astype(k.dtype), d_v.astype(v.dtype)

    rows = _block_rows(q_NLD.shape[1] * k_NSD.shape[1], q_NLD.shape[0])
    d_q, d_k, d_v = _in_blocks(block, (q_NLD, k_NSD, v_NSD, lengths_N, out_NLD, lse_NL, d_out_NLD), rows)
    return d_q, d_k, d_v, None


_rows_attention.defvjp(_rows_attention_fwd, _rows_attention_bwd)


def _left_transposed_product(a_NLS, b_NLD):
    """sum over l of a[n, l, s] * b[n, l, d] -> [N, S, D]. XLA's CPU backend runs this dot (its left operand
    contracted on its first axis) as a generic batched matmul at 4-15 GFLOP/s; where the rows are few (temporal
    attention's 16 frames) or the head narrow (8) with many keys, a fused multiply-and-sum is 1.8-2.4x faster;
    elsewhere the dot is as fast or faster (benchmarks/cpu_attention_grad.py, at the small cpu_shapes.py shapes)."""
    rows, keys = a_NLS.shape[1:]
    if rows <= 32 or (b_NLD.shape[-1] <= 8 and keys >= 128):
        return (a_NLS[..., None] * b_NLD[:, :, None, :]).sum(axis=1)
    return jnp.einsum("nls,nld->nsd", a_NLS, b_NLD)


def _in_blocks(fn, arrays: tuple, rows: int):
    """fn over the leading axis `rows` at a time (lax.map over blocks, the last one padded; one call when `rows`
    covers them all). Integer arrays (key lengths) are padded with 1, so padded rows attend to one key."""
    n = arrays[0].shape[0]
    if rows >= n:
        return fn(*arrays)
    pad = -n % rows
    blocked = tuple(jnp.pad(a, ((0, pad),) + ((0, 0),) * (a.ndim - 1),
                            constant_values=1 if jnp.issubdtype(a.dtype, jnp.integer) else 0)
                    .reshape((-1, rows) + a.shape[1:]) for a in arrays)
    out = jax.lax.map(lambda block: fn(*block), blocked)
    return jax.tree.map(lambda o: o.reshape((-1,) + o.shape[2:])[:n], out)


def _chunked_attention(q_BLHD, k_BSHD, v_BSHD, kv_lengths_B, chunk: int):
    """Queries in chunks under lax.map: peak score memory is chunk x S instead of L x S, on any backend, in the
    backward pass too. Each chunk is rematerialised: without it, autodiff of the map keeps every chunk's
    probabilities for the backward pass, all L x S of them again (the paper-scale stage-2 step on v5e-64 kept
    them in 1.5 GiB buffers and needed 16.2 of 15.75 GiB)."""
    length = q_BLHD.shape[1]
    if length <= chunk:
        return _xla_attention(q_BLHD, k_BSHD, v_BSHD, kv_lengths_B)
    pad = -length % chunk
    q = jnp.pad(q_BLHD, ((0, 0), (0, pad), (0, 0), (0, 0)))
    q_NBCHD = q.reshape(q.shape[0], -1, chunk, *q.shape[2:]).swapaxes(0, 1)
    one_chunk = jax.checkpoint(lambda qc, k, v: _xla_attention(qc, k, v, kv_lengths_B))
    out = jax.lax.map(lambda qc: one_chunk(qc, k_BSHD, v_BSHD), q_NBCHD)
    out = out.swapaxes(0, 1).reshape(q.shape[0], -1, *q.shape[2:])
    return out[:, :length]


def _pallas_tpu_attention(q_BLHD, k_BSHD, v_BSHD, kv_lengths_B=None):
    from jax.experimental.pallas.ops.tpu import flash_attention as fa

    scale = q_BLHD.shape[-1] ** -0.5
    bias = None
    if kv_lengths_B is not None:
        mask_BS = _key_mask(kv_lengths_B, k_BSHD.shape[1])
        bias = jnp.where(mask_BS, 0.0, jnp.finfo(jnp.float32).min)[:, None, None, :]
        bias = jnp.broadcast_to(bias, (q_BLHD.shape[0], q_BLHD.shape[2], q_BLHD.shape[1], k_BSHD.shape[1]))
    out = fa.flash_attention(
        q_BLHD.swapaxes(1, 2), k_BSHD.swapaxes(1, 2), v_BSHD.swapaxes(1, 2), ab=bias, sm_scale=scale
    )
    return out.swapaxes(1, 2)


def _splash_blocks(length: int, largest: int) -> tuple[int, int]:
    """(padded length, block): the length rounded up to the 128-lane tile, and the largest block of at most
    `largest` (a multiple of 128) that divides it."""
    padded = -(-length // 128) * 128
    block = max(b for b in range(128, min(largest, padded) + 1, 128) if padded % b == 0)
    return padded, block


def _mesh_axes(mesh, names: tuple[str, ...], size: int) -> tuple[str, ...]:
    """The axes among `names` that `mesh` has (not yet manual, larger than 1) and whose product divides `size`:
    as sharding._fit, each axis must divide it, then axes are dropped from the end until their product does."""
    axes = [a for a in names if a in mesh.axis_names and a not in mesh.manual_axes and mesh.shape[a] > 1
            and size % mesh.shape[a] == 0]
    while axes and size % math.prod(mesh.shape[a] for a in axes):
        axes.pop()
    return tuple(axes)


def _splash_attention(q_BLHD, k_BSHD, v_BSHD, kv_lengths_B=None, block: int = SPLASH_BLOCK):
    """jax's Pallas TPU splash attention (`_splash_one_device`), under a shard_map when a mesh of several
    devices is set (jax.set_mesh): jax cannot partition a Mosaic kernel itself ("Mosaic kernels cannot be
    automatically partitioned. Please wrap the call in a shard_map"). Examples are split over the mesh's batch
    axes (data, fsdp) and heads over tensor (where the q/k/v projections' kernels put them), each axis only where
    it divides the size; the work is repeated over the axes left out (a batch of 2 on data 4 x fsdp 2: split over
    fsdp, each half computed by all 4 data groups). Without a mesh set, the call is one device's: a jit over
    several devices then fails with jax's error above."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1 or mesh.are_all_axes_manual:
        return _splash_one_device(q_BLHD, k_BSHD, v_BSHD, kv_lengths_B, block)
    batch_axes = _mesh_axes(mesh, ("data", "fsdp"), q_BLHD.shape[0])
    head_axes = _mesh_axes(mesh, ("tensor",), q_BLHD.shape[2])
    spec = PartitionSpec(batch_axes or None, None, head_axes or None, None)
    # check_vma off: the splash kernel's output carries no record of which axes it varies over. Each device's
    # output varies only over the axes its inputs were split on, which is what out_specs says.
    shard_map = functools.partial(jax.shard_map, mesh=mesh, out_specs=spec, check_vma=False)
    if kv_lengths_B is None:
        one = lambda q, k, v: _splash_one_device(q, k, v, None, block)
        return shard_map(one, in_specs=(spec,) * 3)(q_BLHD, k_BSHD, v_BSHD)
    one = lambda q, k, v, n: _splash_one_device(q, k, v, n, block)
    in_specs = (spec,) * 3 + (PartitionSpec(batch_axes or None),)
    return shard_map(one, in_specs=in_specs)(q_BLHD, k_BSHD, v_BSHD, kv_lengths_B)


def _splash_one_device(q_BLHD, k_BSHD, v_BSHD, kv_lengths_B, block: int):
    """jax's Pallas TPU splash attention, one kernel call per example (vmap). Key lengths become segment ids
    (queries 0; key j 0 if j < length, else 1). Sequences are padded to a multiple of 128: padded keys are cut
    off by the same segment ids, padded queries are dropped. Head dims need no padding: the kernel takes 40, 80
    and 160 (in interpret mode, and Mosaic compiles them for v5e/v5p/v6e). The kernel does not scale q.

    The kernel is chosen when the program is lowered (lax.platform_dependent): the compiled Mosaic kernel for
    a TPU, the same kernel in Pallas interpret mode for a CPU (slow; for tests). A CPU host compiling for a TPU
    ahead of time (emo-compile) so gets the real kernel."""
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as splash_mask

    batch, length, heads, head_dim = q_BLHD.shape
    keys = k_BSHD.shape[1]
    length_p, block_q = _splash_blocks(length, block)
    keys_p, block_kv = _splash_blocks(keys, block)
    # Scaled in float32: a bf16 scale (0.1582 for 0.1581 at head_dim 40) would bias every score the same way.
    q = (q_BLHD.astype(jnp.float32) * head_dim ** -0.5).astype(q_BLHD.dtype)
    q = jnp.pad(q, ((0, 0), (0, length_p - length), (0, 0), (0, 0)))
    k, v = (jnp.pad(t, ((0, 0), (0, keys_p - keys), (0, 0), (0, 0))) for t in (k_BSHD, v_BSHD))
    segment_ids, segment_axes = None, None
    if kv_lengths_B is not None or keys_p != keys:
        lengths_B = jnp.full((batch,), keys, jnp.int32) if kv_lengths_B is None else kv_lengths_B.astype(jnp.int32)
        kv_ids_BS = (jnp.arange(keys_p)[None, :] >= lengths_B[:, None]).astype(jnp.int32)
        segment_ids = splash.SegmentIds(q=jnp.zeros((length_p,), jnp.int32), kv=kv_ids_BS)
        segment_axes = splash.SegmentIds(q=None, kv=0)
    mask = splash_mask.MultiHeadMask([splash_mask.FullMask((length_p, keys_p))] * heads)
    sizes = splash.BlockSizes(block_q=block_q, block_kv=block_kv, block_kv_compute=block_kv, block_q_dkv=block_q,
                              block_kv_dkv=block_kv, block_kv_dkv_compute=block_kv, block_q_dq=block_q,
                              block_kv_dq=block_kv)

    def run(interpret: bool):
        kernel = splash.make_splash_mha_single_device(mask, block_sizes=sizes, interpret=interpret)
        return lambda q, k, v, ids: jax.vmap(kernel, in_axes=(0, 0, 0, segment_axes))(q, k, v, ids)

    out_BHLD = jax.lax.platform_dependent(q.swapaxes(1, 2), k.swapaxes(1, 2), v.swapaxes(1, 2), segment_ids,
                                          tpu=run(False), cpu=run(True))
    return out_BHLD.swapaxes(1, 2)[:, :length]


def _check_backend(impl: str) -> None:
    backend = jax.default_backend()
    if backend in _UNSUPPORTED.get(impl, ()):
        choices = [i for i in IMPLEMENTATIONS if backend not in _UNSUPPORTED.get(i, ())]
        raise ValueError(f"attention implementation {impl!r} cannot run on {backend}: set model.unet.attention_impl "
                         f"to one of {choices}")


def dot_product_attention(q_BLHD, k_BSHD, v_BSHD, kv_lengths_B=None, impl: str = "xla", chunk: int = 1024):
    """softmax(q k^T / sqrt(d)) v over [batch, length, heads, head_dim]; kv_lengths_B (int32 [B]) keeps only
    the first kv_lengths_B[b] keys of example b (None: all)."""
    _check_backend(impl)
    if impl == "xla":
        return _xla_attention(q_BLHD, k_BSHD, v_BSHD, kv_lengths_B)
    if impl == "chunked":
        return _chunked_attention(q_BLHD, k_BSHD, v_BSHD, kv_lengths_B, chunk)
    if impl in ("jax", "cudnn"):
        # Query lengths must be given with key lengths: all queries are valid.
        q_lengths = None if kv_lengths_B is None else jnp.full(kv_lengths_B.shape, q_BLHD.shape[1], jnp.int32)
        return jax.nn.dot_product_attention(
            q_BLHD, k_BSHD, v_BSHD, query_seq_lengths=q_lengths,
            key_value_seq_lengths=None if kv_lengths_B is None else kv_lengths_B.astype(jnp.int32),
            implementation="cudnn" if impl == "cudnn" else None)
    if impl == "pallas_tpu":
        return _pallas_tpu_attention(q_BLHD, k_BSHD, v_BSHD, kv_lengths_B)
    if impl == "splash":
        return _splash_attention(q_BLHD, k_BSHD, v_BSHD, kv_lengths_B)
    raise ValueError(f"unknown attention implementation {impl!r}; choose one of {IMPLEMENTATIONS}")


class Attention(nn.Module):
    """Multi-head attention with diffusers' parameter names (to_q, to_k, to_v, to_out_0)."""

    dim: int
    heads: int
    context_dim: int | None = None
    zero_init_out: bool = False
    qkv_bias: bool = False
    impl: str = "xla"
    chunk: int = 1024
    min_keys: int = 0  # fewer keys than this: plain XLA whatever `impl` says
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_BLC, context_BSD=None, extra_kv_BSC=None, extra_keep_B=None):
        """Attends x to context (or itself); extra_kv joins the keys/values (reference-attention) where extra_keep."""
        dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype)
        kv_in = x_BLC if context_BSD is None else context_BSD
        kv_lengths_B = None
        if extra_kv_BSC is not None:
            own = kv_in.shape[1]
            kv_in = jnp.concatenate([kv_in, extra_kv_BSC.astype(kv_in.dtype)], axis=1)
            if extra_keep_B is not None:  # dropped: only the own keys, which come first
                keep_B = jnp.broadcast_to(extra_keep_B, (kv_in.shape[0],))
                kv_lengths_B = jnp.where(keep_B, kv_in.shape[1], own).astype(jnp.int32)
        in_axes = ("embed", "heads")
        q = dense(self.dim, use_bias=self.qkv_bias, name="to_q", kernel_init=dense_init(in_axes),
                  bias_init=zeros_init(("heads",)))(x_BLC)
        k = dense(self.dim, use_bias=self.qkv_bias, name="to_k", kernel_init=dense_init(in_axes),
                  bias_init=zeros_init(("heads",)))(kv_in)
        v = dense(self.dim, use_bias=self.qkv_bias, name="to_v", kernel_init=dense_init(in_axes),
                  bias_init=zeros_init(("heads",)))(kv_in)
        split = lambda t: t.reshape(*t.shape[:2], self.heads, self.dim // self.heads)
        impl = self.impl if kv_in.shape[1] >= self.min_keys else "xla"
        out = dot_product_attention(split(q), split(k), split(v), kv_lengths_B, impl, self.chunk)
        out = out.reshape(*out.shape[:2], self.dim)
        out_init = zeros_init(("heads", "embed")) if self.zero_init_out else dense_init(("heads", "embed"))
        return dense(x_BLC.shape[-1], name="to_out_0", kernel_init=out_init, bias_init=zeros_init(("embed",)))(out)
