"""Loading pytorch-fid's Inception weights (pt_inception-2015-12-05-6726825d.pth, a plain torch state dict in
torchvision's Inception3 layout: Conv2d_1a_3x3.conv.weight, Mixed_5b.branch1x1.bn.running_mean, ...) into
emo_jax/eval/inception.py's FIDInception.

The .pth's sha256 must start with the 8 hex digits in its name (emo_jax/eval/weights.py) before it is read by
load_state_dict (torch.load with weights_only=True, every tensor checked finite); the same state dict saved as
.safetensors or .bin loads the same way, without the digest check. Two kinds of keys are left out on purpose:
`fc.weight` and `fc.bias` (the 1008-class logits layer, after pool3, which FID does not use) and BatchNorm's
`num_batches_tracked` (a training counter). Any other key without a place, and any parameter without a key, is a CheckpointError.
"""
from __future__ import annotations

import os
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from emo_jax.errors import CheckpointError
from emo_jax.eval.inception import PRECISION, SIZE, FIDInception
from emo_jax.eval.weights import FID_SHA256_PREFIX, check_fid_sha256, fid_fetch_command
from emo_jax.interop.keys import torch_state_to_flax, zeros_template
from emo_jax.interop.torch_io import StateDict, load_state_dict
from emo_jax.paths import require_file

_NOT_FOR_FEATURES = re.compile(r"^fc\.(weight|bias)$|\.num_batches_tracked$")


def param_template(module: FIDInception) -> dict:
    """Parameter tree of the right shapes and dtypes without computing an initialisation."""
    dummy = jax.ShapeDtypeStruct((1, SIZE, SIZE, 3), jnp.float32)
    return zeros_template(nn.unbox(jax.eval_shape(module.init, jax.random.key(0), dummy))["params"])


def inception_params(state: StateDict, module: FIDInception, source: str) -> dict:
    """Flax params from a state dict in pytorch-fid's layout; `source` names it in errors."""
    kept = {k: v for k, v in state.items() if not _NOT_FOR_FEATURES.search(k)}
    params, missing, unused = torch_state_to_flax(kept, param_template(module), source)
    if missing:
        raise CheckpointError(f"{source}: {len(missing)} Inception keys missing: {missing}; pass pytorch-fid's "
                              "pt_inception-2015-12-05-6726825d.pth or a state dict in its layout")
    if unused:
        raise CheckpointError(f"{source}: {len(unused)} keys FID's Inception has no place for: {unused}; is it "
                              "torchvision's Inception-v3 instead of pytorch-fid's FID Inception?")
    return params


def load_fid_inception(path: str, sha256_prefix: str | None = FID_SHA256_PREFIX,
                       precision: Any = PRECISION) -> tuple[FIDInception, dict]:
    """(module, params) from pytorch-fid's weights file; sha256_prefix=None skips the digest check (for the same
    state dict saved as .safetensors or .bin, or other weights in its layout such as the tests' random ones)."""
    require_file(path, "FID Inception weights file",
                 f"fetch it with `{fid_fetch_command(os.path.dirname(path) or '.')}`", CheckpointError)
    if sha256_prefix is not None:
        check_fid_sha256(path, sha256_prefix)
    module = FIDInception(precision=precision)
    return module, jax.device_put(inception_params(load_state_dict(path), module, path))
