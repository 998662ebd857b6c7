"""EMO's speed encoding by the paper's formula, and the speed encoder against a NumPy computation of its layers."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from emo_jax.models.conditioning import SpeedEncoder, speed_buckets
from emo_jax.models.partitioning import init_params
from tests.helpers import rel_err

SPEEDS = np.array([[0.0, 0.4, 1.1, 2.5, 6.0], [3.0, 3.0, 0.2, 0.0, 1.0]], np.float32)
CENTRES, RADII, CONTEXT = (0.0, 1.0, 3.0), (0.5, 1.0, 2.0), 2


def paper_buckets(speed_BF: np.ndarray, centres, radii, context: int) -> np.ndarray:
    """s_i = tanh((w - c_i) / r_i * 3) for frames f - m .. f + m in order, the clip's edge speeds repeated."""
    b, f = speed_BF.shape
    out = np.zeros((b, f, 2 * context + 1, len(centres)))
    for i in range(b):
        for j in range(f):
            for k, offset in enumerate(range(-context, context + 1)):
                w = speed_BF[i, min(max(j + offset, 0), f - 1)]
                for d, (c, r) in enumerate(zip(centres, radii)):
                    out[i, j, k, d] = np.tanh((w - c) / r * 3.0)
    return out


def test_speed_buckets_follow_the_paper_formula_with_context_in_order():
    got = np.asarray(speed_buckets(jnp.asarray(SPEEDS), CENTRES, RADII, CONTEXT))
    assert got.shape == (2, 5, 2 * CONTEXT + 1, 3)
    np.testing.assert_allclose(got, paper_buckets(SPEEDS, CENTRES, RADII, CONTEXT), rtol=1e-6, atol=1e-6)
    # Known values: frame 2 of clip 0 (w = 1.1) in the middle of its window, bucket 1 (c = 1, r = 1).
    np.testing.assert_allclose(got[0, 2, CONTEXT, 1], np.tanh(0.3), rtol=1e-6)
    # Its window reads frames 0..4 in order: w = 0.0, 0.4, 1.1, 2.5, 6.0 in bucket 0 (c = 0, r = 0.5).
    np.testing.assert_allclose(got[0, 2, :, 0], np.tanh(np.array([0.0, 0.4, 1.1, 2.5, 6.0]) * 6.0), rtol=1e-6)


def test_speed_encoder_reads_every_context_frame_of_every_bucket():
    encoder = SpeedEncoder(CENTRES, RADII, CONTEXT, tokens=2, dim=8, hidden=16)
    params = nn.unbox(init_params(encoder, 0, {"speed_BF": jnp.asarray(SPEEDS)}))
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda p: p + 0.3 * rng.standard_normal(p.shape).astype(np.float32), params)
    got = np.asarray(encoder.apply({"params": params}, jnp.asarray(SPEEDS)))
    w1, w2 = params["proj1"]["kernel"], params["proj2"]["kernel"]
    assert w1.shape[0] == (2 * CONTEXT + 1) * len(CENTRES)
    enc = paper_buckets(SPEEDS, CENTRES, RADII, CONTEXT).reshape(SPEEDS.size, -1)
    h = enc @ w1 + params["proj1"]["bias"]
    h = (h / (1 + np.exp(-h))) @ w2 + params["proj2"]["bias"]
    h = h.reshape(SPEEDS.size, 2, 8)
    h = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-5)
    expected = h * params["norm"]["scale"] + params["norm"]["bias"]
    assert got.shape == (SPEEDS.size, 2, 8)  # [B * F, tokens, dim], batch-major
    assert rel_err(got, expected) < 1e-5
