"""Audio features: frame-rate alignment, frame counts, context, windowed against whole-file encoding, and streamed
against whole-track features."""
import wave

import jax.numpy as jnp
import numpy as np
import pytest
from w2v_tiny import flax_tiny_50hz

from emo_jax.audio.decode import AudioTrack, load_audio, open_audio
from emo_jax.audio.features import (
    add_context,
    audio_feature_stream,
    audio_features,
    encode_hidden_states,
    encoder_timing,
    resample_to_fps,
    video_frame_count,
)

HOP, OFFSET = 0.02, 199.5 / 16000  # wav2vec2 frame j sits at the centre of samples [320 j, 320 j + 400)


@pytest.mark.parametrize("fps", [25, 30, 24, 29.97])
def test_resampling_puts_an_impulse_at_its_time(fps):
    x = np.zeros((150, 2), np.float32)
    for j0 in (7, 61, 118):
        x[:] = 0
        x[j0] = 1.0
        t = OFFSET + HOP * j0
        out = resample_to_fps(x, 90, fps, HOP, OFFSET)
        expected = np.maximum(0.0, 1.0 - np.abs(np.arange(90) / fps - t) / HOP)
        np.testing.assert_allclose(out[:, 0], expected, atol=1e-6)
        assert np.argmax(out[:, 1]) == round(t * fps)


def test_encoder_timing_of_released_models():
    from emo_jax.audio.wav2vec2 import Wav2Vec2Config

    assert encoder_timing(Wav2Vec2Config()) == (HOP, OFFSET)


def test_frame_count_rounds_duration_times_fps():
    assert video_frame_count(16000 * 2, 30) == 60
    assert video_frame_count(16000 + 266, 30) == 30  # 1.0166 s = 30.499 frames
    assert video_frame_count(16000 + 267, 30) == 31  # 1.0167 s = 30.50 frames
    assert video_frame_count(16000 * 123 // 100 + 7, 25) == 31  # 1.2304 s = 30.76 frames


def test_add_context_repeats_edges():
    x = np.arange(5)
    np.testing.assert_array_equal(add_context(x, 2)[0], [0, 0, 0, 1, 2])
    np.testing.assert_array_equal(add_context(x, 2)[2], [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(add_context(x, 2)[4], [2, 3, 4, 4, 4])


@pytest.mark.parametrize("fps", [25, 30])
def test_click_lands_in_its_video_frame(fps):
    module, params = flax_tiny_50hz(local=True)
    audio = np.zeros(int(3.1 * 16000) + 123, np.float32)
    # Clicks at encoder-frame centres whose video frame position is far (>= 0.15 frame) from a rounding tie, and
    # on both sides of it, so that a frame-start / frame-centre mix-up or a drift moves the peak.
    clicks = []
    for j in range(25, 150):
        t = (320 * j + 199.5) / 16000
        frac = t * fps % 1
        if (0.15 < frac < 0.35 or 0.65 < frac < 0.85) and all(abs(t - c) > 0.4 for c in clicks):
            clicks.append(t)
            audio[320 * j + 199] = audio[320 * j + 200] = 1.0
    assert len(clicks) >= 6
    feats = audio_features(audio, fps, module, params, context=2, include_embedding_layer=True)
    assert feats.shape == (video_frame_count(len(audio), fps), 5, 3, 32)
    np.testing.assert_array_equal(feats[10:-10, 3], feats[11:-9, 2])
    center = feats[:, 2]
    silence = center[int(0.25 * fps)]  # before the first click
    deviation = np.linalg.norm((center - silence).reshape(len(center), -1), axis=1)
    for t in clicks:
        k = round(t * fps)
        near = slice(k - 4, k + 5)
        assert np.argmax(deviation[near]) == 4, (t, k, deviation[near])


def test_frame_count_of_features_for_a_partial_frame():
    module, params = flax_tiny_50hz()
    audio = np.random.default_rng(0).standard_normal(16000 * 123 // 100 + 7).astype(np.float32)
    assert audio_features(audio, 25, module, params, context=1).shape == (31, 3, 2, 32)
    assert audio_features(audio, 30, module, params, context=0).shape == (37, 1, 2, 32)


def _rel_err(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("layout", ["base", "large"])
def test_single_padded_window_equals_direct_encoding(layout):
    module, params = flax_tiny_50hz(layout, seed=1)
    audio = np.random.default_rng(1).standard_normal(int(1.37 * 16000)).astype(np.float32)
    direct = np.stack(module.apply(params, jnp.asarray(audio[None])).hidden_states, axis=2)[0]
    encoded = encode_hidden_states(audio, module, params)  # padded to a 2 s bucket, padding masked
    assert encoded.shape == direct.shape == (68, 3, 32)
    assert _rel_err(encoded, direct) < 1e-5


@pytest.mark.parametrize("layout", ["base", "large"])
def test_windowed_equals_whole_file_when_attention_is_local(layout):
    module, params = flax_tiny_50hz(layout, seed=2, local=True)
    # Keep the positional conv (its reach is what the overlap must cover); only attention is made local.
    params["params"]["encoder"]["pos_conv_embed"] = flax_tiny_50hz(layout, seed=2)[1]["params"]["encoder"]["pos_conv_embed"]
    rng = np.random.default_rng(2)
    audio = (rng.standard_normal(int(3.3 * 16000)) * np.linspace(0.2, 3.0, int(3.3 * 16000))).astype(np.float32)
    whole = np.stack(module.apply(params, jnp.asarray(audio[None])).hidden_states, axis=2)[0]
    # 1 s windows with 0.2 s (10 frames, the positional conv reaches 8) each side: 165 frames -> 4 windows.
    windowed = encode_hidden_states(audio, module, params, window_seconds=1.0, overlap_seconds=0.2)
    err = _rel_err(windowed, whole)
    print(f"{layout}: windowed vs whole-file relative error {err:.2e}")
    assert err < 1e-3


def test_overlap_shorter_than_positional_conv_is_refused():
    module, params = flax_tiny_50hz()
    with pytest.raises(ValueError, match="overlap_seconds"):
        encode_hidden_states(np.zeros(16000, np.float32), module, params, window_seconds=1.0, overlap_seconds=0.1)


@pytest.mark.parametrize("layout,fps", [("base", 25), ("large", 29.97)])
def test_streamed_features_equal_whole_track_features(layout, fps):
    module, params = flax_tiny_50hz(layout, seed=2)
    audio = np.random.default_rng(2).standard_normal(int(3.3 * 16000) + 77).astype(np.float32)
    windows = dict(window_seconds=1.0, overlap_seconds=0.2)  # 4 windows of 1 s
    expected = audio_features(audio, fps, module, params, context=2, **windows)
    stream = audio_feature_stream(audio, fps, module, params, context=2, **windows)
    assert len(stream) == len(expected)  # known before any audio is encoded
    blocks = list(stream)
    # A block per window, each frame's context reaching into its neighbours at the borders.
    assert len(blocks) == 4 and all(len(b) > 2 for b in blocks)
    np.testing.assert_array_equal(np.concatenate(blocks), expected)


def test_features_streamed_from_a_file_match_the_loaded_audio(tmp_path):
    module, params = flax_tiny_50hz("base", seed=3)
    rng = np.random.default_rng(3)
    samples = (rng.standard_normal(int(2.7 * 16000)) * np.linspace(0.05, 0.4, int(2.7 * 16000)) * 32767)
    path = tmp_path / "speech.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(samples.astype(np.int16).tobytes())
    windows = dict(window_seconds=0.5, overlap_seconds=0.2)
    expected = audio_features(load_audio(str(path)), 25, module, params, context=1, **windows)
    streamed = np.concatenate(list(audio_feature_stream(open_audio(str(path)), 25, module, params, context=1,
                                                        **windows)))
    # The file's mean and variance are gathered in float64 blocks, numpy's whole-array ones in float32.
    np.testing.assert_allclose(streamed, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


@pytest.mark.parametrize("layout,passes", [("base", 2), ("large", 1)])
def test_streamed_features_read_the_audio_as_they_go(layout, passes):
    module, params = flax_tiny_50hz(layout, seed=2)
    audio = np.random.default_rng(4).standard_normal(5 * 16000).astype(np.float32)
    reads = []

    def read():  # 0.1 s blocks, counted per pass
        reads.append(0)
        for start in range(0, len(audio), 1600):
            reads[-1] += 1
            yield audio[start : start + 1600]

    track = AudioTrack(len(audio), audio.mean(), audio.var(), read)
    blocks = iter(audio_feature_stream(track, 25, module, params, window_seconds=1.0, overlap_seconds=0.2))
    assert reads == []  # nothing is read before the first block is asked for
    first = next(blocks)
    # Base models read the whole track once for the group norm's statistics; the first window needs 1.4 s more.
    assert reads[: passes - 1] == [50] * (passes - 1) and reads[-1] <= 15
    rest = np.concatenate([first] + list(blocks))
    assert len(reads) == passes and reads[-1] == 50
    np.testing.assert_array_equal(rest, audio_features(audio, 25, module, params, window_seconds=1.0,
                                                       overlap_seconds=0.2))
