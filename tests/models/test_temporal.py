"""The motion module against a PyTorch AnimateDiff reference: positions, motion frames prepended and sliced off."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emo_jax.config import load_config, model_config
from emo_jax.interop.keys import torch_state_to_flax
from emo_jax.models.temporal import MotionModule
from tests.helpers import randomize_torch_module, rel_err

torch = pytest.importorskip("torch")
from tests import torch_references  # noqa: E402  (needs torch)

B, N_MOTION, FRAMES, SIDE, C = 2, 2, 4, 4, 32


@pytest.fixture(scope="module")
def modules():
    """(our MotionModule, its params loaded from the reference's state dict, the reference, inputs)."""
    ucfg = model_config(load_config("configs/tiny.py:stage2")).unet
    assert not ucfg.speed_attention and ucfg.temporal_layers >= 1
    reference = torch_references.MotionModule(C, ucfg.temporal_heads, ucfg.norm_groups, ucfg.temporal_layers).eval()
    randomize_torch_module(reference, seed=4, scale=0.3)
    rng = np.random.default_rng(0)
    clip = rng.standard_normal((B * FRAMES, SIDE, SIDE, C)).astype(np.float32)
    motion = rng.standard_normal((B * N_MOTION, SIDE, SIDE, C)).astype(np.float32)
    ours = MotionModule(C, ucfg)
    abstract = nn.unbox(jax.eval_shape(lambda: ours.init(jax.random.PRNGKey(0), clip, FRAMES, motion))["params"])
    template = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), abstract)
    state = {k: v.numpy() for k, v in reference.state_dict().items() if not k.endswith("pos_encoder.pe")}
    params, missing, unused = torch_state_to_flax(state, template, "reference")
    assert not missing and not unused
    return ours, params, reference, clip, motion


def _torch_video(frames_NHWC, frames):
    """[B * F, H, W, C] -> torch [B, C, F, H, W]."""
    x = frames_NHWC.reshape((-1, frames) + frames_NHWC.shape[1:])
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 4, 1, 2, 3)))


def _to_nhwc(x_BCFHW):
    x = x_BCFHW.detach().numpy().transpose(0, 2, 3, 4, 1)
    return x.reshape((-1,) + x.shape[2:])


def test_motion_module_without_motion_frames_matches_animatediff(modules):
    ours, params, reference, clip, _ = modules
    out = jax.jit(lambda p, x: ours.apply({"params": p}, x, FRAMES))(params, clip)
    with torch.no_grad():
        expected = _to_nhwc(reference(_torch_video(clip, FRAMES)))
    assert rel_err(out, expected) < 1e-5
    assert rel_err(out, clip) > 0.1  # the module really changes its input


def test_motion_frames_are_prepended_attended_and_sliced_off(modules):
    """Reference: concatenate [motion frames ; clip] on the frame axis, run the module, keep the last f frames."""
    ours, params, reference, clip, motion = modules
    out = jax.jit(lambda p, x, m: ours.apply({"params": p}, x, FRAMES, m))(params, clip, motion)
    full = torch.cat([_torch_video(motion, N_MOTION), _torch_video(clip, FRAMES)], dim=2)
    with torch.no_grad():
        expected = _to_nhwc(reference(full)[:, :, N_MOTION:])
    assert out.shape == clip.shape
    assert rel_err(out, expected) < 1e-5
    # The motion frames matter, and only through the module: each clip's output depends on its own motion frames.
    alone = jax.jit(lambda p, x: ours.apply({"params": p}, x, FRAMES))(params, clip)
    assert rel_err(out, alone) > 1e-2
    other = motion.copy()
    # The first clip's motion frames only (not a constant shift, which the per-frame GroupNorm removes).
    other[:N_MOTION] = np.random.default_rng(1).standard_normal(other[:N_MOTION].shape)
    moved = ours.apply({"params": params}, clip, FRAMES, other)
    assert rel_err(moved[:FRAMES], out[:FRAMES]) > 1e-3
    assert rel_err(moved[FRAMES:], out[FRAMES:]) < 1e-5  # rounding only: jitted against eager


def test_positions_follow_the_frame_order(modules):
    """Reversing the frames of a clip does not just reverse the output: the sinusoidal positions are added."""
    ours, params, _, clip, _ = modules
    run = jax.jit(lambda p, x: ours.apply({"params": p}, x, FRAMES))
    video = clip.reshape(B, FRAMES, SIDE, SIDE, C)
    reversed_out = run(params, video[:, ::-1].reshape(clip.shape)).reshape(video.shape)[:, ::-1]
    assert rel_err(reversed_out, run(params, clip).reshape(video.shape)) > 1e-3


def test_too_many_frames_for_the_positional_table_is_an_error(modules):
    ours, params, _, _, _ = modules
    frames = ours.cfg.temporal_max_len + 1
    with pytest.raises(ValueError, match="exceed unet.temporal_max_len"):
        ours.apply({"params": params}, jnp.zeros((frames, SIDE, SIDE, C)), frames)


@pytest.mark.parametrize("before", [True, False])
def test_a_frames_speed_reaches_the_other_frames_through_temporal_attention(before):
    """With the speed attention before the temporal attention (configs/emo_512.py's order), one frame's speed
    changes the other frames' output: the temporal attention moves it across the clip. After it (the order of
    checkpoints saved before 2026-11-29) a frame's speed changes that frame only."""
    config = load_config("configs/tiny.py:stage3")
    assert config.model.unet.speed_before_temporal
    config.model.unet.speed_before_temporal = before
    ucfg = model_config(config).unet
    assert ucfg.speed_attention
    rng = np.random.default_rng(2)
    clip = rng.standard_normal((B * FRAMES, SIDE, SIDE, C)).astype(np.float32)
    motion = rng.standard_normal((B * N_MOTION, SIDE, SIDE, C)).astype(np.float32)
    speed = rng.standard_normal((B * FRAMES, 2, ucfg.speed_dim)).astype(np.float32)
    module = MotionModule(C, ucfg)
    params = nn.unbox(module.init(jax.random.PRNGKey(0), clip, FRAMES, motion, speed)["params"])
    # Every zero-initialised output (the temporal proj_out, speed_attn's to_out) made non-zero.
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(5), len(leaves))
    params = jax.tree.unflatten(tree, [p + 0.2 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])
    run = jax.jit(lambda s: module.apply({"params": params}, clip, FRAMES, motion, s))
    base = np.asarray(run(speed)).reshape(B, FRAMES, -1)
    other = speed.copy()
    other[0] = rng.standard_normal(other[0].shape)  # the first clip's first frame only
    moved = np.asarray(run(other)).reshape(B, FRAMES, -1)
    assert rel_err(moved[0, :1], base[0, :1]) > 1e-3
    if before:
        assert rel_err(moved[0, 1:], base[0, 1:]) > 1e-3  # the clip's later frames see frame 0's speed
    else:
        assert rel_err(moved[0, 1:], base[0, 1:]) < 1e-6
    assert rel_err(moved[1], base[1]) < 1e-6  # the other clip does not
