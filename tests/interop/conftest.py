"""A tiny stage-3 EMO (every layer, zero-initialised ones included, set to random values), its VAE, its export."""
import numpy as np
import pytest
from flax import traverse_util

from emo_jax.build import abstract_params
from emo_jax.config import load_config
from emo_jax.interop.export import export_weights


def random_tree(abstract, seed: int, scale: float = 0.2) -> dict:
    """Random values for every leaf: norm scales near 1, everything else (zero-init outputs too) ~ N(0, scale)."""
    rng = np.random.default_rng(seed)
    flat = traverse_util.flatten_dict(abstract)
    out = {}
    for path in sorted(flat):
        base = 1.0 if path[-1] == "scale" else 0.0
        out[path] = (base + scale * rng.standard_normal(flat[path].shape)).astype(np.float32)
    return traverse_util.unflatten_dict(out)


@pytest.fixture(scope="session")
def tiny_stage3():
    """(config, EMO params, VAE params) for configs/tiny.py:stage3, all random."""
    config = load_config("configs/tiny.py:stage3")
    abstract = abstract_params(config)
    vae = random_tree(abstract.pop("vae"), seed=1)
    return config, random_tree(abstract, seed=0), vae


@pytest.fixture(scope="session")
def exported(tiny_stage3, tmp_path_factory):
    """(folder, manifest) of tiny_stage3 exported in float32 with its VAE, at step 123."""
    config, params, vae = tiny_stage3
    out = tmp_path_factory.mktemp("export")
    return out, export_weights(config, params, str(out), vae_params=vae, step=123)
