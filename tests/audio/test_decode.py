"""Decoding audio and video files to 16 kHz mono float32, and the errors for unusable inputs."""
import av
import numpy as np
import pytest

from emo_jax.audio import load_audio, normalize_audio
from emo_jax.audio.decode import AudioTrack, open_audio
from emo_jax.errors import AudioError


def _write(path, codec, rate, layout, samples, fmt, video=False):
    """Encodes `samples` [channels, n] with PyAV; `video` adds a second of black frames (mpeg4) first."""
    with av.open(str(path), "w") as container:
        if video:
            vstream = container.add_stream("mpeg4", rate=25)
            vstream.width = vstream.height = 32
            vstream.pix_fmt = "yuv420p"
        if samples is not None:
            astream = container.add_stream(codec, rate=rate)
            astream.layout = layout
        if video:
            black = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            for _ in range(25):
                container.mux(vstream.encode(black))
            container.mux(vstream.encode(None))
        if samples is not None:
            frame = av.AudioFrame.from_ndarray(samples, format=fmt, layout=layout)
            frame.sample_rate = rate
            container.mux(astream.encode(frame))
            container.mux(astream.encode(None))


def _sine(freq, rate, seconds, amplitude=1.0):
    return amplitude * np.sin(2 * np.pi * freq * np.arange(round(rate * seconds)) / rate)


def _peak_hz(x, rate=16000):
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.argmax(spectrum) * rate / len(x)


def test_stereo_44k_mp3_to_16k_mono(tmp_path):
    path = tmp_path / "stereo.mp3"
    left, right = _sine(440, 44100, 1.5, 0.5), _sine(440, 44100, 1.5, 0.3)
    _write(path, "libmp3lame", 44100, "stereo", np.stack([left, right]).astype(np.float32), "fltp")
    y = load_audio(str(path))
    assert y.dtype == np.float32 and y.ndim == 1
    assert len(y) == 24000  # the mp3 demuxer trims the encoder delay and padding (gapless info)
    assert abs(_peak_hz(y[2000:-2000]) - 440) < 2
    # Downmix is the channel mean (0.4), not libswresample's unnormalised 0.707 * (L + R) (0.57).
    assert np.abs(y[2000:-2000]).max() == pytest.approx(0.4, abs=0.02)


def test_mono_8k_wav_to_16k(tmp_path):
    path = tmp_path / "mono.wav"
    x = (_sine(300, 8000, 1.25, 0.6) * 32767).astype(np.int16)[None]
    _write(path, "pcm_s16le", 8000, "mono", x, "s16")
    y = load_audio(str(path))
    assert len(y) == 20000
    assert abs(_peak_hz(y) - 300) < 2
    reference = _sine(300, 16000, 1.25, 0.6)
    assert np.max(np.abs(y[500:-500] - reference[500:-500])) < 0.01  # in phase, no delay from resampling


@pytest.mark.parametrize("name,codec,fmt", [("clip.flac", "flac", "s16"), ("clip.m4a", "aac", "fltp")])
def test_flac_and_m4a(tmp_path, name, codec, fmt):
    x = _sine(1000, 48000, 1.0, 0.5)
    x = (x * 32767).astype(np.int16)[None] if fmt == "s16" else x.astype(np.float32)[None]
    _write(tmp_path / name, codec, 48000, "mono", x, fmt)
    y = load_audio(str(tmp_path / name))
    # PyAV writes no edit list, so AAC's priming frame and the last frame's padding stay: 2 x 1024 at 48 kHz.
    assert 16000 <= len(y) <= 16000 + 2 * 1024 // 3 + 1
    assert abs(_peak_hz(y) - 1000) < 2


def test_audio_stream_of_mp4_with_video(tmp_path):
    path = tmp_path / "talk.mp4"
    _write(path, "aac", 48000, "mono", _sine(600, 48000, 1.0, 0.5).astype(np.float32)[None], "fltp", video=True)
    y = load_audio(str(path))
    assert 16000 <= len(y) <= 16000 + 2 * 1024 // 3 + 1
    assert abs(_peak_hz(y) - 600) < 2


@pytest.mark.parametrize("read", [load_audio, open_audio])
def test_missing_empty_videoonly_and_text_files_raise_audio_error(tmp_path, read):
    with pytest.raises(AudioError, match="nowhere.wav"):
        read(str(tmp_path / "nowhere.wav"))
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match="empty.wav.*empty"):
        read(str(empty))
    silent_video = tmp_path / "silent.mp4"
    _write(silent_video, None, None, None, None, None, video=True)
    with pytest.raises(AudioError, match="silent.mp4.*no audio stream"):
        read(str(silent_video))
    text = tmp_path / "notes.txt"
    text.write_text("these are not the sounds you are looking for\n" * 20)
    with pytest.raises(AudioError, match="notes.txt"):
        read(str(text))


def test_float_wav_with_nan_samples_is_an_audio_error(tmp_path):
    x = _sine(440, 16000, 0.5, 0.5).astype(np.float32)
    x[4000:4003] = np.nan
    _write(tmp_path / "nan.wav", "pcm_f32le", 16000, "mono", x[None], "flt")
    for read in (load_audio, open_audio):
        with pytest.raises(AudioError, match=r"nan\.wav' holds 3 non-finite samples .* the first at 0\.250 s"):
            read(str(tmp_path / "nan.wav"))


def test_opened_track_reads_the_loaded_samples_again_and_again(tmp_path):
    path = tmp_path / "stereo.mp3"
    left, right = _sine(440, 44100, 2.5, 0.5) + 0.05, _sine(220, 44100, 2.5, 0.3)
    _write(path, "libmp3lame", 44100, "stereo", np.stack([left, right]).astype(np.float32), "fltp")
    loaded = load_audio(str(path))
    track = open_audio(str(path))
    assert track.num_samples == len(loaded) == 40000
    # Whole-file statistics from the first pass, in float64 blocks: numpy's float32 sums within rounding.
    assert track.mean == pytest.approx(loaded.mean(), rel=1e-5, abs=1e-7)
    assert track.var == pytest.approx(loaded.var(), rel=1e-5)
    for _ in range(2):  # every read decodes the file again, in decoder-sized blocks
        blocks = list(track.blocks())
        assert len(blocks) > 10
        np.testing.assert_array_equal(np.concatenate(blocks), loaded)
    normalized = np.concatenate(list(track.blocks(normalize=True)))
    np.testing.assert_allclose(normalized, normalize_audio(loaded), rtol=1e-5, atol=1e-5)


def test_track_from_array_normalizes_as_normalize_audio():
    x = (np.random.default_rng(0).standard_normal(5000) * 0.3 + 0.1).astype(np.float32)
    track = AudioTrack.from_array(x)
    assert track.num_samples == 5000
    np.testing.assert_array_equal(np.concatenate(list(track.blocks(normalize=True))), normalize_audio(x))
    with pytest.raises(AudioError, match="mono"):
        AudioTrack.from_array(np.zeros((2, 100), np.float32))


def test_normalize_audio_matches_transformers_feature_extractor():
    from transformers import Wav2Vec2FeatureExtractor

    x = (np.random.default_rng(0).standard_normal(5000) * 0.3 + 0.1).astype(np.float32)
    expected = Wav2Vec2FeatureExtractor(do_normalize=True)(x, sampling_rate=16000).input_values[0]
    np.testing.assert_allclose(normalize_audio(x), expected, rtol=1e-6, atol=1e-6)
    assert normalize_audio(x).dtype == np.float32
