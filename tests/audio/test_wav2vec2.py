"""Parity of the Flax wav2vec2 encoder with transformers' Wav2Vec2Model (safetensors and .bin checkpoints)."""
import logging
import os

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from emo_jax.audio.wav2vec2 import Wav2Vec2Config
from emo_jax.interop.wav2vec2_import import load_wav2vec2
from w2v_tiny import make_torch_wav2vec2, save_as_bin, save_tiny


def _rel_err(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - b)) / np.max(np.abs(b)))


def _check_parity(folder, torch_model, num_samples=6000):
    module, params, config = load_wav2vec2(folder)
    audio = np.random.default_rng(1).standard_normal((2, num_samples)).astype(np.float32)
    with torch.no_grad():
        out = torch_model(torch.from_numpy(audio), output_hidden_states=True)
    got = module.apply(params, jnp.asarray(audio))
    assert len(got.hidden_states) == len(out.hidden_states) == config.num_hidden_layers + 1
    errors = []
    pairs = list(zip(got.hidden_states, out.hidden_states)) + [(got.last_hidden_state, out.last_hidden_state)]
    for g, e in pairs:
        assert g.shape == tuple(e.shape) == (2, config.num_frames(num_samples), config.hidden_size)
        errors.append(_rel_err(g, e.numpy()))
    print("relative errors per hidden state, then last_hidden_state:", ["%.2e" % x for x in errors])
    assert max(errors) < 1e-4
    return config


@pytest.mark.parametrize("layout", ["base", "large"])
def test_parity_safetensors(tmp_path, layout):
    folder = str(tmp_path / layout)
    model = save_tiny(folder, layout)
    assert os.path.isfile(os.path.join(folder, "model.safetensors"))
    config = _check_parity(folder, model)
    assert config.do_stable_layer_norm == (layout == "large")


@pytest.mark.parametrize("layout,old_names", [("base", True), ("large", False)])
def test_parity_bin_with_ctc_prefix(tmp_path, layout, old_names, caplog):
    ctc = make_torch_wav2vec2(layout, seed=3, head=True)
    folder = str(tmp_path / "ctc")
    save_as_bin(ctc, folder, old_weight_norm_names=old_names)
    with caplog.at_level(logging.INFO):
        _check_parity(folder, ctc.wav2vec2)
    assert "lm_head.weight" in caplog.text


def test_config_defaults_are_transformers_defaults():
    from transformers import Wav2Vec2Config as HFConfig

    ours, theirs = Wav2Vec2Config(), HFConfig()
    for name in Wav2Vec2Config.__dataclass_fields__:
        assert getattr(ours, name) == (tuple(v) if isinstance(v := getattr(theirs, name), list) else v), name
    assert ours.hop_samples == 320 and ours.receptive_field_samples == 400
    assert ours.num_frames(16000) == 49
