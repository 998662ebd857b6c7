"""Configs: sections into typed dataclasses field for field, values derived where they are used, the lock."""
import dataclasses

import ml_collections
import pytest

from emo_jax.build import build_model, train_frames, vae_config
from emo_jax.config import load_config, model_config, parse_config_args, section
from emo_jax.errors import ConfigError
from emo_jax.models.emo import AudioConditioning, EMOConfig
from emo_jax.sample.sampler import SamplerSpec


def test_model_section_becomes_emo_config_field_for_field():
    config = load_config("configs/emo_512.py:stage3")
    cfg = model_config(config)
    m = config.model
    assert cfg.audio == AudioConditioning(**m.audio)
    assert cfg.speed.centres == tuple(m.speed.centres) and cfg.face_locator.channels == tuple(m.face_locator.channels)
    assert (cfg.clip_frames, cfg.motion_frames, cfg.latent_size) == (m.clip_frames, m.motion_frames, m.latent_size)
    assert cfg.unet.block_out_channels == tuple(m.unet.block_out_channels)
    assert vae_config(config).norm_groups == config.vae.norm_groups
    # Every field of every section dataclass is a key of its section: no rename list in between.
    for sub, node in ((cfg, m), (cfg.audio, m.audio), (cfg.speed, m.speed), (cfg.face_locator, m.face_locator),
                      (cfg.unet, m.unet)):
        assert {f.name for f in dataclasses.fields(sub)} == set(node.keys())


def test_unknown_section_keys_are_named():
    node = ml_collections.ConfigDict({"context": 2, "layer": 12})
    with pytest.raises(ConfigError, match=r"unknown keys in model.audio: \['layer'\]"):
        section(AudioConditioning, node, "model.audio")
    with pytest.raises(ConfigError, match=r"unknown keys in model: \['extra'\]"):
        section(EMOConfig, ml_collections.ConfigDict({"extra": 1, "unet": {}}), "model")


def test_derived_values_follow_their_overrides():
    config, _ = parse_config_args(["--config", "configs/tiny.py:stage2", "--config.train.zero_terminal_snr", "True",
                                   "--config.model.clip_frames", "6"])
    assert SamplerSpec.from_config(config).spacing == "trailing"
    assert train_frames(config) == 6 and build_model(config)[1]["x_BFHWC"].shape[1] == 6
    plain, _ = parse_config_args(["--config", "configs/tiny.py:stage1"])
    assert SamplerSpec.from_config(plain).spacing == "leading" and train_frames(plain) == 1


def test_config_is_locked_after_overrides():
    config, _ = parse_config_args(["--config", "configs/tiny.py:stage2", "--config.train.lr", "2e-5"])
    assert config.train.lr == 2e-5
    config.train.lr = 3e-5  # existing fields can still be set
    with pytest.raises(AttributeError):
        config.train.learning_rate = 1e-4  # a misspelt field is not silently added


def test_topology_presets_are_the_best_fitting_compiled_rows():
    """Each `emo_512.py:<stage>,<topology>` preset is the compiled row (benchmarks/results/compile_plan.json) with the
    most examples per second among the rows that fit that slice, and the config it gives has that row's settings."""
    import json

    from configs.emo_512 import TOPOLOGY_PRESETS

    with open("benchmarks/results/compile_plan.json", encoding="utf-8") as f:
        rows = [r for r in json.load(f).values() if r.get("fits")]
    for (variant, topology), (batch, mesh, attention, remat_resnets, policy) in TOPOLOGY_PRESETS.items():
        same = [r for r in rows if (f"stage{r['stage']}", r["topology"]) == (variant, topology)]
        best = max(same, key=lambda r: r["examples_per_second"])
        assert (best["global_batch"], tuple(best["mesh"][k] for k in ("data", "fsdp", "tensor")),
                best["attention_impl"], best["remat_resnets"],
                best["remat_policy"]) == (batch, mesh, attention, remat_resnets, policy), (variant, topology)
        config = load_config(f"configs/emo_512.py:{variant},{topology}")
        assert config.train.batch_size == batch and config.model.unet.attention_impl == attention
        assert tuple(config.mesh.shape[k] for k in ("data", "fsdp", "tensor")) == mesh
        assert (config.model.unet.remat_resnets, config.model.unet.remat_policy) == (remat_resnets, policy)
    assert load_config("configs/emo_512.py:stage2").train.batch_size == 4  # no topology: the paper's settings
    with pytest.raises(ConfigError, match=r"no compiled preset for 'stage2,v4-8'.*v5p-128"):
        load_config("configs/emo_512.py:stage2,v4-8")


def test_checkpoint_model_sections_from_before_the_speed_order_setting():
    """A stage-3 checkpoint saved before model.unet.speed_before_temporal existed ran its speed attention after the
    temporal attention: it matches a config that says so and is refused by one that runs it first; a stage-2
    checkpoint (no speed layers) matches either."""
    from emo_jax.train.checkpoint import _model_section

    for variant, matches_new in (("stage3", False), ("stage2", True)):
        old = load_config(f"configs/tiny.py:{variant}")
        del old.model.unet["speed_before_temporal"]
        new = load_config(f"configs/tiny.py:{variant}")
        assert new.model.unet.speed_before_temporal
        assert (_model_section(old) == _model_section(new)) == matches_new
        new.model.unet.speed_before_temporal = False
        assert _model_section(old) == _model_section(new)
