"""AnimateDiff v2 motion modules into the backbone: key layout written from AnimateDiff's UNet, not our exporter."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from safetensors.numpy import load_file, save_file

from emo_jax.build import build_model
from emo_jax.interop.animatediff import import_animatediff
from emo_jax.interop.export import FILES, export_weights
from emo_jax.interop.torch_io import CheckpointError
from emo_jax.config import model_config
from emo_jax.models.emo import example_inputs
from emo_jax.models.temporal import TemporalTransformer
from tests.helpers import randomize_torch_module, rel_err

torch = pytest.importorskip("torch")
from tests import torch_references  # noqa: E402  (needs torch)


def animatediff_v2_layout(block_out_channels, layers_per_block, max_len=32) -> dict[str, tuple]:
    """Key -> shape of mm_sd_v15_v2 for these widths.

    From AnimateDiff's UNet3DConditionModel with configs/inference/inference-v2.yaml: a VanillaTemporalModule after
    each resnet(+attention) of every down block (layers_per_block each) and up block (layers_per_block + 1 each),
    and one in the mid block (motion_module_mid_block: true); num_transformer_block 1; two Temporal_Self
    attention blocks with positional encoding of max_len 32; no bias on to_q/to_k/to_v; GEGLU feed-forward.
    """
    modules = [(f"down_blocks.{i}.motion_modules.{j}", c)
               for i, c in enumerate(block_out_channels) for j in range(layers_per_block)]
    modules.append(("mid_block.motion_modules.0", block_out_channels[-1]))
    modules += [(f"up_blocks.{i}.motion_modules.{j}", c)
                for i, c in enumerate(reversed(block_out_channels)) for j in range(layers_per_block + 1)]
    layout = {}
    for name, c in modules:
        tt = f"{name}.temporal_transformer"
        block = f"{tt}.transformer_blocks.0"
        layout.update({f"{tt}.norm.weight": (c,), f"{tt}.norm.bias": (c,), f"{tt}.proj_in.weight": (c, c),
                       f"{tt}.proj_in.bias": (c,), f"{tt}.proj_out.weight": (c, c), f"{tt}.proj_out.bias": (c,),
                       f"{block}.ff.net.0.proj.weight": (8 * c, c), f"{block}.ff.net.0.proj.bias": (8 * c,),
                       f"{block}.ff.net.2.weight": (c, 4 * c), f"{block}.ff.net.2.bias": (c,),
                       f"{block}.ff_norm.weight": (c,), f"{block}.ff_norm.bias": (c,)})
        for a in range(2):
            attn = f"{block}.attention_blocks.{a}"
            layout.update({f"{attn}.to_q.weight": (c, c), f"{attn}.to_k.weight": (c, c),
                           f"{attn}.to_v.weight": (c, c), f"{attn}.to_out.0.weight": (c, c),
                           f"{attn}.to_out.0.bias": (c,), f"{attn}.pos_encoder.pe": (1, max_len, c),
                           f"{block}.norms.{a}.weight": (c,), f"{block}.norms.{a}.bias": (c,)})
    return layout


def animatediff_pe(max_len, c):
    """AnimateDiff's PositionalEncoding buffer, computed the way its module does (torch, float32)."""
    position = torch.arange(max_len).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, c, 2) * (-math.log(10000.0) / c))
    pe = torch.zeros(1, max_len, c)
    pe[0, :, 0::2] = torch.sin(position * div_term)
    pe[0, :, 1::2] = torch.cos(position * div_term)
    return pe.numpy()


def animatediff_v2_state(config, seed=0) -> dict[str, np.ndarray]:
    u = config.model.unet
    rng = np.random.default_rng(seed)
    state = {}
    for key, shape in animatediff_v2_layout(u.block_out_channels, u.layers_per_block).items():
        if key.endswith("pos_encoder.pe"):
            state[key] = animatediff_pe(shape[1], shape[2])
        else:
            state[key] = (0.2 * rng.standard_normal(shape) + (1.0 if "norm" in key and "weight" in key else 0.0)
                          ).astype(np.float32)
    return state


@pytest.fixture(scope="module")
def forward(tiny_stage3):
    config, _, _ = tiny_stage3
    model, _ = build_model(config, batch=1)
    shapes = example_inputs(model.cfg, 1, config.model.clip_frames, config.model.latent_size)
    rng = np.random.default_rng(3)
    inputs = {k: jnp.asarray(rng.standard_normal(v.shape).astype(np.float32)) for k, v in shapes.items()}
    inputs["t_B"] = jnp.array([400])
    return jax.jit(lambda p: model.apply({"params": p}, **inputs))


def test_animatediff_v2_imports_every_key(tiny_stage3, forward, tmp_path):
    config, params, _ = tiny_stage3
    state = animatediff_v2_state(config)
    path = str(tmp_path / "mm_sd_v15_v2.safetensors")
    save_file(state, path)
    new, report = import_animatediff(path, params)
    pe = {k for k in state if k.endswith("pos_encoder.pe")}
    assert set(report.loaded) == set(state) - pe and set(report.positions) == pe
    assert report.kept_init and all(".speed_attn." in k or ".speed_norm." in k for k in report.kept_init)
    mm = new["backbone"]["up_blocks_1__motion_modules_1"]["temporal_transformer"]
    np.testing.assert_array_equal(
        mm["transformer_blocks_0"]["attention_blocks_1"]["to_q"]["kernel"],
        state["up_blocks.1.motion_modules.1.temporal_transformer.transformer_blocks.0.attention_blocks.1.to_q.weight"].T)
    old_flat, new_flat = traverse_util.flatten_dict(params), traverse_util.flatten_dict(new)
    changed = {p for p in old_flat if not np.array_equal(old_flat[p], new_flat[p])}
    assert changed and all("motion_modules" in p[1] and p[2] == "temporal_transformer" for p in changed)
    assert rel_err(forward(new), forward(params)) > 1e-3


def animatediff_reference_modules(config, seed=0) -> dict:
    """PyTorch AnimateDiff motion modules with random weights, one per name of the v2 layout for this config."""
    u = config.model.unet
    widths = {k.split(".temporal_transformer.")[0]: shape[0] for k, shape in
              animatediff_v2_layout(u.block_out_channels, u.layers_per_block).items()
              if k.endswith("temporal_transformer.proj_in.bias")}
    modules = {}
    for i, (name, c) in enumerate(sorted(widths.items())):
        modules[name] = torch_references.MotionModule(c, u.temporal_heads, u.norm_groups, u.temporal_layers).eval()
        randomize_torch_module(modules[name], seed=seed + i, scale=0.3)
    return modules


def _assert_motion_modules_compute_like(modules, params, config):
    """Every motion module of `params` (its AnimateDiff part) computes what the PyTorch module of its name does."""
    temporal = TemporalTransformer(0, model_config(config).unet)
    rng = np.random.default_rng(5)
    for name, module in modules.items():
        c = module.temporal_transformer.proj_in.in_features
        flax_name = name.replace(".motion_modules.", "__motion_modules_").replace("blocks.", "blocks_")
        tree = params["backbone"][flax_name]["temporal_transformer"]
        x_BFHWC = rng.standard_normal((2, config.model.clip_frames, 4, 4, c)).astype(np.float32)
        ours = x_BFHWC + temporal.clone(dim=c).apply({"params": tree}, x_BFHWC)
        with torch.no_grad():
            ref = module(torch.from_numpy(x_BFHWC.transpose(0, 4, 1, 2, 3))).numpy().transpose(0, 2, 3, 4, 1)
        assert rel_err(ours, ref) < 1e-5, name
        assert rel_err(ours, x_BFHWC) > 0.05, name


def test_imported_and_exported_motion_modules_compute_what_animatediff_computes(tiny_stage3, tmp_path):
    """Forward parity, not only keys: import from PyTorch modules, and load our export back into them."""
    config, params, _ = tiny_stage3
    modules = animatediff_reference_modules(config)
    state = {f"{name}.{k}": v.numpy() for name, m in modules.items() for k, v in m.state_dict().items()}
    assert set(state) == set(animatediff_v2_layout(config.model.unet.block_out_channels,
                                                   config.model.unet.layers_per_block))
    new, _ = import_animatediff(state, params)
    _assert_motion_modules_compute_like(modules, new, config)
    # Export the other way: our (different, random) motion modules into fresh PyTorch modules.
    export_weights(config, params, str(tmp_path))
    exported = load_file(tmp_path / FILES["temporal"])
    fresh = animatediff_reference_modules(config, seed=100)
    for name, module in fresh.items():
        own = {k[len(name) + 1:]: torch.from_numpy(v) for k, v in exported.items() if k.startswith(name + ".")}
        module.load_state_dict({k: v for k, v in own.items() if not k.endswith("pos_encoder.pe")}, strict=False)
        assert set(own) == set(module.state_dict())
    _assert_motion_modules_compute_like(fresh, params, config)


def test_exported_motion_modules_follow_animatediff_layout(tiny_stage3, exported):
    config, params, _ = tiny_stage3
    exported = load_file(exported[0] / FILES["temporal"])
    u = config.model.unet
    layout = animatediff_v2_layout(u.block_out_channels, u.layers_per_block, max_len=u.temporal_max_len)
    assert {k: v.shape for k, v in exported.items()} == layout
    # ... so the exported file is itself an AnimateDiff checkpoint that imports back unchanged.
    new, _ = import_animatediff(exported, params)
    for p, v in traverse_util.flatten_dict(params).items():
        np.testing.assert_array_equal(traverse_util.flatten_dict(new)[p], v)


def test_bad_animatediff_checkpoints_are_named(tiny_stage3):
    config, params, _ = tiny_stage3
    state = animatediff_v2_state(config)
    key = "down_blocks.1.motion_modules.0.temporal_transformer.proj_in.weight"
    with pytest.raises(CheckpointError, match=key.replace(".", r"\.") + r".*shape \(64, 63\)"):
        import_animatediff({**state, key: np.zeros((64, 63), np.float32)}, params)
    v1 = {k: v for k, v in state.items() if not k.startswith("mid_block.")}
    with pytest.raises(CheckpointError, match=r"mid_block.*v1 checkpoints"):
        import_animatediff(v1, params)
    pe_key = "mid_block.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.pos_encoder.pe"
    with pytest.raises(CheckpointError, match=pe_key.replace(".", r"\.") + ".*sinusoidal"):
        import_animatediff({**state, pe_key: state[pe_key] + 0.1}, params)
    extra = "down_blocks.2.motion_modules.0.temporal_transformer.proj_in.weight"
    with pytest.raises(CheckpointError, match=extra.replace(".", r"\.") + ".*no place"):
        import_animatediff({**state, extra: np.zeros((64, 64), np.float32)}, params)
