"""The demo's encoder stand-ins: spectral targets and the wav2vec2 pretraining that learns them."""
import numpy as np

from emo_jax.demo.encoders import SPECTRUM_BANDS, band_energies, pretrain_wav2vec2
from emo_jax.demo.run import demo_configs
from emo_jax.demo.synthetic import speech_audio

SR = 16000


def test_band_energies_follow_loudness_and_pitch():
    t = np.arange(SR) / SR
    low, high = np.sin(2 * np.pi * 200 * t), np.sin(2 * np.pi * 3000 * t)
    quiet = band_energies(0.1 * low, 320, 400, 40)
    loud = band_energies(low, 320, 400, 40)
    assert quiet.shape == (40, SPECTRUM_BANDS)
    assert (loud >= quiet).all()
    np.testing.assert_allclose((loud - quiet).max(axis=1), np.log(100.0), atol=1e-2)  # 20 dB louder
    assert band_energies(low, 320, 400, 40)[10].argmax() < band_energies(high, 320, 400, 40)[10].argmax()


def test_wav2vec2_pretraining_lowers_its_loss():
    config = demo_configs(quick=True)["stage2"]
    config.demo.audio_pretrain_steps = 40
    waves = [speech_audio(2.0, 150.0 + 30 * i, seed=i) for i in range(3)]
    params, losses = pretrain_wav2vec2(config, waves, seed=0)
    assert len(losses) == 40 and np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses
    assert "feature_extractor" in params["params"]
