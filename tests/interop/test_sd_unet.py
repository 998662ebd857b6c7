"""SD1.5 weights into both EMO UNets: every SD layer EMO has is filled, EMO's own layers keep their init."""
import numpy as np
import pytest
from flax import linen as nn
from flax import traverse_util

from emo_jax.config import load_config, model_config
from emo_jax.interop.keys import flax_path_to_torch
from emo_jax.interop.sd_unet import init_from_sd
from emo_jax.models.emo import EMO, example_inputs
from emo_jax.models.partitioning import init_params
from tests.helpers import randomize_torch_module

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")


def test_sd_weights_fill_reference_net_and_backbone(tmp_path):
    config = load_config("configs/tiny.py:stage2")
    cfg = model_config(config)
    u = cfg.unet
    sd = diffusers.UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=u.block_out_channels,
        down_block_types=("CrossAttnDownBlock2D",) * 2, up_block_types=("CrossAttnUpBlock2D",) * 2,
        layers_per_block=u.layers_per_block, attention_head_dim=u.heads, norm_num_groups=u.norm_groups,
        cross_attention_dim=32)
    randomize_torch_module(sd)
    sd.save_pretrained(tmp_path / "unet")
    state = {k: v.numpy() for k, v in sd.state_dict().items()}

    model = EMO(cfg)
    params = nn.unbox(init_params(model, 0, example_inputs(cfg, 1, 2, 16)))
    loaded, kept = init_from_sd(params, str(tmp_path))

    for name in ("reference_net", "backbone"):
        flat = traverse_util.flatten_dict(loaded[name])
        before = traverse_util.flatten_dict(params[name])
        filled = 0
        for path, value in flat.items():
            key = flax_path_to_torch(path)
            if key in state:
                ref = state[key]
                ref = ref.T if ref.ndim == 2 else ref.transpose(2, 3, 1, 0) if ref.ndim == 4 else ref
                assert np.array_equal(np.asarray(value), ref), key
                filled += 1
            else:
                assert key in kept[name] and np.array_equal(np.asarray(value), np.asarray(before[path])), key
        assert filled > 100
    assert any("audio_attn" in k for k in kept["backbone"])
    assert any("motion_modules" in k for k in kept["backbone"])
    assert kept["reference_net"] == []
