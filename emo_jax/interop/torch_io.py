"""Reading PyTorch checkpoints (safetensors, or .bin through torch) into numpy, from local paths only."""
from __future__ import annotations

import os
from typing import Iterable, Mapping

import numpy as np

from emo_jax.errors import CheckpointError
from emo_jax.paths import require_file, require_folder

StateDict = dict[str, np.ndarray]


def find_weights_file(folder: str, stems: Iterable[str] = ("diffusion_pytorch_model", "model", "pytorch_model")) -> str:
    """The weights file in a Hugging Face / diffusers folder: safetensors preferred over .bin."""
    require_folder(folder, "checkpoint folder", "pass a local diffusers/Hugging Face folder", CheckpointError)
    stems = tuple(stems)
    for ext in (".safetensors", ".bin"):
        for stem in stems:
            path = os.path.join(folder, stem + ext)
            if os.path.isfile(path):
                return path
    raise CheckpointError(
        f"no weights in {folder!r}: expected one of "
        + ", ".join(s + e for e in (".safetensors", ".bin") for s in stems)
    )


def load_state_dict(path: str) -> StateDict:
    """Loads a state dict as float32-or-native numpy arrays. A .bin is read with torch.load(weights_only=True).

    Every floating-point tensor must be finite: a NaN or Inf is a CheckpointError naming the file and the first
    such tensor, so damaged or diverged weights stop the import instead of turning every output into NaN."""
    return _finite(_read_state_dict(path), path)


def _finite(state: StateDict, path: str) -> StateDict:
    for key, value in state.items():
        if value.dtype.kind not in "biu" and not np.isfinite(np.asarray(value, np.float32)).all():
            bad = int(np.size(value) - np.isfinite(np.asarray(value, np.float32)).sum())
            raise CheckpointError(f"{path!r}: tensor {key!r} holds {bad} non-finite values (NaN or Inf); the file "
                                  "is damaged or the weights diverged; download or export it again")
    return state


def _read_state_dict(path: str) -> StateDict:
    require_file(path, "checkpoint file", "pass a .safetensors or .bin weights file", CheckpointError)
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file

        try:
            return dict(load_file(path))
        except Exception as e:  # safetensors raises several types for corrupt files
            raise CheckpointError(f"cannot read safetensors file {path!r}: {e}") from e
    try:
        import torch
    except ImportError as e:
        raise CheckpointError(
            f"{path!r} is a PyTorch .bin file, which needs torch installed; convert it to .safetensors or install torch"
        ) from e
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot read {path!r} as a PyTorch state dict: {e}") from e
    if "state_dict" in sd and isinstance(sd["state_dict"], Mapping):
        sd = sd["state_dict"]
    return {k: v.detach().float().numpy() if v.dtype.is_floating_point else v.numpy() for k, v in sd.items()}


def save_state_dict(state: Mapping[str, np.ndarray], path: str, metadata: Mapping[str, str] | None = None) -> None:
    """Writes a safetensors file atomically (temporary file, then rename)."""
    from safetensors.numpy import save_file

    tmp = path + ".tmp"
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, tmp, metadata=dict(metadata or {}))
    os.chmod(tmp, 0o666 & ~_umask())  # safetensors writes 0600; an export is meant to be shared like any file
    os.replace(tmp, path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
