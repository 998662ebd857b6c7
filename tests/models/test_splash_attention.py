"""Splash attention (jax's Pallas TPU kernel) run on this CPU in Pallas interpret mode: the values and gradients
of plain XLA attention at SD1.5's head dims, with and without the reference-drop mask, on lengths no block
divides; refused on a GPU; compiled to the Mosaic kernel for a TPU described without one."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emo_jax.models import attention
from emo_jax.models.attention import _splash_attention, _xla_attention, dot_product_attention


def _rel_err(got, want) -> float:
    return float(jnp.abs(got - want).max() / jnp.abs(want).max())


def _values_and_grads(fn, q, k, v, lengths, cotangent):
    out, vjp = jax.vjp(lambda q, k, v: fn(q, k, v, lengths), q, k, v)
    return (out, *vjp(cotangent))


def _inputs(rng, batch, queries, keys, heads, head_dim):
    q = jnp.asarray(rng.normal(size=(batch, queries, heads, head_dim)), jnp.float32)
    k, v = (jnp.asarray(rng.normal(size=(batch, keys, heads, head_dim)), jnp.float32) for _ in range(2))
    cotangent = jnp.asarray(rng.normal(size=q.shape), jnp.float32)
    return q, k, v, cotangent


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("head_dim", [40, 80, 160])
def test_splash_equals_xla_values_and_gradients(head_dim, masked):
    """128 queries x 256 keys in 128-blocks (two key blocks: the kernel's running softmax is exercised);
    masked, example 0 keeps all 256 keys and example 1 its first 100 (a key block cut inside)."""
    q, k, v, cotangent = _inputs(np.random.default_rng(head_dim), 2, 128, 256, 2, head_dim)
    lengths = jnp.asarray([256, 100], jnp.int32) if masked else None
    want = _values_and_grads(_xla_attention, q, k, v, lengths, cotangent)
    got = _values_and_grads(lambda *a: _splash_attention(*a, block=128), q, k, v, lengths, cotangent)
    for name, a, b in zip(("out", "dq", "dk", "dv"), want, got):
        assert _rel_err(b, a) < 1e-5, name
    if masked:  # the mask matters: the cut example differs from attention over all its keys
        assert _rel_err(want[0][1], _xla_attention(q, k, v)[1]) > 1e-2
        assert float(jnp.abs(got[2][1, 100:]).max()) == 0.0  # no gradient reaches the dropped keys


def test_splash_pads_lengths_no_block_divides():
    """72 queries x 150 keys through dot_product_attention: padded to 128 x 256 inside, padded keys masked by
    the same segment ids as the dropped ones, padded queries cut off."""
    q, k, v, cotangent = _inputs(np.random.default_rng(7), 2, 72, 150, 2, 40)
    assert attention._splash_blocks(72, 512) == (128, 128) and attention._splash_blocks(150, 512) == (256, 256)
    assert attention._splash_blocks(8192, 512) == (8192, 512) and attention._splash_blocks(640, 512) == (640, 128)
    for lengths in (None, jnp.asarray([150, 60], jnp.int32)):
        want = _values_and_grads(_xla_attention, q, k, v, lengths, cotangent)
        got = _values_and_grads(lambda *a: dot_product_attention(*a, impl="splash"), q, k, v, lengths, cotangent)
        assert got[0].shape == q.shape
        for name, a, b in zip(("out", "dq", "dk", "dv"), want, got):
            assert _rel_err(b, a) < 1e-5, name


def test_tpu_kernels_are_refused_on_a_gpu(monkeypatch):
    q = jnp.zeros((1, 128, 2, 40), jnp.float32)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    for impl in ("splash", "pallas_tpu"):
        with pytest.raises(ValueError, match="model.unet.attention_impl") as e:
            dot_product_attention(q, q, q, impl=impl)
        choices = str(e.value).split("one of")[1]
        assert f"{impl!r} cannot run on gpu" in str(e.value) and "'cudnn'" in choices and "'splash'" not in choices


def test_splash_compiles_to_the_mosaic_kernel_for_a_tpu():
    """Lowered for a TPU v5e (described by libtpu on this CPU host, as emo-compile does) the kernel is chosen
    over interpret mode: forward, dq and dk/dv are three Mosaic custom calls. Head dim 40 and 300 x 77 tokens
    (padded to 384 x 128) compile as they are. At the default matmul precision, as the trainer runs: under
    this suite's "highest", Mosaic refuses the bf16 kernel ("Bad lhs type"; float32 compiles)."""
    pytest.importorskip("libtpu")
    from emo_jax.topology import topology_devices

    _, devices = topology_devices("v5e:2x2")
    sharding = jax.sharding.SingleDeviceSharding(devices[0])
    spec = lambda n: jax.ShapeDtypeStruct((2, n, 8, 40), jnp.bfloat16, sharding=sharding)
    lengths = jax.ShapeDtypeStruct((2,), jnp.int32, sharding=sharding)
    loss = lambda q, k, v, n: dot_product_attention(q, k, v, n, impl="splash").astype(jnp.float32).sum()
    step = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
    with jax.default_matmul_precision("default"):
        hlo = step.lower(spec(300), spec(77), spec(77), lengths).compile().as_text()
    assert hlo.count('custom_call_target="tpu_custom_call"') == 3
