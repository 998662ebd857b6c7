"""VAE: parity with diffusers' AutoencoderKL on random tiny weights, chunked encode/decode."""
import jax
import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL as TorchAutoencoderKL

from emo_jax.interop.vae_import import load_vae
from emo_jax.models.vae import AutoencoderKL
from emo_jax.models.vae_codec import VAECodec
from tests.helpers import TINY_DIFFUSERS_VAE


def rel_err(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(np.asarray(b))))


@pytest.fixture(scope="module")
def torch_vae():
    torch.manual_seed(0)
    vae = TorchAutoencoderKL(**TINY_DIFFUSERS_VAE).eval()
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
    return root


@pytest.fixture(scope="module")
def loaded(folders):
    return load_vae(str(folders / "vae"))


def test_config_read_from_json(loaded):
    _, _, config = loaded
    assert config.block_out_channels == (32, 64) and config.layers_per_block == 1
    assert config.norm_groups == 8 and config.latent_channels == 4 and config.scaling_factor == 0.18215
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
