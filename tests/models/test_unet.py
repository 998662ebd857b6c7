"""The UNet in sd mode against diffusers' UNet2DConditionModel, imported from a save_pretrained folder."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from emo_jax.errors import CheckpointError
from emo_jax.interop.sd_unet import import_unet_params, load_unet_state, unet_config_from_diffusers
from emo_jax.models.condition import UNetCondition
from emo_jax.models.unet import UNet
from tests.helpers import TINY_DIFFUSERS_UNET, randomize_torch_module, rel_err

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    torch.manual_seed(0)
    model = diffusers.UNet2DConditionModel(**TINY_DIFFUSERS_UNET).eval()
    randomize_torch_module(model)
    folder = tmp_path_factory.mktemp("sd") / "unet"
    model.save_pretrained(folder)
    return model, str(folder.parent)


def _import(folder):
    cfg = unet_config_from_diffusers(folder)
    model = UNet(cfg)
    x = jnp.zeros((1, 16, 16, 4))
    template = nn.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0), x, jnp.zeros((1,)),
                                       UNetCondition(text=jnp.zeros((1, 3, 16))))["params"])
    template = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), template)
    state, path = load_unet_state(folder)
    params, kept = import_unet_params(template, state, path)
    return model, params, kept


@pytest.mark.parametrize("safe", [True, False])
def test_sd_unet_matches_diffusers(tiny_sd, tmp_path, safe):
    torch_model, folder = tiny_sd
    if not safe:
        torch_model.save_pretrained(tmp_path / "unet", safe_serialization=False)
        folder = str(tmp_path)
    model, params, kept = _import(folder)
    assert kept == []
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 16, 16, 4)).astype(np.float32)
    text = rng.standard_normal((2, 5, 16)).astype(np.float32)
    t = np.array([3, 781])
    out = model.apply({"params": params}, jnp.asarray(x), jnp.asarray(t), UNetCondition(text=jnp.asarray(text)))
    with torch.no_grad():
        ref = torch_model(torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(t),
                          encoder_hidden_states=torch.from_numpy(text)).sample.permute(0, 2, 3, 1).numpy()
    assert np.abs(ref).max() > 0.1
    assert rel_err(out, ref) < 1e-4


def test_wrong_shape_names_file_and_key(tiny_sd, tmp_path):
    torch_model, _ = tiny_sd
    from safetensors.torch import save_file

    state = {k: v.clone().contiguous() for k, v in torch_model.state_dict().items()}
    state["conv_in.weight"] = torch.zeros(32, 4, 5, 5)
    (tmp_path / "unet").mkdir()
    save_file(state, tmp_path / "unet" / "diffusion_pytorch_model.safetensors")
    torch_model.save_config(tmp_path / "unet")
    with pytest.raises(CheckpointError, match=r"diffusion_pytorch_model.safetensors.*conv_in.weight"):
        _import(str(tmp_path))


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no diffusers UNet"):
        unet_config_from_diffusers(str(tmp_path / "nowhere"))


def test_latent_size_must_divide_by_downsampling(tiny_sd):
    model, params, _ = _import(tiny_sd[1])
    with pytest.raises(ValueError, match="must divide by the UNet's downsampling 2"):
        model.apply({"params": params}, jnp.zeros((1, 15, 16, 4)), jnp.zeros((1,)),
                    UNetCondition(text=jnp.zeros((1, 3, 16))))
