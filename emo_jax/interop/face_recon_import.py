"""Loading Deep3DFaceRecon_pytorch's face reconstruction weights (`epoch_20.pth`, which the user supplies: a
torch.save of {'net_recon': ReconNetWrapper's state dict, and optimiser/scheduler states}) into
emo_jax/eval/face_recon.py's FaceReconNet.

The state dict's keys: `backbone.` then torchvision's ResNet-50 names without `fc` (`conv1`, `bn1`,
`layer{1-4}.{i}.conv{1-3}`, `.bn{1-3}`, `.downsample.0` (conv) and `.downsample.1` (batch norm)), and
`final_layers.{0-6}.weight` [width, 2048, 1, 1] and `.bias`, the seven 1x1 heads. Convolutions have `weight`
only, batch norms `weight`, `bias`, `running_mean`, `running_var` and a training counter `num_batches_tracked`
(ignored). A file holding that state dict alone (a .pth or a .safetensors) is read too. Every parameter must have
its key with the right shape, and every key but the counters a parameter: a wrong or missing key is a
CheckpointError naming the file and the key.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from emo_jax.errors import CheckpointError
from emo_jax.eval.face_recon import SIZE, FaceReconNet
from emo_jax.interop.torch_io import StateDict, _finite, load_state_dict
from emo_jax.paths import require_file

CHECKPOINT_KEY = "net_recon"
_LEAF = {"kernel": "weight", "scale": "weight", "bias": "bias", "running_mean": "running_mean",
         "running_var": "running_var"}
_FIX = "pass Deep3DFaceRecon_pytorch's checkpoints/<name>/epoch_20.pth (or its net_recon state dict)"


def torch_key(path: tuple[str, ...]) -> str:
    """Our parameter path -> the repository's key: ('backbone', 'layer2_0', 'downsample_1', 'running_var') ->
    'backbone.layer2.0.downsample.1.running_var', ('final_layers_1', 'kernel') -> 'final_layers.1.weight'."""
    *modules, leaf = path
    return ".".join([re.sub(r"_(\d+)$", r".\1", m) for m in modules] + [_LEAF[leaf]])


def _our_layout(value: np.ndarray, ndim: int) -> np.ndarray:
    """torch's Conv [out, in, kh, kw] -> Flax's [kh, kw, in, out]; a 1x1 head conv -> a Dense kernel [in, out]."""
    if value.ndim != 4:
        return value
    if ndim == 2:
        return value.reshape(value.shape[:2]).T if value.shape[2:] == (1, 1) else value
    return np.transpose(value, (2, 3, 1, 0))


def param_template(module: FaceReconNet) -> dict:
    """Parameter shapes and dtypes of `module` (nothing computed)."""
    images = jax.ShapeDtypeStruct((1, SIZE, SIZE, 3), jnp.float32)
    return nn.unbox(jax.eval_shape(module.init, jax.random.key(0), images))["params"]


def face_recon_params(state: StateDict, module: FaceReconNet, source: str) -> dict:
    """Flax params from ReconNetWrapper's state dict; `source` names it in errors."""
    template = traverse_util.flatten_dict(param_template(module))
    params, used = {}, set()
    for path, want in template.items():
        key = torch_key(path)
        if key not in state:
            raise CheckpointError(f"{source}: key {key!r} missing; {_FIX}")
        value = _our_layout(np.asarray(state[key]), len(want.shape))
        if value.shape != want.shape:
            raise CheckpointError(f"{source}: key {key!r} has shape {tuple(np.shape(state[key]))}; the ResNet-50 "
                                  f"face reconstruction network expects one that becomes {want.shape} "
                                  f"({'/'.join(path)}); is it a ResNet-18 checkpoint or another network's file?")
        params[path] = value.astype(want.dtype)
        used.add(key)
    unused = sorted(k for k in state if k not in used and not k.endswith(".num_batches_tracked"))
    if unused:
        raise CheckpointError(f"{source}: {len(unused)} keys the face reconstruction network has no place for: "
                              f"{unused}")
    return traverse_util.unflatten_dict(params)


def read_net_recon(path: str) -> StateDict:
    """The net_recon state dict of a Deep3DFaceRecon checkpoint (or of a file holding that state dict alone), as
    numpy arrays, every floating-point tensor checked finite."""
    require_file(path, "face reconstruction weights file", _FIX, CheckpointError)
    if path.endswith(".safetensors"):
        return load_state_dict(path)
    try:
        import torch
    except ImportError as e:
        raise CheckpointError(f"{path!r} is a PyTorch file, which needs torch installed; install torch or save "
                              "its net_recon state dict as .safetensors") from e
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot read {path!r} as a PyTorch checkpoint: {e}; {_FIX}") from e
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"{path!r} holds a {type(checkpoint).__name__}, not a checkpoint dict; {_FIX}")
    state = checkpoint.get(CHECKPOINT_KEY, checkpoint)
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path!r} has no {CHECKPOINT_KEY!r} state dict (its keys: {sorted(checkpoint)[:8]}); "
                              f"{_FIX}")
    return _finite({k: v.detach().float().numpy() if v.dtype.is_floating_point else v.numpy()
                    for k, v in state.items()}, path)


def load_face_recon(path: str) -> tuple[FaceReconNet, Any]:
    """(module, params) from Deep3DFaceRecon_pytorch's epoch_20.pth (or its net_recon state dict as .pth or
    .safetensors); emo_jax/eval/face_recon.py's expression_coefficients takes the params."""
    module = FaceReconNet()
    return module, jax.device_put(face_recon_params(read_net_recon(path), module, path))
