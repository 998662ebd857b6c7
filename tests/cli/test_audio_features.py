"""The emo-audio-features command: audio file + wav2vec2 folder -> .npy of per-frame features."""
import struct
import wave

import numpy as np
import pytest

import emo_jax.audio.features as features_module
from emo_jax.cli.audio_features import main
from tests.audio.w2v_tiny import save_tiny


def _write_wav(path, seconds, rate=16000):
    x = (np.random.default_rng(0).uniform(-0.5, 0.5, round(seconds * rate)) * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(x.tobytes())


def _write_float_wav(path, x, rate=16000):
    """A mono IEEE-float (format 3) WAV, which the wave module cannot write."""
    data = np.asarray(x, "<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    path.write_bytes(b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data)) + b"WAVE"
                     + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data)


def test_cli_writes_features(tmp_path, capsys):
    folder = str(tmp_path / "w2v")
    save_tiny(folder)
    _write_wav(tmp_path / "speech.wav", 1.13)
    out = tmp_path / "out" / "feats.npy"
    assert main([str(tmp_path / "speech.wav"), "--wav2vec", folder, "--fps", "30", "--out", str(out)]) == 0
    feats = np.load(out)
    assert feats.shape == (34, 5, 2, 32)  # round(1.13 * 30) frames, 2 * 2 + 1 context, 2 layers, hidden 32
    assert feats.dtype == np.float32 and np.isfinite(feats).all()
    assert "(34, 5, 2, 32)" in capsys.readouterr().out


def test_cli_reports_bad_inputs(tmp_path, capsys):
    _write_wav(tmp_path / "speech.wav", 0.5)
    code = main([str(tmp_path / "speech.wav"), "--wav2vec", str(tmp_path / "missing"), "--out", str(tmp_path / "f.npy")])
    assert code == 2
    assert "missing" in capsys.readouterr().err
    assert not (tmp_path / "f.npy").exists()


def test_cli_refuses_nan_samples(tmp_path, capsys):
    folder = str(tmp_path / "w2v")
    save_tiny(folder)
    x = np.random.default_rng(0).uniform(-0.5, 0.5, 16000).astype(np.float32)
    x[[100, 5000]] = np.nan
    _write_float_wav(tmp_path / "nan.wav", x)
    out = tmp_path / "feats.npy"
    capsys.readouterr()  # save_tiny's progress bar
    assert main([str(tmp_path / "nan.wav"), "--wav2vec", folder, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("emo-audio-features: error:") and "nan.wav" in err[0]
    assert "2 non-finite samples" in err[0]
    assert not out.exists()


def test_frame_rate_context_and_window_come_from_the_config(tmp_path, monkeypatch):
    folder = str(tmp_path / "w2v")
    save_tiny(folder)
    _write_wav(tmp_path / "speech.wav", 1.13)
    windows = []
    real = features_module.encode_hidden_states
    monkeypatch.setattr(features_module, "encode_hidden_states",
                        lambda *a, **kw: windows.append(kw["window_seconds"]) or real(*a, **kw))
    out = tmp_path / "feats.npy"
    common = [str(tmp_path / "speech.wav"), "--wav2vec", folder, "--out", str(out)]
    assert main(common + ["--config", "configs/tiny.py", "--config.model.audio.context", "1"]) == 0
    assert np.load(out).shape == (28, 3, 2, 32)  # tiny's 25 fps: round(1.13 * 25) frames, context 1 on each side
    assert main(common) == 0  # the default config, emo_512: 30 fps, context 2
    assert np.load(out).shape == (34, 5, 2, 32)
    assert main(common + ["--config", "configs/tiny.py", "--window-seconds", "7", "--fps", "30"]) == 0
    assert np.load(out).shape == (34, 5, 2, 32)
    assert windows == [pytest.approx(10.0), pytest.approx(30.0), pytest.approx(7.0)]  # tiny's, emo_512's, the flag
