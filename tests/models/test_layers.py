"""Conv2D: flax's Conv parameters and results, with small outputs computed as a matmul over patches."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emo_jax.models import layers
from emo_jax.models.layers import Conv2D


@pytest.mark.parametrize("size,stride,padding", [
    (2, 1, ((1, 1), (1, 1))),  # the small UNets' deepest level: patches
    (1, 1, ((1, 1), (1, 1))),  # one pixel: patches
    (4, 2, ((1, 1), (1, 1))),  # SD's downsampler to 2x2: patches
    (4, 2, ((0, 1), (0, 1))),  # the VAE's asymmetric downsampler: patches
    (5, 1, ((1, 1), (1, 1))),  # 25 output pixels: XLA's convolution
])
def test_conv2d_equals_flax_conv_values_and_gradients(size, stride, padding):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(3, size, size, 5)), jnp.float32)
    ours = Conv2D(7, 3, stride, padding)
    params = nn.unbox(ours.init(jax.random.PRNGKey(0), x))
    params = jax.tree.map(lambda a: a + jnp.asarray(rng.normal(size=a.shape), a.dtype), params)  # bias non-zero
    theirs = nn.Conv(7, (3, 3), (stride, stride), padding)
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, theirs.init(jax.random.PRNGKey(0), x))

    def values_and_grads(module):
        return jax.value_and_grad(lambda p, x: (module.apply(p, x) ** 2).sum(), argnums=(0, 1))(params, x)

    for got, want in zip(jax.tree.leaves(values_and_grads(ours)), jax.tree.leaves(values_and_grads(theirs))):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    out_pixels = ((size + sum(padding[0]) - 3) // stride + 1) ** 2
    program = jax.make_jaxpr(lambda x: ours.apply(params, x))(x)
    uses_conv = "conv_general_dilated" in str(program)
    assert uses_conv == (out_pixels >= layers.PATCHES_BELOW_PIXELS)
