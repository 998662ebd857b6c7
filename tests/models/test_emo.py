"""The EMO network on the tiny config: zero-init equivalence, motion/speed paths, sharding, input errors."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from emo_jax.build import train_frames
from emo_jax.config import load_config, model_config, parse_config_args
from emo_jax.errors import ConfigError
from emo_jax.models.condition import Condition, ReferenceFeatures
from emo_jax.models.emo import EMO, example_inputs
from emo_jax.models.partitioning import init_params
from emo_jax.models.unet import UNet
from emo_jax.params import count_by_module
from emo_jax.sharding import make_mesh, param_shardings
from tests.helpers import rel_err


_JITTED = {}


def _apply(model):
    """model.apply, jitted once per model (eager dispatch compiles every op separately)."""
    if model not in _JITTED:
        _JITTED[model] = jax.jit(model.apply)
    return _JITTED[model]


def _model(variant, **unet_overrides):
    config = load_config(f"configs/tiny.py:{variant}")
    for k, v in unet_overrides.items():
        config.model.unet[k] = v
    return config, EMO(model_config(config))


def _random_inputs(config, model, batch=2, frames=None, seed=0):
    frames = frames or config.model.clip_frames
    shapes = example_inputs(model.cfg, batch, frames, config.model.latent_size)
    rng = np.random.default_rng(seed)
    out = {k: jnp.asarray(rng.standard_normal(v.shape).astype(np.float32)) for k, v in shapes.items()}
    out["t_B"] = jnp.asarray(rng.integers(0, 1000, size=(batch,)))
    if "face_mask" in out:
        out["face_mask"] = (out["face_mask"] > 0).astype(jnp.float32)
    if "speed" in out:
        out["speed"] = jnp.abs(out["speed"]) * 2
    return out


def _perturb(params, tag, seed=1, scale=0.05):
    """Random values for every parameter whose path contains `tag` (zero-initialised layers come alive)."""
    flat = traverse_util.flatten_dict(params)
    key = jax.random.PRNGKey(seed)
    for i, path in enumerate(sorted(flat)):
        if tag in "/".join(path):
            flat[path] = scale * jax.random.normal(jax.random.fold_in(key, i), flat[path].shape)
    return traverse_util.unflatten_dict(flat)


@pytest.fixture(scope="module")
def stage2():
    config, model = _model("stage2")
    inputs = _random_inputs(config, model)
    params = nn.unbox(init_params(model, 0, inputs))
    return config, model, params, inputs


def test_fresh_video_model_equals_image_model_frame_by_frame(stage2):
    config, model, params, inputs = stage2
    out = _apply(model)({"params": params}, **inputs)
    assert out.shape == inputs["x_BFHWC"].shape  # f frames out, motion frames removed
    image_config, image_model = _model("stage1")
    image_params = {k: v for k, v in params.items() if k in ("reference_net", "face_locator")}
    image_params["backbone"] = traverse_util.unflatten_dict({
        p: v for p, v in traverse_util.flatten_dict(params["backbone"]).items()
        if not any(tag in "/".join(p) for tag in ("audio_attn", "norm_audio", "motion_modules"))})
    frames = inputs["x_BFHWC"].shape[1]
    for f in range(frames):
        ref = _apply(image_model)({"params": image_params}, inputs["x_BFHWC"][:, f:f + 1], inputs["t_B"],
                                inputs["ref_latent_BHWC"], face_mask=inputs["face_mask"])
        assert rel_err(out[:, f:f + 1], ref) < 1e-5
    # ... and it is no longer the image model once the audio layers are trained.
    alive = _perturb(params, "audio_attn")
    assert rel_err(_apply(model)({"params": alive}, **inputs), out) > 1e-3


def test_motion_frames_and_speed_change_the_output():
    config, model = _model("stage3")
    inputs = _random_inputs(config, model)
    params = nn.unbox(init_params(model, 0, inputs))
    fresh = _apply(model)({"params": params}, **inputs)
    # Zero-initialised temporal and speed outputs: neither motion frames nor speed matter yet.
    other = dict(inputs, motion_latents_BNHWC=inputs["motion_latents_BNHWC"] + 1.0, speed=inputs["speed"] * 3)
    assert rel_err(_apply(model)({"params": params}, **other), fresh) < 1e-6
    params = _perturb(_perturb(params, "proj_out", seed=2), "speed_attn", seed=3)
    base = _apply(model)({"params": params}, **inputs)
    assert base.shape == inputs["x_BFHWC"].shape
    moved = _apply(model)({"params": params}, **dict(inputs, motion_latents_BNHWC=inputs["motion_latents_BNHWC"] + 1.0))
    assert rel_err(moved, base) > 1e-4
    faster = _apply(model)({"params": params}, **dict(inputs, speed=inputs["speed"] + 3.0))
    assert rel_err(faster, base) > 1e-4
    # Dropped motion frames equal the first clip's zero motion features.
    keep = jnp.array([False, True])
    dropped = _apply(model)({"params": params}, **dict(inputs, motion_keep=keep))
    first = _apply(model)({"params": params}, **dict(inputs, motion_latents_BNHWC=None))
    assert rel_err(dropped[0], first[0]) < 1e-5
    assert rel_err(dropped[1], base[1]) < 1e-5


def test_face_locator_residual_lands_where_the_face_mask_is():
    """A face in the mask's top-right corner changes the backbone's conv_in residual in that corner only."""
    config, model = _model("stage1")
    inputs = _random_inputs(config, model, batch=1)
    params = _perturb(nn.unbox(init_params(model, 0, inputs)), "face_locator", scale=0.3)
    side = inputs["face_mask"].shape[1]
    corner = np.zeros((1, side, side, 1), np.float32)
    corner[0, :side // 4, -side // 4:] = 1
    residuals = []

    def grab_residual(next_fun, args, kwargs, context):
        # Record what the backbone receives; skip both UNets (their outputs are not under test).
        if isinstance(context.module, UNet) and context.method_name == "__call__":
            if context.module.name == "reference_net":
                return ReferenceFeatures(tokens={}, motion={})
            residuals.append(np.asarray(kwargs["conv_in_residual"]))
            return jnp.zeros_like(args[0])
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(grab_residual):
        for mask in (np.zeros_like(corner), corner):
            model.apply({"params": params}, **dict(inputs, face_mask=jnp.asarray(mask)))
    change = np.abs(residuals[1] - residuals[0]).sum(axis=(0, 3))  # [h, w] at the latent size
    half = change.shape[0] // 2
    assert change.shape == (config.model.latent_size,) * 2
    assert change[:half, half:].sum() > 0.95 * change.sum() > 0


def test_reference_and_motion_features_are_found_by_module_name(stage2):
    """Features reach the backbone under the name of the module that reads them; a missing or extra one raises."""
    _, model, params, inputs = stage2
    apply = lambda method, *a: model.apply({"params": params}, *a, method=method)  # noqa: E731
    ref = apply(EMO.reference_features, inputs["ref_latent_BHWC"])
    motion = apply(EMO.motion_features, ref, inputs["motion_latents_BNHWC"])
    assert "mid_block__attentions_0" in ref.tokens and "mid_block__motion_modules_0" in motion
    cond = Condition(ref_tokens=ref.tokens, motion=motion, audio=inputs["audio"],
                     face_mask=inputs["face_mask"])
    x, t = inputs["x_BFHWC"], inputs["t_B"]
    assert rel_err(apply(EMO.denoise, x, t, cond), _apply(model)({"params": params}, **inputs)) < 1e-5
    tokens = dict(ref.tokens)
    tokens.pop("up_blocks_1__attentions_1")
    with pytest.raises(ValueError, match=r"no ReferenceNet tokens for up_blocks_1__attentions_1"):
        apply(EMO.denoise, x, t, cond.replace(ref_tokens=tokens))
    extra = {**ref.tokens, "up_blocks_9__attentions_0": ref.tokens["mid_block__attentions_0"]}
    with pytest.raises(ValueError, match=r"ReferenceNet tokens do not match .* not read \['up_blocks_9__attentions_0'\]"):
        apply(EMO.denoise, x, t, cond.replace(ref_tokens=extra))
    with pytest.raises(ValueError, match="no motion-frame features for mid_block__motion_modules_0"):
        apply(EMO.denoise, x, t, cond.replace(motion={k: v for k, v in motion.items() if not k.startswith("mid")}))


def test_dropped_reference_is_ignored(stage2):
    _, model, params, inputs = stage2
    keep = jnp.array([False, False])
    a = _apply(model)({"params": params}, **dict(inputs, ref_keep=keep))
    b = _apply(model)({"params": params}, **dict(inputs, ref_keep=keep, ref_latent_BHWC=inputs["ref_latent_BHWC"] * 5))
    c = _apply(model)({"params": params}, **dict(inputs, ref_latent_BHWC=inputs["ref_latent_BHWC"] * 5))
    assert rel_err(a, b) < 1e-6
    assert rel_err(c, a) > 1e-3


@pytest.mark.parametrize("impl", ["chunked", "jax"])
def test_attention_implementations_agree(stage2, impl):
    config, model, params, inputs = stage2
    ref = _apply(model)({"params": params}, **inputs)
    config.model.unet.attention_impl = impl
    config.model.unet.attention_chunk = 64
    other = EMO(model_config(config))
    assert rel_err(_apply(other)({"params": params}, **inputs), ref) < 1e-5


def test_cross_reference_mode_runs_and_uses_the_reference():
    config, model = _model("stage2", reference_mode="cross")
    inputs = _random_inputs(config, model, batch=1)
    params = nn.unbox(init_params(model, 0, inputs))
    a = _apply(model)({"params": params}, **inputs)
    b = _apply(model)({"params": params}, **dict(inputs, ref_latent_BHWC=inputs["ref_latent_BHWC"] + 1))
    assert a.shape == inputs["x_BFHWC"].shape and rel_err(a, b) > 1e-4


def test_sharded_forward_equals_single_device(stage2):
    config, model, _, inputs = stage2
    assert len(jax.devices()) == 8
    config.mesh.shape.update({"data": 2, "fsdp": 2, "tensor": 2})
    mesh = make_mesh(config.mesh.shape)
    boxed = init_params(model, 0, inputs)
    params = nn.unbox(boxed)
    single = _apply(model)({"params": params}, **inputs)
    shardings = param_shardings(boxed, mesh, config.mesh.rules)
    sharded_params = jax.device_put(params, shardings)
    with jax.set_mesh(mesh), nn.logical_axis_rules(config.mesh.rules):
        out = jax.jit(model.apply)({"params": sharded_params}, **inputs)
    assert rel_err(out, single) < 1e-5
    # Big kernels are really split over fsdp and tensor.
    qkv = sharded_params["backbone"]["down_blocks_1__attentions_0"]["transformer_blocks_0"]["attn1"]["to_q"]["kernel"]
    assert qkv.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
    assert qkv.addressable_shards[0].data.size == qkv.size // 4
    conv = sharded_params["backbone"]["down_blocks_1__resnets_0"]["conv1"]["kernel"]
    assert conv.addressable_shards[0].data.size == conv.size // 4


def test_wrong_inputs_raise_clear_errors(stage2):
    config, model, params, inputs = stage2
    with pytest.raises(ValueError, match="must divide by the UNet's downsampling"):
        bad = dict(inputs, x_BFHWC=inputs["x_BFHWC"][:, :, :15], ref_latent_BHWC=inputs["ref_latent_BHWC"][:, :15])
        _apply(model)({"params": params}, **bad)
    with pytest.raises(ValueError, match=r"audio features have shape .* expected"):
        _apply(model)({"params": params}, **dict(inputs, audio=inputs["audio"][:, :-1]))
    with pytest.raises(ConfigError, match="unknown config key 'model.unet.hedas'"):
        parse_config_args(["--config", "configs/tiny.py:stage2", "--config.model.unet.hedas", "4"])
    with pytest.raises(ConfigError, match="unknown variant"):
        load_config("configs/tiny.py:stage9")


def test_stage_layer_sets():
    counts = {}
    for v in ("stage1", "stage2", "stage3"):
        config, model = _model(v)
        shapes = jax.eval_shape(functools.partial(model.init, jax.random.PRNGKey(0)),
                                **example_inputs(model.cfg, 1, train_frames(config), config.model.latent_size))
        counts[v] = count_by_module(nn.unbox(shapes["params"]))
    assert set(counts["stage1"]) == {"reference_net", "backbone", "face_locator"}
    assert set(counts["stage2"]) == set(counts["stage1"]) | {"audio_proj", "audio_attention", "temporal"}
    assert set(counts["stage3"]) == set(counts["stage2"]) | {"speed"}
    assert counts["stage1"]["backbone"] == counts["stage3"]["backbone"]


def _saved_bytes(model, params, inputs):
    """Bytes autodiff keeps from the forward pass for the backward (the residuals in the VJP closure)."""
    residuals = jax.eval_shape(
        lambda p: jax.tree.leaves(jax.vjp(lambda q: model.apply({"params": q}, **inputs), p)[1]), params)
    return sum(r.size * r.dtype.itemsize for r in residuals)


def test_resnet_remat_keeps_less_and_changes_no_gradient():
    config, plain = _model("stage1", remat=True)
    # A policy other than the default too: what it keeps must not change the gradient either.
    _, remat = _model("stage1", remat=True, remat_resnets=True, remat_policy="dots_with_no_batch_dims_saveable")
    inputs = _random_inputs(config, plain, batch=1)
    params = nn.unbox(init_params(plain, 0, inputs))

    def grads(model):
        loss = lambda p: (model.apply({"params": p}, **inputs) ** 2).sum()  # noqa: E731
        return jax.jit(jax.grad(loss))(params)

    for a, b in zip(jax.tree.leaves(grads(plain)), jax.tree.leaves(grads(remat))):
        assert rel_err(b, a) < 1e-5
    # Tiny stage 2 with its transformer blocks rematerialised keeps 79.8 MB; with the ResNets too, 40.4 MB.
    config, plain = _model("stage2", remat=True)
    _, remat = _model("stage2", remat=True, remat_resnets=True)
    inputs = _random_inputs(config, plain)
    params = nn.unbox(init_params(plain, 0, inputs))
    assert _saved_bytes(remat, params, inputs) < 0.6 * _saved_bytes(plain, params, inputs)


def test_remat_policies_decide_what_the_backward_keeps():
    config, full = _model("stage1", remat=True, remat_resnets=True)
    inputs = _random_inputs(config, full, batch=1)
    params = nn.unbox(init_params(full, 0, inputs))
    saved = {policy: _saved_bytes(_model("stage1", remat=True, remat_resnets=True, remat_policy=policy)[1], params,
                                  inputs)
             for policy in ("nothing_saveable", "dots_saveable")}
    # Keeping every matmul and conv output keeps more than recomputing each block whole.
    assert saved["dots_saveable"] > 1.5 * saved["nothing_saveable"], saved
    with pytest.raises(ValueError, match="unet.remat_policy 'some' is not one of"):
        _model("stage1", remat=True, remat_policy="some")
