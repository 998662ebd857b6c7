"""Loading a diffusers AutoencoderKL folder: safetensors or .bin, old attention key names, and errors naming the
file and key."""
import json
import os
import re
import shutil

import numpy as np
import pytest
from flax import traverse_util

from emo_jax.errors import CheckpointError
from emo_jax.interop.vae_import import load_vae
from tests.helpers import TINY_DIFFUSERS_VAE

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
from safetensors.torch import load_file, save_file  # noqa: E402

WEIGHTS = "diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(**TINY_DIFFUSERS_VAE).eval()
    root = tmp_path_factory.mktemp("sd")
    vae.save_pretrained(root / "vae")
    vae.save_pretrained(root / "vae_bin", safe_serialization=False)
    return root


@pytest.fixture(scope="module")
def loaded(folders):
    return load_vae(str(folders / "vae"))


def test_bin_checkpoint_gives_the_same_params(folders, loaded):
    assert os.path.isfile(folders / "vae_bin" / "diffusion_pytorch_model.bin")
    assert not os.path.exists(folders / "vae_bin" / WEIGHTS)
    _, params_bin, _ = load_vae(str(folders / "vae_bin"))
    flat, flat_bin = traverse_util.flatten_dict(loaded[1]), traverse_util.flatten_dict(params_bin)
    assert flat.keys() == flat_bin.keys()
    assert all(np.array_equal(flat[k], flat_bin[k]) for k in flat)


def test_deprecated_attention_key_names_load(folders, loaded, tmp_path):
    state = load_file(folders / "vae" / WEIGHTS)
    renames = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    old = {}
    for key, value in state.items():
        for new, dep in renames.items():
            key = key.replace(f".attentions.0.{new}.", f".attentions.0.{dep}.")
        old[key] = value
    assert "decoder.mid_block.attentions.0.proj_attn.weight" in old
    shutil.copy(folders / "vae" / "config.json", tmp_path / "config.json")
    save_file(old, tmp_path / WEIGHTS)
    _, params, _ = load_vae(str(tmp_path))
    got = params["decoder"]["mid_block"]["attentions_0"]["to_out_0"]["kernel"]
    want = loaded[1]["decoder"]["mid_block"]["attentions_0"]["to_out_0"]["kernel"]
    assert np.array_equal(got, want)


def test_missing_folder_names_the_path(tmp_path):
    with pytest.raises(CheckpointError, match=re.escape(str(tmp_path / "nowhere" / "vae"))):
        load_vae(str(tmp_path / "nowhere" / "vae"))


def test_missing_weights_file_names_the_folder(folders, tmp_path):
    shutil.copy(folders / "vae" / "config.json", tmp_path / "config.json")
    with pytest.raises(CheckpointError, match=re.escape(str(tmp_path))):
        load_vae(str(tmp_path))


def test_wrong_shape_names_file_and_key(folders, tmp_path):
    state = load_file(folders / "vae" / WEIGHTS)
    state["decoder.conv_out.weight"] = torch.zeros(3, 32, 1, 1)
    shutil.copy(folders / "vae" / "config.json", tmp_path / "config.json")
    save_file(state, tmp_path / WEIGHTS)
    with pytest.raises(CheckpointError) as err:
        load_vae(str(tmp_path))
    assert str(tmp_path / WEIGHTS) in str(err.value) and "decoder.conv_out.weight" in str(err.value)


def test_missing_key_is_listed(folders, tmp_path):
    state = load_file(folders / "vae" / WEIGHTS)
    del state["encoder.mid_block.attentions.0.group_norm.bias"]
    shutil.copy(folders / "vae" / "config.json", tmp_path / "config.json")
    save_file(state, tmp_path / WEIGHTS)
    with pytest.raises(CheckpointError, match=r"encoder\.mid_block\.attentions\.0\.group_norm\.bias"):
        load_vae(str(tmp_path))


def test_unsupported_config_names_the_key(folders, tmp_path):
    config = json.loads((folders / "vae" / "config.json").read_text())
    config["use_quant_conv"] = False
    (tmp_path / "config.json").write_text(json.dumps(config))
    shutil.copy(folders / "vae" / WEIGHTS, tmp_path / WEIGHTS)
    with pytest.raises(CheckpointError, match="use_quant_conv"):
        load_vae(str(tmp_path))
