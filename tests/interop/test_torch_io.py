"""Reading PyTorch state dicts: damaged tensor data is refused, naming the file and the first non-finite tensor."""
import json
import os
import struct

import numpy as np
import pytest
from safetensors.numpy import save_file

from emo_jax.errors import CheckpointError
from emo_jax.interop.sd_unet import load_unet_state
from emo_jax.interop.torch_io import load_state_dict, save_state_dict


def _state() -> dict:
    return {"conv_in.bias": np.arange(4, dtype=np.float32), "conv_in.weight": np.ones((2, 2), np.float32),
            "step": np.array([3], np.int64)}


def _nan_data(path, key: str) -> None:
    """Overwrites tensor `key`'s data bytes in a safetensors file with NaN, leaving its header valid."""
    data = bytearray(path.read_bytes())
    (header_size,) = struct.unpack("<Q", data[:8])
    start, end = json.loads(data[8:8 + header_size])[key]["data_offsets"]
    base = 8 + header_size
    data[base + start:base + end] = np.full((end - start) // 4, np.nan, np.float32).tobytes()
    path.write_bytes(bytes(data))


def test_saved_files_are_readable_as_the_umask_allows(tmp_path):
    save_state_dict(_state(), str(tmp_path / "w.safetensors"))
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(tmp_path / "w.safetensors").st_mode & 0o777 == 0o666 & ~mask


def test_intact_safetensors_load(tmp_path):
    save_file(_state(), str(tmp_path / "w.safetensors"))
    loaded = load_state_dict(str(tmp_path / "w.safetensors"))
    assert all(np.array_equal(loaded[k], v) for k, v in _state().items())


def test_safetensors_with_nan_data_is_refused_by_name(tmp_path):
    unet = tmp_path / "unet"
    unet.mkdir()
    (unet / "config.json").write_text("{}")
    path = unet / "diffusion_pytorch_model.safetensors"
    save_file(_state(), str(path))
    _nan_data(path, "conv_in.weight")
    with pytest.raises(CheckpointError, match=r"diffusion_pytorch_model\.safetensors.*tensor 'conv_in\.weight' "
                                              r"holds 4 non-finite values"):
        load_state_dict(str(path))
    with pytest.raises(CheckpointError, match=r"tensor 'conv_in\.weight'"):  # the SD import reads through it
        load_unet_state(str(tmp_path))


def test_bin_with_an_inf_is_refused_by_name(tmp_path):
    torch = pytest.importorskip("torch")
    state = {k: torch.from_numpy(v) for k, v in _state().items()}
    state["conv_in.bias"][2] = float("inf")
    torch.save(state, str(tmp_path / "pytorch_model.bin"))
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin.*tensor 'conv_in\.bias' holds 1 non-finite"):
        load_state_dict(str(tmp_path / "pytorch_model.bin"))
