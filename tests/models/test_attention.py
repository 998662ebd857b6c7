"""Chunked attention: the same values and gradients as plain attention, with score memory bounded by one chunk
in the backward pass as well as the forward."""
import jax
import jax.numpy as jnp
import numpy as np

from emo_jax.models import attention
from emo_jax.models.attention import dot_product_attention


def _loss(impl):
    return lambda q, k, v: (dot_product_attention(q, k, v, impl=impl, chunk=256) ** 2).sum()


def test_chunked_gradients_equal_plain_ones():
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.normal(size=(1, 600, 2, 16)), jnp.float32) for _ in range(3))
    plain = jax.grad(_loss("xla"), argnums=(0, 1, 2))(q, k, v)
    chunked = jax.grad(_loss("chunked"), argnums=(0, 1, 2))(q, k, v)
    for a, b in zip(plain, chunked):
        np.testing.assert_allclose(b, a, rtol=2e-4, atol=2e-5)


def test_chunked_backward_keeps_one_chunk_of_scores():
    # 2048 queries x 2048 keys x 2 heads in float32: 33.5 MB of scores; a 256-query chunk is 4.2 MB of them.
    spec = jax.ShapeDtypeStruct((1, 2048, 2, 16), jnp.float32)

    def temporaries(impl):
        grad = jax.jit(jax.grad(_loss(impl), argnums=(0, 1, 2)))
        return grad.lower(spec, spec, spec).compile().memory_analysis().temp_size_in_bytes

    scores = 2048 * 2048 * 2 * 4
    dense = jax.jit(jax.grad(lambda q, k, v: (attention._dense_attention(q, k, v) ** 2).sum(), argnums=(0, 1, 2)))
    assert dense.lower(spec, spec, spec).compile().memory_analysis().temp_size_in_bytes > 2 * scores
    # Measured 17.6 MB (80.6 MB when autodiff kept every chunk's probabilities).
    assert temporaries("chunked") < scores


def test_every_implementation_drops_the_keys_past_each_examples_length():
    """The reference-drop mask as key lengths: example 0 keeps all 40 keys, example 1 only its own first 24,
    which must equal attention over those 24 keys alone; jax.nn.dot_product_attention (the cuDNN path's API,
    run here by XLA) and chunked attention agree, values and gradients."""
    rng = np.random.default_rng(1)
    q = jnp.asarray(rng.normal(size=(2, 300, 2, 8)), jnp.float32)
    k, v = (jnp.asarray(rng.normal(size=(2, 40, 2, 8)), jnp.float32) for _ in range(2))
    lengths = jnp.asarray([40, 24], jnp.int32)
    plain = dot_product_attention(q, k, v, lengths, impl="xla")
    np.testing.assert_allclose(plain[1], dot_product_attention(q[1:], k[1:, :24], v[1:, :24])[0], rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(plain[0], dot_product_attention(q[:1], k[:1], v[:1])[0], rtol=1e-5, atol=1e-6)
    assert np.abs(np.asarray(plain[1] - dot_product_attention(q[1:], k[1:], v[1:])[0])).max() > 1e-2

    def loss(impl):
        return lambda q, k, v: (dot_product_attention(q, k, v, lengths, impl=impl, chunk=128) ** 2).sum()

    want = jax.value_and_grad(loss("xla"), argnums=(0, 1, 2))(q, k, v)
    for impl in ("jax", "chunked"):
        got = jax.value_and_grad(loss(impl), argnums=(0, 1, 2))(q, k, v)
        for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
            np.testing.assert_allclose(b, a, rtol=2e-4, atol=2e-5)


def test_short_key_sequences_run_as_plain_xla_whatever_the_implementation():
    """min_keys routes short attentions (temporal: 16 keys) to XLA: here cuDNN, which this CPU cannot run, is
    asked for; 8 keys run (as XLA, equal to it), 32 keys reach cuDNN and fail."""
    from emo_jax.models.attention import Attention

    x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 8, 16)), jnp.float32)
    fused = Attention(16, 2, impl="cudnn", min_keys=16)
    params = fused.init(jax.random.PRNGKey(0), x)
    plain = Attention(16, 2, impl="xla").apply(params, x)
    np.testing.assert_array_equal(fused.apply(params, x), plain)
    long_x = jnp.concatenate([x] * 4, axis=1)
    try:
        fused.apply(params, long_x)
    except Exception as e:  # RuntimeError/ValueError, by jax version: no cuDNN here
        assert "cudnn" in str(e).lower() or "cuDNN" in str(e)
    else:
        assert jax.devices()[0].platform == "gpu", "32 keys should have reached the cuDNN kernel"


def _values_and_grads(fn, q, k, v, lengths):
    return jax.jit(jax.value_and_grad(lambda q, k, v: (fn(q, k, v, lengths) ** 2).sum(), argnums=(0, 1, 2)))(q, k, v)


def _rel(a, b):
    return float(jnp.abs(a - b).max() / jnp.abs(b).max())


def test_cpu_attention_equals_dense_attention_values_and_gradients(monkeypatch):
    """The CPU layout (heads folded into the batch, normalised after the value product, a gradient recomputed
    from the saved log-sum-exp, blocks of heads or of queries under lax.map, both forms of the key and value
    gradients' product) against all scores at once, with and without the reference-drop key lengths: values and
    q/k/v gradients within float32 rounding. The block size is shrunk so every path runs here, with a last block
    that needs padding."""
    monkeypatch.setattr(attention, "CPU_SCORE_BLOCK_BYTES", 3 * 32 * 64 * 4)  # 3 heads' scores per block
    monkeypatch.setattr(attention, "_CPU_BLOCK_MIN_SCORES", 1024)
    rng = np.random.default_rng(3)
    cases = {"whole (short)": (2, 8, 12, 3, 4), "blocks of heads": (2, 32, 64, 5, 8),
             "blocks of queries": (2, 160, 96, 2, 8), "narrow heads, many keys": (2, 40, 128, 2, 8),
             "wide heads, many keys": (2, 40, 128, 2, 16)}
    for name, (b, length, keys, heads, dim) in cases.items():
        q = jnp.asarray(rng.normal(size=(b, length, heads, dim)), jnp.float32)
        k, v = (jnp.asarray(rng.normal(size=(b, keys, heads, dim)), jnp.float32) for _ in range(2))
        for lengths in (None, jnp.asarray([keys, keys // 2], jnp.int32)):
            want = _values_and_grads(attention._dense_attention, q, k, v, lengths)
            got = _values_and_grads(attention._cpu_attention, q, k, v, lengths)
            for a, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
                assert _rel(a, w) < 1e-5, (name, lengths is not None)
            if lengths is not None:  # the dropped keys get no gradient at all
                assert float(jnp.abs(got[1][1][1, keys // 2:]).max()) == 0.0


def test_xla_attention_on_a_cpu_is_the_cpu_layout_and_elsewhere_all_scores_at_once():
    """impl "xla" picks its form when the program is lowered: on this CPU the blocked one (its lax.map is a while
    loop in the compiled program), for a TPU the dense one (no loop), as emo-compile lowers it."""
    spec = jax.ShapeDtypeStruct((2, 256, 8, 8), jnp.float32)
    keys = jax.ShapeDtypeStruct((2, 512, 8, 8), jnp.float32)
    cpu = jax.jit(attention._xla_attention).lower(spec, keys, keys).compile().as_text()
    assert "while" in cpu
    tpu = jax.jit(attention._xla_attention).trace(spec, keys, keys).lower(lowering_platforms=("tpu",)).as_text()
    assert "while" not in tpu and "stablehlo.exponential" in tpu
