"""Importing a Hugging Face wav2vec2 folder: errors name the file and key, unknown keys are logged."""
import logging
import os

import numpy as np
import pytest

from emo_jax.errors import CheckpointError
from emo_jax.interop.wav2vec2_import import load_wav2vec2
from tests.audio.w2v_tiny import save_tiny

pytest.importorskip("torch")
from safetensors.numpy import load_file, save_file  # noqa: E402


def test_missing_key_and_wrong_shape_name_file_and_key(tmp_path, caplog):
    folder = str(tmp_path / "w2v")
    save_tiny(folder)
    path = os.path.join(folder, "model.safetensors")
    sd = load_file(path)
    key = "encoder.layers.1.attention.k_proj.weight"

    save_file({k: v for k, v in sd.items() if k != key}, path)
    with pytest.raises(CheckpointError, match=key) as info:
        load_wav2vec2(folder)
    assert path in str(info.value)

    save_file({**sd, key: np.zeros((32, 31), np.float32)}, path)
    with pytest.raises(CheckpointError, match=key) as info:
        load_wav2vec2(folder)
    assert path in str(info.value)

    save_file({**sd, "mystery.weight": np.zeros(3, np.float32)}, path)
    with caplog.at_level(logging.WARNING):
        load_wav2vec2(folder)
    assert "mystery.weight" in caplog.text


def test_missing_folder_and_config(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_wav2vec2(str(tmp_path / "nowhere"))
    np.save(tmp_path / "x.npy", 0)
    save_file({"a": np.zeros(1, np.float32)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="config.json"):
        load_wav2vec2(str(tmp_path))
