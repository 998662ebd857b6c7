"""VAE: parity with diffusers' AutoencoderKL on random tiny weights, loading, chunked encode/decode."""
import json
import os
import re
import shutil

import jax
import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL as TorchAutoencoderKL
from flax import traverse_util
from safetensors.torch import load_file, save_file

from emo_jax.interop.torch_io import CheckpointError
from emo_jax.models.vae import AutoencoderKL
from emo_jax.models.vae_codec import VAECodec
from emo_jax.models.vae_io import load_vae

TINY = dict(block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8, latent_channels=4,
            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
WEIGHTS = "diffusion_pytorch_model.safetensors"


def rel_err(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(np.asarray(b))))


@pytest.fixture(scope="module")
def torch_vae():
    torch.manual_seed(0)
    vae = TorchAutoencoderKL(**TINY).eval()
    # Small conv weights and biases keep the variance seen by each GroupNorm near 1e-3, where its eps (1e-6 in the
    # VAE) moves the output by far more than 1e-4; with unit-variance activations a wrong eps would pass.
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if "norm" in name:
                p.copy_(torch.randn_like(p) * 0.3 + (1.0 if name.endswith("weight") else 0.0))
            elif p.ndim == 1:
                p.copy_(torch.randn_like(p) * 0.01)
            else:  # attention projections keep unit gain so the softmax is far from uniform
                p.copy_(torch.randn_like(p) / p[0].numel() ** 0.5 * (0.1 if p.ndim == 4 else 1.0))
    return vae


@pytest.fixture(scope="module")
def folders(torch_vae, tmp_path_factory):
    root = tmp_path_factory.mktemp("sd")
    torch_vae.save_pretrained(root / "vae")
    torch_vae.save_pretrained(root / "vae_bin", safe_serialization=False)
    return root


@pytest.fixture(scope="module")
def loaded(folders):
    return load_vae(str(folders / "vae"))


def test_config_read_from_json(loaded):
    _, _, config = loaded
    assert config.block_out_channels == (32, 64) and config.layers_per_block == 1
    assert config.norm_num_groups == 8 and config.latent_channels == 4 and config.scaling_factor == 0.18215
    assert config.downsample_factor == 2


def test_encoder_moments_match_diffusers(torch_vae, loaded):
    module, params, _ = loaded
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    with torch.no_grad():
        dist = torch_vae.encode(torch.from_numpy(x).permute(0, 3, 1, 2)).latent_dist
    mean, logvar = jax.jit(lambda p, v: module.apply({"params": p}, v, method=AutoencoderKL.encode))(params, x)
    want_mean, want_logvar = (t.permute(0, 2, 3, 1).numpy() for t in (dist.mean, dist.logvar))
    assert mean.shape == (2, 16, 16, 4)
    assert np.std(want_mean) > 1e-3 and np.std(want_logvar) > 1e-3  # non-trivial moments
    assert rel_err(mean, want_mean) < 1e-4
    assert rel_err(logvar, want_logvar) < 1e-4


def test_decoder_matches_diffusers(torch_vae, loaded):
    module, params, _ = loaded
    z = np.random.default_rng(1).standard_normal((2, 16, 16, 4)).astype(np.float32)
    with torch.no_grad():
        want = torch_vae.decode(torch.from_numpy(z).permute(0, 3, 1, 2)).sample.permute(0, 2, 3, 1).numpy()
    got = jax.jit(lambda p, v: module.apply({"params": p}, v, method=AutoencoderKL.decode))(params, z)
    assert got.shape == (2, 32, 32, 3)
    assert rel_err(got, want) < 1e-4


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


def test_chunked_decode_equals_one_shot(loaded):
    module, params, config = loaded
    latents = np.random.default_rng(2).standard_normal((5, 16, 16, 4)).astype(np.float32)
    one_shot = jax.jit(lambda p, z: module.apply({"params": p}, z / config.scaling_factor,
                                                 method=AutoencoderKL.decode))(params, latents)
    codec = VAECodec(module, params, chunk=2)
    frames = codec.decode(latents, output="float")
    assert frames.shape == (5, 32, 32, 3) and frames.dtype == np.float32
    assert np.array_equal(frames, np.asarray(one_shot))
    as_uint8 = codec.decode(latents)
    assert as_uint8.dtype == np.uint8
    assert np.array_equal(as_uint8, np.round(np.clip((frames + 1) * 127.5, 0, 255)).astype(np.uint8))


def test_chunked_encode_mean_and_sample(loaded):
    module, params, config = loaded
    frames = np.random.default_rng(3).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    mean, logvar = jax.jit(lambda p, x: module.apply({"params": p}, x, method=AutoencoderKL.encode))(
        params, frames.astype(np.float32) / 127.5 - 1.0)
    codec2, codec3 = VAECodec(module, params, chunk=2), VAECodec(module, params, chunk=3)
    assert rel_err(codec2.encode(frames), np.asarray(mean) * config.scaling_factor) < 1e-5
    key = jax.random.key(7)
    sample = codec2.encode(frames, key)
    assert rel_err(codec3.encode(frames, key), sample) < 1e-5
    noise = (sample / config.scaling_factor - np.asarray(mean)) / np.exp(0.5 * np.asarray(logvar))
    assert abs(noise.mean()) < 0.1 and abs(noise.std() - 1.0) < 0.1  # a unit Gaussian draw, not the mean
    assert not np.allclose(codec2.encode(frames, jax.random.key(8)), sample)


def test_chunk_function_compiles_once_for_any_length(loaded):
    module, params, _ = loaded
    codec = VAECodec(module, params, chunk=2)
    compiles = []
    listener = lambda event, duration, **kw: compiles.append(event)
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        for n in (1, 3, 4, 5):
            frames = codec.decode(np.zeros((n, 16, 16, 4), np.float32))
            assert frames.shape == (n, 32, 32, 3)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert compiles.count("/jax/core/compile/backend_compile_duration") == 1


def test_codec_rejects_wrong_shapes(loaded):
    codec = VAECodec(*loaded[:2], chunk=2)
    with pytest.raises(ValueError, match="multiples of 2"):
        codec.encode(np.zeros((1, 31, 32, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\[N, h, w, 4\]"):
        codec.decode(np.zeros((1, 16, 16, 3), np.float32))
