"""The long-form sampler on the tiny config: one compiled program for any length, exact frame counts, guidance,
ReferenceNet calls per clip (not per step), and seeding; and, with a stand-in denoiser, the whole computation
(guidance scales, motion-frame chaining, per-clip noise) against the same computation written out by hand."""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emo_jax.audio.features import FeatureStream
from emo_jax.config import load_config
from emo_jax.diffusion import ddim_step, ddim_step_pairs, ddim_timesteps
from emo_jax.models.condition import ReferenceFeatures
from emo_jax.models.emo import EMO
from emo_jax.models.unet import UNet
from emo_jax.sample.generate import random_model_params
from emo_jax.sample.sampler import Sampler, chunk_program
from tests.helpers import perturb_zero_leaves, rel_err

ONE_CLIP, FIVE_CLIPS = 3, 19  # frames; tiny clips have 4, so neither is a multiple of a clip


@pytest.fixture(scope="module")
def setup():
    config = load_config("configs/tiny.py:stage2")
    # The zero-initialised layers get values, so that audio, motion frames and guidance scales change the result.
    params = perturb_zero_leaves(random_model_params(config))
    sampler = Sampler(config, params)
    rng = np.random.default_rng(0)
    m = config.model
    ref = sampler.reference(rng.standard_normal((1, m.latent_size, m.latent_size, 4)).astype(np.float32))
    audio = rng.standard_normal((FIVE_CLIPS, 2 * m.audio.context + 1, m.audio.layers, m.audio.feature_dim))
    mask = np.zeros((sampler.mask_size,) * 2, np.float32)
    mask[8:24, 6:26] = 1
    return config, params, sampler, ref, audio.astype(np.float32), mask


class CompileCounter:
    """Counts XLA backend compilations while active."""

    def __enter__(self):
        self.count = 0
        jax.monitoring.register_event_duration_secs_listener(self._listen)
        return self

    def _listen(self, event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            self.count += 1

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self._listen)


def _run(sampler, ref, audio, mask, seed=0, ref_scale=3.5, audio_scale=3.5):
    chunks = list(sampler.stream(ref, audio, mask, seed, ref_scale, audio_scale))
    return np.concatenate(chunks), len(chunks)


def _memory(sampler):
    compiled = sampler.program.lower(*sampler.last_call_args).compile()
    stats = compiled.memory_analysis()
    return tuple(getattr(stats, k) for k in dir(stats) if k.endswith("_in_bytes"))


@pytest.fixture(scope="module")
def long_and_short(setup):
    _, _, sampler, ref, audio, mask = setup
    short, short_chunks = _run(sampler, ref, audio[:ONE_CLIP], mask)  # compiles the chunk program
    short_memory = _memory(sampler)
    with CompileCounter() as compiles:
        long, long_chunks = _run(sampler, ref, audio, mask)
    return short, short_chunks, short_memory, long, long_chunks, _memory(sampler), compiles.count


def test_any_length_runs_the_same_compiled_program_in_the_same_memory(long_and_short):
    short, short_chunks, short_memory, long, long_chunks, long_memory, compiles = long_and_short
    assert compiles == 0
    assert short_memory == long_memory and len(short_memory) >= 3 and max(short_memory) > 0
    assert (short_chunks, long_chunks) == (1, 3)  # 5 clips at 2 clips per chunk stream out in 3 calls


def test_exactly_one_latent_per_audio_frame(long_and_short, setup):
    short, _, _, long, _, _, _ = long_and_short
    m = setup[0].model
    assert short.shape == (ONE_CLIP, m.latent_size, m.latent_size, 4)
    assert long.shape == (FIVE_CLIPS, m.latent_size, m.latent_size, 4)
    assert np.isfinite(long).all() and long.std() > 0.1
    # Later clips are not copies of the first: each has its own noise and audio.
    assert rel_err(long[4:8], long[:4]) > 0.1


def test_features_streamed_in_blocks_give_the_latents_of_the_whole_array(long_and_short, setup):
    _, _, sampler, ref, audio, mask = setup
    pulled = []

    def blocks():  # uneven blocks that straddle the 8-frame chunks; counts what the sampler has asked for
        for start, stop in [(0, 5), (5, 6), (6, 17), (17, FIVE_CLIPS)]:
            pulled.append(stop)
            yield audio[start:stop]

    chunks = sampler.stream(ref, FeatureStream(FIVE_CLIPS, blocks()), mask, 0, 3.5, 3.5)
    first = next(chunks)
    # Read as the chunks need them: the first two chunks' 16 frames (one chunk runs ahead), not the last block.
    assert pulled == [5, 6, 17] and len(first) == 8
    streamed = np.concatenate([first] + list(chunks))
    np.testing.assert_array_equal(streamed, long_and_short[3])
    with pytest.raises(AssertionError, match="held 17 frames, not the 19 announced"):
        list(sampler.stream(ref, FeatureStream(FIVE_CLIPS, iter([audio[:17]])), mask, 0, 3.5, 3.5))


def test_same_seed_same_latents_bit_for_bit_and_another_seed_differs(long_and_short, setup):
    _, _, sampler, ref, audio, mask = setup
    again, _ = _run(sampler, ref, audio[:ONE_CLIP], mask, seed=0)
    np.testing.assert_array_equal(again, long_and_short[0])
    other, _ = _run(sampler, ref, audio[:ONE_CLIP], mask, seed=1)
    assert rel_err(other, again) > 0.1


def test_a_video_continued_from_its_last_latents_equals_the_video_made_at_once(long_and_short, setup):
    config, _, sampler, ref, audio, mask = setup
    n, f, whole = config.model.motion_frames, config.model.clip_frames, long_and_short[3]
    # Clips 0-1 in one call, clips 2-4 in another that continues from the first call's last n latents.
    first = sampler.sample(ref, audio[:2 * f], mask, 0, 3.5, 3.5)
    rest = sampler.sample(ref, audio[2 * f:], mask, 0, 3.5, 3.5, motion_latents=first[-n:], clip_index=2)
    np.testing.assert_allclose(np.concatenate([first, rest]), whole, rtol=0, atol=1e-5)
    # Other motion latents give another clip: the continuation reads them.
    moved = sampler.sample(ref, audio[2 * f:], mask, 0, 3.5, 3.5, motion_latents=first[-n:] + 1.0, clip_index=2)
    assert rel_err(moved[:f], whole[2 * f:3 * f]) > 0.01
    with pytest.raises(ValueError, match=r"motion_latents have shape \(1, .*last 2 latents"):
        sampler.sample(ref, audio[:f], mask, 0, 3.5, 3.5, motion_latents=first[-1:])
    with pytest.raises(ValueError, match="clip 0 starts a video"):
        sampler.sample(ref, audio[:f], mask, 0, 3.5, 3.5, motion_latents=first[-n:], clip_index=0)
    with pytest.raises(ValueError, match="pass its last 2 latents as motion_latents"):
        sampler.sample(ref, audio[:f], mask, 0, 3.5, 3.5, clip_index=3)


def test_scales_change_the_output_without_recompiling(long_and_short, setup):
    _, _, sampler, ref, audio, mask = setup
    short = audio[:ONE_CLIP]
    with CompileCounter() as compiles:
        base, _ = _run(sampler, ref, short, mask, ref_scale=1.0, audio_scale=1.0)
        more_ref, _ = _run(sampler, ref, short, mask, ref_scale=2.0, audio_scale=1.0)
        more_audio, _ = _run(sampler, ref, short, mask, ref_scale=1.0, audio_scale=2.0)
    assert compiles.count == 0
    assert rel_err(more_ref, base) > 1e-3 and rel_err(more_audio, base) > 1e-3
    # The audio changes the result at all (the audio layers are alive).
    silent, _ = _run(sampler, ref, np.zeros_like(short), mask, ref_scale=1.0, audio_scale=1.0)
    assert rel_err(silent, base) > 1e-3


def test_unit_scales_equal_one_conditional_pass_and_referencenet_runs_once_per_clip(setup):
    config, params, sampler, ref, audio, mask = setup
    one_pass = Sampler(config, params, dataclasses.replace(sampler.spec, guidance="none"))
    calls = {"reference_net": 0, "backbone": 0}

    def count_unet_calls(next_fun, args, kwargs, context):
        # Traced into the program as a host callback, so it counts executions, not traces.
        if isinstance(context.module, UNet) and context.method_name == "__call__":
            name = context.module.name
            jax.debug.callback(lambda: calls.__setitem__(name, calls[name] + 1))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(count_unet_calls):
        conditional, _ = _run(one_pass, ref, audio, mask, ref_scale=1.0, audio_scale=1.0)
    jax.effects_barrier()
    clips = -(-FIVE_CLIPS // config.model.clip_frames)
    padded_clips = -(-clips // sampler.spec.clips_per_chunk) * sampler.spec.clips_per_chunk
    # Motion frames of every clip but the first (which uses zeros); the reference itself is encoded outside.
    assert calls["reference_net"] == padded_clips - 1
    assert calls["backbone"] == padded_clips * config.sample.steps
    guided, _ = _run(sampler, ref, audio, mask, ref_scale=1.0, audio_scale=1.0)
    assert rel_err(guided, conditional) < 1e-4


def test_face_locator_and_audio_projection_run_once_per_clip_for_all_steps_and_passes(setup):
    """They depend on neither the timestep nor the guidance pass, so the clip program computes them before its
    denoising scan: once per clip, not steps x passes times (counted as executions, by host callbacks)."""
    config, params, sampler, ref, audio, mask = setup
    assert sampler.spec.guidance == "separate" and config.sample.steps > 1
    calls = {"FaceLocator": 0, "AudioProjection": 0, "UNet": 0}

    def count_calls(next_fun, args, kwargs, context):
        name = type(context.module).__name__
        if name in calls and context.method_name == "__call__":
            jax.debug.callback(lambda: calls.__setitem__(name, calls[name] + 1))
        return next_fun(*args, **kwargs)

    chunk_program.cache_clear()  # trace afresh under the interceptor, and leave no counting program behind
    try:
        with nn.intercept_methods(count_calls):
            counted, _ = _run(Sampler(config, params), ref, audio, mask, ref_scale=2.0, audio_scale=3.0)
        jax.effects_barrier()
    finally:
        chunk_program.cache_clear()
    clips = -(-FIVE_CLIPS // config.model.clip_frames)
    padded_clips = -(-clips // sampler.spec.clips_per_chunk) * sampler.spec.clips_per_chunk
    assert calls["FaceLocator"] == calls["AudioProjection"] == padded_clips
    assert calls["UNet"] == padded_clips * (config.sample.steps + 1) - 1  # backbone per step; ReferenceNet per clip
    plain, _ = _run(sampler, ref, audio, mask, ref_scale=2.0, audio_scale=3.0)
    np.testing.assert_array_equal(counted, plain)


def test_joint_guidance_needs_equal_scales(setup):
    config, params, sampler, ref, audio, mask = setup
    joint = Sampler(config, params, dataclasses.replace(sampler.spec, guidance="joint"))
    with pytest.raises(ValueError, match="joint guidance has one scale"):
        _run(joint, ref, audio, mask, ref_scale=2.0, audio_scale=3.0)


def test_speed_models_get_per_frame_speeds_through_the_chunk_program():
    config = load_config("configs/tiny.py:stage3")
    params = jax.eval_shape(lambda: random_model_params(config))  # traced only: nothing compiles or runs
    sampler = Sampler(config, params)
    m, k, f = config.model, config.sample.clips_per_chunk, config.model.clip_frames
    ref = jax.eval_shape(sampler.reference, jax.ShapeDtypeStruct((1, m.latent_size, m.latent_size, 4), np.float32))
    carry = (jax.ShapeDtypeStruct((1, m.motion_frames, m.latent_size, m.latent_size, 4), np.float32),
             jax.eval_shape(lambda: jax.random.PRNGKey(0)), jax.ShapeDtypeStruct((), np.int32))
    audio = jax.ShapeDtypeStruct((k, f, 2 * m.audio.context + 1, m.audio.layers, m.audio.feature_dim), np.float32)
    # The model checks inside denoise that a speed model receives per-frame speeds of the clip's shape.
    _, latents = jax.eval_shape(sampler.program, params, ref, carry, audio,
                                {"speed": jax.ShapeDtypeStruct((k, f), np.float32)},
                                jax.ShapeDtypeStruct((1, sampler.mask_size, sampler.mask_size, 1), np.float32),
                                jax.ShapeDtypeStruct((2,), np.float32))
    assert latents.shape == (k, f, m.latent_size, m.latent_size, 4)
    features = np.zeros((5,) + audio.shape[2:], np.float32)
    mask = np.zeros((sampler.mask_size,) * 2, np.float32)
    with pytest.raises(ValueError, match="pass 5 per-frame speeds"):
        next(sampler.stream(ref, features, mask, 0, 1.0, 1.0, {"speed": np.ones(3, np.float32)}))


N_STUB_MOTION = 2


# A stand-in denoiser whose output is a known function of what it is given, so the test can compute the whole
# long-form sampling by hand: out = 0.1 x + 0.2 (last motion frame) + 0.3 ref_keep + audio_keep * audio(frame).
def _stub_denoise(x_PFHWC, t_P, cond):
    last_motion = cond.motion["latents"][:, -1:]
    audio = cond.audio.mean(axis=(2, 3, 4))[:, :, None, None, None]
    keep = lambda k: k.astype(jnp.float32)[:, None, None, None, None]  # noqa: E731
    return 0.1 * x_PFHWC + 0.2 * last_motion + 0.3 * keep(cond.ref_keep) + keep(cond.audio_keep) * audio


def _stub_motion_features(ref_feats, motion_latents_1NHWC=None, motion_keep=None):
    """The 'features' handed to the stub denoiser are the motion latents themselves (zeros before clip 0)."""
    latents = jnp.zeros((1, N_STUB_MOTION, 4, 4, 4)) if motion_latents_1NHWC is None else motion_latents_1NHWC
    return {"latents": latents}


def _stub_emo(next_fun, args, kwargs, context):
    if isinstance(context.module, EMO) and context.method_name == "clip_inputs":
        return None  # the stub denoiser reads the audio itself
    if isinstance(context.module, EMO) and context.method_name == "denoise":
        return _stub_denoise(*args, **kwargs)
    if isinstance(context.module, EMO) and context.method_name == "motion_features":
        return _stub_motion_features(*args, **kwargs)
    return next_fun(*args, **kwargs)


def _by_hand(config, spec, audio_TCLD, seed, ref_scale, audio_scale):
    """The sampler's result computed clip by clip in plain Python, with the documented noise keys."""
    f, n = config.model.clip_frames, config.model.motion_frames
    schedule = spec.schedule()
    pairs = list(zip(*[np.asarray(a) for a in ddim_step_pairs(ddim_timesteps(schedule, spec.steps, spec.spacing))]))
    clips = -(-len(audio_TCLD) // f)
    audio = np.concatenate([audio_TCLD, np.zeros((clips * f - len(audio_TCLD),) + audio_TCLD.shape[1:])])
    previous, out = np.zeros((1, n, 4, 4, 4)), []
    for i in range(clips):
        x = jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(seed), i), (1, f, 4, 4, 4), jnp.float32)
        audio_term = audio[i * f:(i + 1) * f].mean(axis=(1, 2, 3))[None, :, None, None, None]
        for t, t_prev in pairs:
            # separate guidance of uncond (no ref, no audio), ref only, ref + audio: the stub's terms scale apart
            guided = 0.1 * x + 0.2 * previous[:, -1:] + ref_scale * 0.3 + audio_scale * audio_term
            x = ddim_step(schedule, jnp.asarray(guided, jnp.float32), jnp.int32(t), jnp.int32(t_prev), x)
        x = np.asarray(x)
        out.append(x[0])
        previous = x[:, -n:]
    return np.concatenate(out)[:len(audio_TCLD)]


@pytest.fixture()
def stub_sampler():
    """A tiny stage-2 sampler (4 x 4 latents) whose EMO.denoise and motion_features are the stubs above."""
    config = load_config("configs/tiny.py:stage2")
    config.model.latent_size = 4
    config.sample.steps = 3
    assert config.model.motion_frames == N_STUB_MOTION and config.sample.guidance == "separate"
    chunk_program.cache_clear()  # trace afresh under the interceptor, and leave no stubbed program behind
    try:
        with nn.intercept_methods(_stub_emo):
            yield config, Sampler(config, {})
    finally:
        chunk_program.cache_clear()


def test_sampler_guidance_chaining_and_noise_equal_the_computation_by_hand(stub_sampler):
    """Separate guidance with the scales in their places, the last n latents of each clip as the next clip's motion
    frames (across chunk calls too), and fresh noise per clip from fold_in(key, clip index)."""
    config, sampler = stub_sampler
    rng = np.random.default_rng(0)
    m = config.model
    frames = 2 * sampler.spec.clips_per_chunk * m.clip_frames - 2  # 4 clips in 2 chunk calls, the last one padded
    audio = rng.standard_normal((frames, 2 * m.audio.context + 1, m.audio.layers, m.audio.feature_dim))
    audio = audio.astype(np.float32)
    mask = np.zeros((sampler.mask_size,) * 2, np.float32)
    ref = ReferenceFeatures(tokens={}, motion={})
    got = sampler.sample(ref, audio, mask, 3, 2.0, 0.5)
    assert got.shape == (frames, 4, 4, 4)
    assert rel_err(got, _by_hand(config, sampler.spec, audio, 3, 2.0, 0.5)) < 1e-5
    # The check can tell the two scales apart, and each clip has its own noise.
    assert rel_err(got, _by_hand(config, sampler.spec, audio, 3, 0.5, 2.0)) > 1e-2
    f = m.clip_frames
    assert rel_err(got[f:2 * f], got[:f]) > 0.1
