"""PyTorch reference modules for the parts EMO shares with AnimateDiff and Hallo, built from diffusers' layers.

Each one is written from the public module layout (AnimateDiff's motion_module.py for the motion module, Hallo's
face_locator.py and audio projection), with the same parameter names, so its state_dict is a checkpoint in that
layout and its forward is what such a checkpoint computes in PyTorch.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from torch import nn


class PositionalEncoding(nn.Module):
    """AnimateDiff's sinusoidal table `pe` [1, max_len, dim], added to the attention input."""

    def __init__(self, dim: int, max_len: int):
        super().__init__()
        position = torch.arange(max_len).unsqueeze(1)
        div = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
        pe = torch.zeros(1, max_len, dim)
        pe[0, :, 0::2] = torch.sin(position * div)
        pe[0, :, 1::2] = torch.cos(position * div)
        self.register_buffer("pe", pe)

    def forward(self, x_BFC):
        return x_BFC + self.pe[:, :x_BFC.shape[1]]


class TemporalSelfAttention(Attention):
    """diffusers' Attention (no q/k/v bias) over the frame axis, with AnimateDiff's `pos_encoder` on its input."""

    def __init__(self, dim: int, heads: int, max_len: int):
        super().__init__(query_dim=dim, heads=heads, dim_head=dim // heads, bias=False)
        self.pos_encoder = PositionalEncoding(dim, max_len)

    def forward(self, x_BFC):
        return super().forward(self.pos_encoder(x_BFC))


class TemporalTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, max_len: int):
        super().__init__()
        self.attention_blocks = nn.ModuleList([TemporalSelfAttention(dim, heads, max_len) for _ in range(2)])
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(2)])
        self.ff = FeedForward(dim, activation_fn="geglu")
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, x_BFC):
        for attention, norm in zip(self.attention_blocks, self.norms):
            x_BFC = attention(norm(x_BFC)) + x_BFC
        return self.ff(self.ff_norm(x_BFC)) + x_BFC


class TemporalTransformer(nn.Module):
    def __init__(self, channels: int, heads: int, groups: int, layers: int, max_len: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList([TemporalTransformerBlock(channels, heads, max_len)
                                                 for _ in range(layers)])
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, x_BCFHW):
        """x + module(x) on [B, C, F, H, W]; the GroupNorm sees one frame at a time, as AnimateDiff's does."""
        b, c, f, h, w = x_BCFHW.shape
        frames = x_BCFHW.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
        tokens = self.norm(frames).reshape(b, f, c, h * w).permute(0, 3, 1, 2).reshape(b * h * w, f, c)
        tokens = self.proj_in(tokens)
        for block in self.transformer_blocks:
            tokens = block(tokens)
        delta = self.proj_out(tokens).reshape(b, h, w, f, c).permute(0, 4, 3, 1, 2)
        return x_BCFHW + delta


class MotionModule(nn.Module):
    """AnimateDiff v2's VanillaTemporalModule: its state_dict keys are mm_sd_v15_v2's under one module."""

    def __init__(self, channels: int, heads: int, groups: int, layers: int = 1, max_len: int = 32):
        super().__init__()
        self.temporal_transformer = TemporalTransformer(channels, heads, groups, layers, max_len)

    def forward(self, x_BCFHW):
        return self.temporal_transformer(x_BCFHW)


def face_locator_forward(state: dict[str, np.ndarray], mask_BHWC: np.ndarray, prefix: str = "face_locator.",
                         ) -> np.ndarray:
    """Hallo's FaceLocator from its state dict: silu(conv_in), silu(blocks.i) (every odd block stride 2), conv_out."""
    t = {k[len(prefix):]: torch.from_numpy(np.asarray(v, np.float32)) for k, v in state.items()
         if k.startswith(prefix)}
    conv = lambda x, name, stride=1: torch.nn.functional.conv2d(  # noqa: E731
        x, t[f"{name}.weight"], t[f"{name}.bias"], stride=stride, padding=1)
    h = torch.nn.functional.silu(conv(torch.from_numpy(mask_BHWC).permute(0, 3, 1, 2), "conv_in"))
    blocks = sorted({int(k.split(".")[1]) for k in t if k.startswith("blocks.")})
    for i in blocks:
        h = torch.nn.functional.silu(conv(h, f"blocks.{i}", stride=2 if i % 2 else 1))
    return conv(h, "conv_out").permute(0, 2, 3, 1).numpy()


def audio_proj_forward(state: dict[str, np.ndarray], feats_NCLD: np.ndarray, tokens: int,
                       prefix: str = "audioproj.") -> np.ndarray:
    """Hallo's AudioProjModel from its state dict: flatten, relu(proj1), relu(proj2), proj3, LayerNorm per token."""
    t = {k[len(prefix):]: torch.from_numpy(np.asarray(v, np.float32)) for k, v in state.items()
         if k.startswith(prefix)}
    f = torch.nn.functional
    h = torch.from_numpy(feats_NCLD).reshape(feats_NCLD.shape[0], -1)
    h = f.relu(f.linear(h, t["proj1.weight"], t["proj1.bias"]))
    h = f.relu(f.linear(h, t["proj2.weight"], t["proj2.bias"]))
    h = f.linear(h, t["proj3.weight"], t["proj3.bias"]).reshape(h.shape[0], tokens, -1)
    return f.layer_norm(h, (h.shape[-1],), t["norm.weight"], t["norm.bias"]).numpy()
