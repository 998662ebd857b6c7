"""Shared test utilities: tiny random PyTorch reference models, error measures, and live (perturbed) parameters."""
from __future__ import annotations

import contextlib
import logging

import numpy as np


@contextlib.contextmanager
def root_logging_kept():
    """Puts the root logger's handlers and level back afterwards: for a command run in-process by a module- or
    session-scoped fixture, which runs outside conftest's per-test restore, so its stderr handler would otherwise
    print every later test's log lines (absl's, Orbax's) into the stderr those tests check."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def rel_err(a, b) -> float:
    """max |a - b| / max |b|: the parity measure used throughout the tests."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


def perturb_zero_leaves(params: dict, seed: int = 0, scale: float = 0.05) -> dict:
    """`params` with every all-zero leaf drawn from N(0, scale^2): the zero-initialised layers (audio attention,
    motion modules, face locator output; biases too) get values, so audio, motion frames and the face mask change
    a model's output and wiring that drops one of them shows."""
    from flax import traverse_util

    flat = traverse_util.flatten_dict(params)
    rng = np.random.default_rng(seed)
    for path, value in flat.items():
        if not np.any(np.asarray(value)):
            flat[path] = scale * rng.standard_normal(value.shape).astype(np.float32)
    return traverse_util.unflatten_dict(flat)


def randomize_torch_module(module, seed: int = 0, scale: float = 0.2) -> None:
    """Gives every parameter (norms and zero-initialised layers included) random values, so parity can fail."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            base = 1.0 if name.endswith(("norm.weight", "norm1.weight", "norm2.weight", "norm3.weight")) else 0.0
            p.copy_(base + scale * torch.randn(p.shape, generator=gen))


TINY_DIFFUSERS_UNET = dict(
    sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    layers_per_block=1, attention_head_dim=2, norm_num_groups=8, cross_attention_dim=16,
)
TINY_DIFFUSERS_VAE = dict(
    block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8, latent_channels=4,
    down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
)
