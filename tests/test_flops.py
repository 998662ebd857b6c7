"""The jaxpr FLOP counter against XLA's own count where XLA is right (no loops), and where XLA is not."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emo_jax.flops import count_flops
from emo_jax.models.attention import dot_product_attention


def xla_flops(fn, *args) -> float:
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    return (cost[0] if isinstance(cost, list) else cost)["flops"]


def jaxpr_flops(fn, *args):
    return count_flops(jax.jit(fn).trace(*args).jaxpr)


def conv_and_matmul(x, w, k):
    y = jax.lax.conv_general_dilated(x, k, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return (y.reshape(y.shape[0], -1) @ w).sum()


def test_matches_xla_on_a_program_without_loops():
    x, k, w = jnp.ones((2, 16, 16, 3)), jnp.ones((3, 3, 3, 8)), jnp.ones((8 * 8 * 8, 5))
    # SAME padding of a stride-2 3x3 conv over 16 pixels: of 8 x 3 taps per axis, the last reads padding.
    forward = 2 * (2 * 8 * 3) * 23 ** 2 + 2 * 2 * 5 * (8 * 8 * 8)
    assert jaxpr_flops(conv_and_matmul, x, w, k).flops == forward
    # With the gradient (transposed convolutions whose input dilation is mostly holes) XLA's count is the same
    # plus one FLOP per element of the final sum.
    grad = jax.value_and_grad(conv_and_matmul, argnums=(0, 1, 2))  # nothing dead: XLA would drop dead code
    counted, xla = jaxpr_flops(grad, x, w, k).flops, xla_flops(grad, x, w, k)
    assert counted > 2 * forward
    assert counted <= xla <= counted + 2 * 8 * 8 * 8


def test_scan_bodies_count_length_times_where_xla_counts_once():
    def ten_matmuls(x, w):
        return jax.lax.scan(lambda c, _: (c @ w, None), x, None, length=10)[0]

    x, w = jnp.ones((16, 64)), jnp.ones((64, 64))
    one = 2 * 16 * 64 * 64
    assert jaxpr_flops(ten_matmuls, x, w).flops == 10 * one
    assert xla_flops(ten_matmuls, x, w) < 2 * one  # why the counter exists


def test_remat_recomputes_the_forward_in_the_backward():
    def block(x, w):
        return jnp.tanh(x @ w) @ w

    def loss(f):
        return lambda x, w: f(x, w).sum()

    x, w = jnp.ones((8, 32)), jnp.ones((32, 32))
    # value_and_grad, as a train step: the forward's result is used, so the backward's recompute is extra work.
    plain = jaxpr_flops(jax.value_and_grad(loss(block), argnums=1), x, w).flops
    remat = jaxpr_flops(jax.value_and_grad(loss(jax.checkpoint(block)), argnums=1), x, w).flops
    # Only x @ w is recomputed: the block's last matmul is not needed by the backward pass.
    assert plain == 5 * 2 * 8 * 32 * 32 and remat - plain == 2 * 8 * 32 * 32


def test_chunked_attention_counts_like_plain_attention():
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.normal(size=(2, 300, 4, 16)), jnp.float32) for _ in range(3))
    plain = jaxpr_flops(lambda *a: dot_product_attention(*a, impl="xla"), q, k, v)
    chunked = jaxpr_flops(lambda *a: dot_product_attention(*a, impl="chunked", chunk=64), q, k, v)
    assert plain.flops == 2 * 2 * (2 * 4 * 300 * 300 * 16)
    # Five chunks of 64 queries: the 300 queries padded to 320.
    assert chunked.flops == pytest.approx(plain.flops * 320 / 300)
    assert plain.unbounded_loops == chunked.unbounded_loops == 0


def test_while_loops_are_flagged():
    def loop(x, w):
        return jax.lax.while_loop(lambda c: c[1] < 3, lambda c: (c[0] @ w, c[1] + 1), (x, 0))[0]

    count = jaxpr_flops(loop, jnp.ones((4, 4)), jnp.ones((4, 4)))
    assert count.unbounded_loops == 1 and count.flops == 2 * 4 * 4 * 4


def test_train_step_flops_do_not_depend_on_the_attention_implementation():
    """The tiny stage-2 train step traced with plain and with chunked attention: the chunked program's loops
    counted in full (XLA would count one chunk of each attention), plus the chunks' recompute in the backward
    pass (each chunk is rematerialised so that the backward keeps one chunk of scores): measured 2.5% more."""
    from emo_jax.config import load_config
    from emo_jax.plan import trace_train_step

    counts = {}
    for impl in ("xla", "chunked"):
        config = load_config("configs/tiny.py:stage2")
        config.mesh.shape.update({"data": 1, "fsdp": 1, "tensor": 1})
        config.train.batch_size = 1
        config.model.unet.attention_impl = impl
        config.model.unet.attention_chunk = 16  # below the tiny spatial length, so every spatial attention chunks
        counts[impl] = count_flops(trace_train_step(config, jax.devices()[:1])[0].jaxpr)
    assert counts["xla"].flops > 1e8 and counts["xla"].unbounded_loops == counts["chunked"].unbounded_loops == 0
    assert counts["xla"].flops < counts["chunked"].flops < 1.05 * counts["xla"].flops


def test_dead_code_is_not_counted():
    """A frozen layer's weight gradient, computed by grad and dropped (as the masked optimizer does), costs
    nothing once XLA removes it; the count removes it too."""
    def step(x, frozen, trained):
        grads = jax.grad(lambda f, t: (jnp.tanh(x @ f) @ t).sum(), argnums=(0, 1))(frozen, trained)
        return grads[1]

    args = jnp.ones((4, 8)), jnp.ones((8, 8)), jnp.ones((8, 8))
    one = 2 * 4 * 8 * 8
    assert jaxpr_flops(step, *args).flops == 2 * one == xla_flops(step, *args)  # x @ frozen and the trained grad


def test_model_flops_leave_out_the_remat_recompute_and_see_through_fused_attention():
    """MFU's numerator (emo-compile and benchmarks/gpu.py): the step of model_flops_config, remat off and XLA
    attention. The tiny stage-1 step run with every block rematerialised and chunked attention does more FLOPs
    than its model count."""
    from emo_jax.config import load_config
    from emo_jax.plan import model_flops_config, trace_train_step, utilization, utilization_fields
    from emo_jax.topology import CHIPS

    config = load_config("configs/tiny.py:stage1")
    config.mesh.shape.update({"data": 1, "fsdp": 1, "tensor": 1})
    config.train.batch_size = 1
    u = config.model.unet
    u.remat = u.remat_resnets = True
    u.attention_impl, u.attention_chunk = "chunked", 16
    run = count_flops(trace_train_step(config, jax.devices()[:1])[0].jaxpr).flops
    model = count_flops(trace_train_step(model_flops_config(config), jax.devices()[:1])[0].jaxpr).flops
    assert run > 1.2 * model > 0
    assert (u.remat, u.attention_impl) == (True, "chunked")  # the caller's config is left as it was
    assert utilization(2e12, 0.5, 1e13) == pytest.approx(0.4) and utilization(None, 0.5, 1e13) is None
    chip = CHIPS["v5p"]
    fields = utilization_fields(model / 2, run / 2, 0.5, chip)
    assert fields == pytest.approx({"model_flops_per_step": model / 2, "estimated_mfu": model / chip.peak_bf16_flops,
                                    "estimated_hfu": run / chip.peak_bf16_flops})


def test_splash_kernels_flops_join_the_count_and_the_estimate():
    """A step with splash attention hides the attention's matmuls in Pallas kernels, from XLA's cost analysis and
    from the jaxpr count alike; emo-compile adds the difference to the step of the same config with XLA
    attention (remat kept), so the count matches that step's and the estimate pays for the kernels at peak."""
    from emo_jax.config import load_config
    from emo_jax.plan import add_kernel_flops, trace_train_step, visible_kernels_config
    from emo_jax.topology import CHIPS

    config = load_config("configs/tiny.py:stage1")
    config.mesh.shape.update({"data": 1, "fsdp": 1, "tensor": 1})
    config.train.batch_size = 1
    config.model.unet.update(attention_impl="splash", attention_min_keys=0, remat=True)
    hidden = count_flops(trace_train_step(config, jax.devices()[:1])[0].jaxpr)
    visible = count_flops(trace_train_step(visible_kernels_config(config), jax.devices()[:1])[0].jaxpr)
    assert hidden.opaque_kernels > 0 and visible.opaque_kernels == 0
    assert config.model.unet.attention_impl == "splash"  # the caller's config is left as it was
    kernel = visible.flops - hidden.flops
    assert kernel > 0.05 * visible.flops  # the attention is a real share of the work

    chip = CHIPS["v5p"]
    counts = {"flops_per_step": hidden.flops, "xla_flops_per_step": hidden.flops, "jaxpr_flops_per_step": hidden.flops,
              "flops_floor_seconds": hidden.flops / chip.peak_bf16_flops}
    added, seconds, source = add_kernel_flops(counts, 0.5, "xla", kernel, chip)
    assert added["flops_per_step"] == pytest.approx(visible.flops) and added["kernel_flops_per_step"] == kernel
    assert seconds == pytest.approx(0.5 + kernel / chip.peak_bf16_flops) and "Pallas" in source
    floor = visible.flops / chip.peak_bf16_flops
    assert add_kernel_flops(counts, floor / 2, "roofline of xla costs", kernel, chip)[1] == pytest.approx(floor)
    assert add_kernel_flops(counts, 0.5, "xla", 0.0, chip) == (counts, 0.5, "xla")


def test_platform_dependent_attention_counts_the_accelerator_branch():
    """Plain XLA attention runs a blocked CPU form on a CPU (its gradient recomputes the scores: one matmul more)
    and all scores at once elsewhere; the count is of the accelerators' program, whatever host traces it, also
    under remat. A cond that is not a platform choice still counts its costlier branch."""
    from emo_jax.models.attention import _dense_attention, _xla_attention

    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.normal(size=(2, 256, 4, 16)), jnp.float32) for _ in range(3))
    lengths = jnp.asarray([256, 100], jnp.int32)

    def grad_of(fn):
        return jax.value_and_grad(lambda q, k, v: (fn(q, k, v, lengths) ** 2).sum(), argnums=(0, 1, 2))

    dense = jaxpr_flops(grad_of(_dense_attention), q, k, v).flops
    assert dense == 6 * 2 * (2 * 4 * 256 * 256 * 16)  # two matmuls forward, four backward
    assert jaxpr_flops(grad_of(_xla_attention), q, k, v).flops == dense
    rematted = jaxpr_flops(grad_of(jax.checkpoint(_dense_attention)), q, k, v).flops
    assert rematted > dense and jaxpr_flops(grad_of(jax.checkpoint(_xla_attention)), q, k, v).flops == rematted

    def either(x, w):
        return jax.lax.cond(x.sum() > 0, lambda: x @ w @ w, lambda: x @ w)

    assert jaxpr_flops(either, jnp.ones((4, 4)), jnp.ones((4, 4))).flops == 2 * 2 * 4 * 4 * 4
