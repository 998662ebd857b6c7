"""Where a new run's parameters come from: AnimateDiff into the temporal layers, config-selected trainables."""
import logging

import jax
import numpy as np
import pytest
from flax import traverse_util
from safetensors.numpy import save_file

from emo_jax.build import abstract_params
from emo_jax.config import ConfigError, load_config
from emo_jax.interop.keys import flax_path_to_torch
from emo_jax.params import module_of
from emo_jax.sharding import make_mesh
from emo_jax.train.state import StateFactory
from emo_jax.train.train import initial_params, log_sources

pytest.importorskip("torch")
from tests.interop.test_animatediff import animatediff_v2_state  # noqa: E402  (needs torch)


def _zeros(config):
    abstract = abstract_params(config)
    abstract.pop("vae", None)
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), abstract)


def test_stage2_starts_its_temporal_layers_from_animatediff(tmp_path, caplog):
    config = load_config("configs/tiny.py:stage2")
    state = animatediff_v2_state(config, seed=3)
    save_file(state, str(tmp_path / "mm_sd_v15_v2.safetensors"))
    config.init.animatediff_path = str(tmp_path / "mm_sd_v15_v2.safetensors")
    with caplog.at_level(logging.INFO, logger="emo_jax.train"):
        params = initial_params(config, _zeros(config))
    temporal = {p: v for p, v in traverse_util.flatten_dict(params).items() if module_of(p) == "temporal"}
    assert len(temporal) == len([k for k in state if not k.endswith("pos_encoder.pe")])
    for path, value in temporal.items():
        want = state[flax_path_to_torch(path[1:])]
        np.testing.assert_array_equal(value, want.T if path[-1] == "kernel" else want)
    others = [v for p, v in traverse_util.flatten_dict(params).items() if module_of(p) != "temporal"]
    assert not any(np.any(v) for v in others)  # nothing else was touched
    assert f"temporal: {len(temporal)} tensors from AnimateDiff" in caplog.text
    assert "start from zero" not in caplog.text


def test_without_animatediff_the_run_says_the_temporal_layers_start_from_zero(caplog):
    config = load_config("configs/tiny.py:stage2")
    paths = traverse_util.flatten_dict(_zeros(config))
    with caplog.at_level(logging.INFO, logger="emo_jax.train"):
        log_sources(config, dict.fromkeys(paths, "fresh initialisation"))
    assert "temporal layers start from zero-initialised outputs" in caplog.text
    assert "init.animatediff_path" in caplog.text


def test_animatediff_for_an_image_model_is_a_config_error(tmp_path):
    config = load_config("configs/tiny.py:stage1")
    config.init.animatediff_path = str(tmp_path / "mm.safetensors")
    save_file({"x": np.zeros(1, np.float32)}, config.init.animatediff_path)
    with pytest.raises(ConfigError, match="init.animatediff_path: .*no motion modules"):
        initial_params(config, _zeros(config))


def test_config_selects_what_trains():
    config = load_config("configs/tiny.py:stage3")
    config.train.trainable = ("speed", r"backbone/.*/audio_attn/")
    factory = StateFactory(config, make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1]))
    chosen = {p for p, on in traverse_util.flatten_dict(factory.mask).items() if on}
    assert {module_of(p) for p in chosen} == {"speed", "audio_attention"}
    assert all("audio_attn" in p for p in chosen if module_of(p) == "audio_attention")
