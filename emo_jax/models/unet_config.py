"""The static description of a UNet: SD1.5's shape plus the switches for EMO's extra layers."""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# What a rematerialised block keeps from its forward pass for the backward (jax.checkpoint_policies by name):
# nothing (recompute the whole block), every matmul/conv output, or those without batch dimensions.
REMAT_POLICIES = ("nothing_saveable", "dots_saveable", "dots_with_no_batch_dims_saveable")

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def dtype_from_name(name: str) -> Any:
    if name not in _DTYPES:
        raise ValueError(f"unknown dtype {name!r}; choose one of {sorted(_DTYPES)}")
    return _DTYPES[name]


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    """Hashable (so it can be a Flax module attribute); built from the `model.unet` config section."""

    in_channels: int = 4
    out_channels: int = 4
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    attention_levels: tuple[bool, ...] = (True, True, True, False)  # CrossAttnDownBlock2D x3 + DownBlock2D
    layers_per_block: int = 2
    heads: int = 8  # diffusers calls this attention_head_dim for SD1.5; it is the number of heads
    norm_groups: int = 32
    # Which conditioning layers exist (sd mode: text cross-attention only).
    text_cross_attention: bool = True
    cross_attention_dim: int = 768
    reference_mode: str | None = None  # None, "concat" or "cross"
    audio_attention: bool = False
    audio_dim: int = 768
    temporal: bool = False
    temporal_heads: int = 8
    temporal_max_len: int = 32
    temporal_layers: int = 1
    speed_attention: bool = False
    speed_dim: int = 768
    # Where a motion module's speed attention runs: True, before its temporal attention (each frame's speed reaches
    # the attention that moves features across frames; configs/emo_512.py); False, after it, as emo-jax built it
    # until 2026-11-29, the value a checkpoint saved before then was trained with.
    speed_before_temporal: bool = False
    # Execution.
    attention_impl: str = "xla"
    attention_chunk: int = 1024
    attention_min_keys: int = 128  # fewer keys: plain XLA attention (fused kernels lose on short sequences)
    remat: bool = False  # rematerialise each transformer and temporal block in the backward pass
    # ...and each ResNet block: the backward keeps the block's input instead of its GroupNorm/SiLU/conv
    # intermediates, which under tensor parallelism are all-gathered (full channels) and tile-padded.
    remat_resnets: bool = False
    remat_policy: str = "nothing_saveable"  # one of REMAT_POLICIES, for every rematerialised block
    dtype: str = "float32"
    param_dtype: str = "float32"

    def __post_init__(self):
        if self.remat_policy not in REMAT_POLICIES:
            raise ValueError(f"unet.remat_policy {self.remat_policy!r} is not one of {REMAT_POLICIES}")
        if len(self.attention_levels) != len(self.block_out_channels):
            raise ValueError("unet.attention_levels needs one entry per unet.block_out_channels entry")
        if self.reference_mode not in (None, "concat", "cross"):
            raise ValueError(f"unet.reference_mode must be None, 'concat' or 'cross', not {self.reference_mode!r}")
        if self.reference_mode == "cross" and self.text_cross_attention:
            raise ValueError("reference_mode 'cross' uses the text cross-attention slot; set text_cross_attention False")
        for c in self.block_out_channels:
            if c % self.norm_groups or c % self.heads:
                raise ValueError(f"channel count {c} must divide by norm_groups {self.norm_groups} and heads {self.heads}")

    @property
    def attention_options(self) -> dict:
        """How every attention of the UNet runs (emo_jax.models.attention.Attention's impl, chunk, min_keys)."""
        return dict(impl=self.attention_impl, chunk=self.attention_chunk, min_keys=self.attention_min_keys)

    @property
    def compute_dtype(self) -> Any:
        return dtype_from_name(self.dtype)

    @property
    def weights_dtype(self) -> Any:
        return dtype_from_name(self.param_dtype)

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)


@functools.lru_cache(maxsize=None)
def rematted(block_cls: type, policy: str) -> type:
    """`block_cls` under nn.remat, keeping what jax.checkpoint_policies.<policy> saves (one class per pair)."""
    return nn.remat(block_cls, policy=getattr(jax.checkpoint_policies, policy))
