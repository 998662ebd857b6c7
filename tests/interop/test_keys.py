"""The key rule of emo_jax/interop/keys.py on leaves that need no layout change: an Embed table is nn.Embedding's
weight, out to torch and back."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import torch

from emo_jax.interop.keys import flax_to_torch_state, torch_state_to_flax


def test_an_embedding_table_is_torch_embeddings_weight_both_ways():
    module = nn.Embed(7, 5, name="table")
    params = module.init(jax.random.PRNGKey(0), jnp.zeros((2,), jnp.int32))["params"]
    state = flax_to_torch_state({"encoder": {"table": params}}, prefix="emotion.")
    assert set(state) == {"emotion.encoder.table.weight"}

    reference = torch.nn.Embedding(7, 5)
    reference.load_state_dict({"weight": torch.from_numpy(state["emotion.encoder.table.weight"].copy())})
    ids = np.array([0, 3, 6, 3])
    ours = np.asarray(module.apply({"params": params}, jnp.asarray(ids)))
    np.testing.assert_array_equal(ours, reference(torch.from_numpy(ids)).detach().numpy())

    back, missing, unused = torch_state_to_flax(state, {"encoder": {"table": {"embedding": np.zeros((7, 5))}}},
                                                "test", prefix="emotion.")
    assert not missing and not unused
    np.testing.assert_array_equal(back["encoder"]["table"]["embedding"], params["embedding"])
