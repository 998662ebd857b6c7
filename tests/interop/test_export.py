"""Export to diffusers/AnimateDiff/Hallo-named safetensors: diffusers parity, round trips, manifest, errors."""
import json
import os
import shutil
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from safetensors.numpy import load_file, save_file

from emo_jax.build import vae_config
from emo_jax.config import load_config, model_config
from emo_jax.interop.export import FILES, MANIFEST, export_weights, import_weights
from emo_jax.interop.torch_io import CheckpointError
from emo_jax.models.emo import EMO, face_mask_size
from emo_jax.models.unet import UNet
from emo_jax.models.vae import AutoencoderKL
from emo_jax.params import module_of
from tests.helpers import rel_err

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
from tests import torch_references  # noqa: E402  (needs torch)


def _subtree(params, module):
    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict({p[1:]: v for p, v in flat.items() if module_of(p) == module})


def _from_pretrained(cls, folder):
    model, info = cls.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    return model.eval()


def test_backbone_spatial_part_matches_diffusers(tiny_stage3, exported):
    config, params, _ = tiny_stage3
    out, _ = exported
    torch_unet = _from_pretrained(diffusers.UNet2DConditionModel, out / "backbone_unet")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 16, 16, 4)).astype(np.float32)
    t = np.array([7, 640])
    # The zero attn2 filler adds exactly nothing, whatever the text.
    text = rng.standard_normal((2, 3, config.model.unet.cross_attention_dim)).astype(np.float32)
    # The backbone without EMO's extras (no reference tokens, audio, motion, speed) is a plain SD UNet.
    plain = UNet(model_config(config).reference_unet)
    ours = jax.jit(plain.apply)({"params": _subtree(params, "backbone")}, jnp.asarray(x), jnp.asarray(t))
    with torch.no_grad():
        ref = torch_unet(torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(t),
                         encoder_hidden_states=torch.from_numpy(text)).sample.permute(0, 2, 3, 1).numpy()
    assert np.abs(ref).max() > 0.1
    assert rel_err(ours, ref) < 1e-4


def test_reference_net_features_match_diffusers(tiny_stage3, exported):
    config, params, _ = tiny_stage3
    out, _ = exported
    torch_unet = _from_pretrained(diffusers.UNet2DConditionModel, out / "reference_net")
    tokens, points = [], []
    first = lambda o: o[0] if isinstance(o, tuple) else o
    for block in list(torch_unet.down_blocks) + [torch_unet.mid_block] + list(torch_unet.up_blocks):
        for attn in block.attentions:
            attn.register_forward_hook(lambda m, i, o: points.append(first(o)))
            attn.transformer_blocks[0].norm1.register_forward_hook(lambda m, i, o: tokens.append(o))
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 16, 16, 4)).astype(np.float32)
    t = np.array([0, 300])
    apply = jax.jit(UNet(model_config(config).reference_unet).apply, static_argnames="features_only")
    feats = apply({"params": params["reference_net"]}, jnp.asarray(x), jnp.asarray(t), features_only=True)
    with torch.no_grad():
        sample = torch_unet(torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(t),
                            encoder_hidden_states=torch.zeros(2, 1, config.model.unet.cross_attention_dim)).sample
    assert float(sample.abs().max()) == 0.0  # the ReferenceNet has no output head: zero conv_out filler
    # diffusers runs its blocks in the order our names list them; each feature sits under the module reading it.
    names = [f"down_blocks_{i}__attentions_{j}" for i in range(2) for j in range(1)] + ["mid_block__attentions_0"] + [
        f"up_blocks_{i}__attentions_{j}" for i in range(2) for j in range(2)]
    assert list(feats.tokens) == names and len(tokens) == 7
    assert list(feats.motion) == [n.replace("attentions", "motion_modules") for n in names] and len(points) == 7
    for name, ref in zip(names, tokens):
        assert rel_err(feats.tokens[name], ref.numpy()) < 1e-4
    for name, ref in zip(feats.motion, points):
        assert rel_err(feats.motion[name], ref.permute(0, 2, 3, 1).numpy()) < 1e-4


def test_vae_matches_diffusers(tiny_stage3, exported):
    config, _, vae = tiny_stage3
    out, _ = exported
    torch_vae = _from_pretrained(diffusers.AutoencoderKL, out / "vae")
    model = AutoencoderKL(vae_config(config))
    rng = np.random.default_rng(2)
    frames = rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    z = rng.standard_normal((2, 16, 16, 4)).astype(np.float32)
    mean, _ = jax.jit(lambda p, x: model.apply({"params": p}, x, method=AutoencoderKL.encode))(vae, frames)
    decoded = jax.jit(lambda p, x: model.apply({"params": p}, x, method=AutoencoderKL.decode))(vae, z)
    with torch.no_grad():
        ref_mean = torch_vae.encode(torch.from_numpy(frames).permute(0, 3, 1, 2)).latent_dist.mean
        ref_decoded = torch_vae.decode(torch.from_numpy(z).permute(0, 3, 1, 2)).sample
    assert rel_err(mean, ref_mean.permute(0, 2, 3, 1).numpy()) < 1e-4
    assert rel_err(decoded, ref_decoded.permute(0, 2, 3, 1).numpy()) < 1e-4


def test_hallo_named_parts_compute_what_hallo_computes(tiny_stage3, exported):
    """The exported audio projection and face locator, run as Hallo's modules run them, give our outputs."""
    config, params, _ = tiny_stage3
    out, _ = exported
    cfg = model_config(config)
    model = EMO(cfg)
    rng = np.random.default_rng(2)
    feats = rng.standard_normal((3, 2 * cfg.audio.context + 1, cfg.audio.layers, cfg.audio.feature_dim))
    ours = model.apply({"params": params}, jnp.asarray(feats, jnp.float32), method=lambda m, x: m.audio_proj(x))
    ref = torch_references.audio_proj_forward(load_file(out / FILES["audio_proj"]), feats.astype(np.float32),
                                              cfg.audio.tokens)
    assert rel_err(ours, ref) < 1e-5
    side = face_mask_size(cfg, config.model.latent_size)
    mask = np.zeros((2, side, side, 1), np.float32)
    mask[0, 2:12, 20:30] = 1  # asymmetric, so a transposed kernel or mask shows
    mask[1, 16:, :8] = 1
    ours = model.apply({"params": params}, jnp.asarray(mask), method=lambda m, x: m.face_locator(x))
    ref = torch_references.face_locator_forward(load_file(out / FILES["face_locator"]), mask)
    assert ours.shape == (2, config.model.latent_size, config.model.latent_size, config.model.unet.block_out_channels[0])
    assert rel_err(ours, ref) < 1e-5


def test_float32_round_trip_is_bit_identical(tiny_stage3, exported):
    config, params, vae = tiny_stage3
    out, _ = exported
    want = traverse_util.flatten_dict({**params, "vae": vae})
    got = traverse_util.flatten_dict(import_weights(str(out), config))
    assert got.keys() == want.keys()
    for path, value in want.items():
        assert got[path].dtype == np.float32 and np.array_equal(got[path], value), path


def test_float16_round_trip_within_fp16_rounding(tiny_stage3, tmp_path):
    config, params, _ = tiny_stage3
    manifest = export_weights(config, params, str(tmp_path), dtype="float16")
    assert FILES["vae"] not in manifest["files"]
    assert all(v.dtype == np.float16 for v in load_file(tmp_path / FILES["backbone"]).values())
    want = traverse_util.flatten_dict(params)
    got = traverse_util.flatten_dict(import_weights(str(tmp_path), config))
    assert got.keys() == want.keys()
    # fp16 rounds to a relative half ulp (2^-11) above 6.1e-5, and to an absolute 3e-8 among its subnormals below.
    excess = max(float(np.max(np.abs(got[p] - v) - (2.0 ** -11 * np.abs(v) + 3e-8))) for p, v in want.items())
    assert excess <= 0
    assert any(not np.array_equal(got[p], v) for p, v in want.items())  # the dtype was applied


def test_manifest_and_file_layout(tiny_stage3, exported):
    config, _, _ = tiny_stage3
    out, manifest = exported
    assert json.loads((out / MANIFEST).read_text()) == manifest
    assert (manifest["stage"], manifest["step"], manifest["dtype"]) == (3, 123, "float32")
    assert manifest["config"]["model"]["unet"]["block_out_channels"] == [32, 64]
    assert set(manifest["files"]) == set(FILES.values())
    for file, info in manifest["files"].items():
        state = load_file(out / file)
        assert len(state) == info["keys"], file
        assert set(info["filler_keys"]) <= set(state)
    ref_fillers = manifest["files"][FILES["reference_net"]]["filler_keys"]
    assert "conv_out.weight" in ref_fillers and "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight" \
        in ref_fillers
    assert not any("attn1" in k for k in ref_fillers)
    assert set(load_file(out / FILES["audio_proj"])) == {f"audioproj.{m}.{w}" for m in ("proj1", "proj2", "proj3", "norm")
                                                           for w in ("weight", "bias")}
    assert all(k.startswith("face_locator.") for k in load_file(out / FILES["face_locator"]))
    for file in ("reference_net", "backbone_unet", "vae"):
        assert json.loads((out / file / "config.json").read_text())["_class_name"] in (
            "UNet2DConditionModel", "AutoencoderKL")


def test_import_rejects_edited_filler_and_wrong_config(tiny_stage3, exported, tmp_path):
    config, _, _ = tiny_stage3
    out, _ = exported
    with pytest.raises(CheckpointError, match=r"speed\.safetensors.*speed_attn.*no place"):
        import_weights(str(out), load_config("configs/tiny.py:stage2"))
    # A torch user who trains the (filler) text cross-attention made a model EMO cannot hold.
    shutil.copytree(out, tmp_path / "edited")
    path = tmp_path / "edited" / FILES["backbone"]
    state = load_file(path)
    key = "mid_block.attentions.0.transformer_blocks.0.attn2.to_out.0.bias"
    state[key] = state[key] + 1
    save_file(state, path)
    with pytest.raises(CheckpointError, match=r"backbone_unet.*attn2\.to_out\.0\.bias.*filler"):
        import_weights(str(tmp_path / "edited"), config)
    with pytest.raises(CheckpointError, match="has no manifest.json"):
        import_weights(str(tmp_path), config)


def test_export_rejects_params_of_another_config(tiny_stage3, tmp_path):
    _, params, _ = tiny_stage3
    with pytest.raises(ValueError, match=r"do not match config variant .stage2.*unexpected.*speed_attn"):
        export_weights(load_config("configs/tiny.py:stage2"), params, str(tmp_path))
    with pytest.raises(ValueError, match="bfloat16"):
        export_weights(load_config("configs/tiny.py:stage3"), params, str(tmp_path), dtype="bfloat16")


def test_cli_exports_what_restore_params_returns(tiny_stage3, tmp_path, monkeypatch):
    config, params, _ = tiny_stage3
    calls = []

    def restore_params(checkpoint_dir, step=None, use_ema=True):
        calls.append((checkpoint_dir, step, use_ema))
        return config, params

    monkeypatch.setitem(sys.modules, "emo_jax.train.checkpoint", types.SimpleNamespace(restore_params=restore_params))
    from emo_jax.cli.export import main

    assert main(["--checkpoint", "ckpt", "--out", str(tmp_path), "--dtype", "float16", "--no-ema", "--step", "5"]) == 0
    assert calls == [("ckpt", 5, False)]
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert (manifest["dtype"], manifest["step"]) == ("float16", 5)
    assert os.path.isfile(tmp_path / FILES["temporal"])
