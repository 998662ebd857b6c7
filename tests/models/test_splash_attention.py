"""Splash attention (jax's Pallas TPU kernel) run on this CPU in Pallas interpret mode: the values and gradients
of plain XLA attention at SD1.5's head dims, with and without the reference-drop mask, on lengths no block
divides; under a jit over the 8 simulated devices with a mesh set, in a shard_map over the batch (and head) axes;
refused on a GPU; compiled to the Mosaic kernel for a TPU described without one, on one chip and on four."""
import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from emo_jax.config import model_config
from emo_jax.models import attention
from emo_jax.models.attention import _splash_attention, _xla_attention, dot_product_attention
from emo_jax.models.emo import EMO
from emo_jax.models.partitioning import init_params
from emo_jax.sharding import make_mesh, param_shardings
from tests.helpers import perturb_zero_leaves, rel_err
from tests.models.test_emo import _model, _random_inputs


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


def _shard_map_specs(fn, *args, operands: int = 0) -> list:
    """The in_specs of every shard_map in fn's jaxpr; with `operands`, only the last that many of each (the
    attention's operands: the kernel's constants come first, replicated)."""
    specs = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "shard_map":
                specs.append(tuple(eqn.params["in_specs"])[-operands:])
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return specs


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("shape", [{"data": 4, "fsdp": 2, "tensor": 1}, {"data": 2, "fsdp": 2, "tensor": 2}])
def test_splash_under_a_mesh_equals_xla(shape, masked):
    """8 examples x 2 heads x 128 queries x 256 keys in a jit over the 8 devices, inputs split over the batch axes:
    one shard_map runs the kernel on each device's examples (and heads, on the tensor axis); values and q/k/v
    gradients are XLA attention's. Masked, every other example keeps its first 100 keys."""
    mesh = make_mesh(shape)
    q, k, v, cotangent = _inputs(np.random.default_rng(3), 8, 128, 256, 2, 40)
    lengths = jnp.asarray([256, 100] * 4, jnp.int32) if masked else None
    want = _values_and_grads(_xla_attention, q, k, v, lengths, cotangent)
    splash = lambda *a: _splash_attention(*a, block=128)
    batch_spec = PartitionSpec(("data", "fsdp"))
    q, k, v, cotangent = jax.device_put((q, k, v, cotangent), NamedSharding(mesh, batch_spec))
    with jax.set_mesh(mesh):
        got = jax.jit(lambda *a: _values_and_grads(splash, *a))(q, k, v, lengths, cotangent)
        specs = _shard_map_specs(splash, q, k, v, lengths, operands=4 if masked else 3)
    for name, a, b in zip(("out", "dq", "dk", "dv"), want, got):
        assert _rel_err(b, a) < 1e-5, name
    heads = "tensor" if shape["tensor"] > 1 else None
    assert specs == [(PartitionSpec(("data", "fsdp"), None, heads, None),) * 3 + ((batch_spec,) if masked else ())]


def test_splash_under_a_mesh_splits_the_batch_over_the_axes_that_divide_it():
    """A batch of 2 on data 2 x fsdp 2 x tensor 2 is split over data only (and repeated over fsdp), and 3 heads
    stay whole (repeated over tensor). Still XLA attention's values. No mesh set: no shard_map."""
    q, k, v, _ = _inputs(np.random.default_rng(4), 2, 128, 128, 3, 40)
    splash = lambda q, k, v: _splash_attention(q, k, v, block=128)
    with jax.set_mesh(make_mesh({"data": 2, "fsdp": 2, "tensor": 2})):
        got = jax.jit(splash)(q, k, v)
        specs = _shard_map_specs(splash, q, k, v, operands=3)
    assert specs == [(PartitionSpec("data", None, None, None),) * 3]
    assert _rel_err(got, _xla_attention(q, k, v)) < 1e-5
    assert _shard_map_specs(splash, q, k, v, operands=3) == []


def test_splash_compiles_for_four_tpu_chips_under_a_mesh():
    """Under a jit over a v5e 2x2 slice (described by libtpu) with the mesh set, the batch split over data 2 x
    fsdp 2: each chip compiles the Mosaic kernels (forward, dq, dk/dv) for its own examples. Without the mesh set
    jax refuses to partition them, the error the shard_map avoids."""
    pytest.importorskip("libtpu")
    from emo_jax.topology import topology_devices

    _, devices = topology_devices("v5e:2x2")
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 1}, devices)
    sharding = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
    spec = lambda n: jax.ShapeDtypeStruct((8, n, 8, 40), jnp.bfloat16, sharding=sharding)
    lengths = jax.ShapeDtypeStruct((8,), jnp.int32, sharding=sharding)
    loss = lambda q, k, v, n: dot_product_attention(q, k, v, n, impl="splash").astype(jnp.float32).sum()
    step = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
    with jax.default_matmul_precision("default"):
        with jax.set_mesh(mesh):
            compiled = step.lower(spec(300), spec(77), spec(77), lengths).compile()
        with pytest.raises(Exception, match="Mosaic kernels cannot be automatically partitioned"):
            step.lower(spec(300), spec(77), spec(77), lengths).compile()
    assert compiled.as_text().count('custom_call_target="tpu_custom_call"') == 3
    assert compiled.input_shardings[0][0].spec == PartitionSpec(("data", "fsdp"))


def test_tiny_emo_sharded_with_splash_equals_single_device():
    """The tiny stage-2 EMO on data 2 x fsdp 2 x tensor 2, parameters sharded, splash in the 256 x 512 self+ref
    attentions (attention_min_keys 512 keeps the rest on XLA: interpret mode is slow), one of two references
    dropped: XLA attention's output on one device. Its 8 frames split over data x fsdp and its 4 heads over
    tensor."""
    config, model = _model("stage2", attention_min_keys=512)
    inputs = dict(_random_inputs(config, model), ref_keep=jnp.asarray([True, False]))
    boxed = init_params(model, 0, inputs)
    params = perturb_zero_leaves(nn.unbox(boxed))
    want = jax.jit(model.apply)({"params": params}, **inputs)
    config.model.unet.attention_impl = "splash"
    splash_model = EMO(model_config(config))
    config.mesh.shape.update({"data": 2, "fsdp": 2, "tensor": 2})
    mesh = make_mesh(config.mesh.shape)
    sharded = jax.device_put(params, param_shardings(boxed, mesh, config.mesh.rules))
    with jax.set_mesh(mesh), nn.logical_axis_rules(config.mesh.rules):
        got = jax.jit(splash_model.apply)({"params": sharded}, **inputs)
        specs = _shard_map_specs(lambda p, i: splash_model.apply({"params": p}, **i), sharded, inputs)
    assert rel_err(got, want) < 1e-5
    operand_specs = {spec for call in specs for spec in call[-4:]}
    assert len(specs) >= 2 and operand_specs == {PartitionSpec(("data", "fsdp"), None, "tensor", None),
                                                 PartitionSpec(("data", "fsdp"))}  # q, k, v; key lengths


def test_the_sampler_runs_its_programs_on_the_mesh_its_weights_are_sharded_over(monkeypatch):
    """The wiring, with nothing compiled: weights sharded over 8 devices (as emo-train's periodic evaluation
    leaves them) make the sampler call its reference and chunk programs with that mesh set; host weights on one
    device call them with no mesh. The slow test below runs the real programs with splash."""
    from jax.sharding import get_abstract_mesh

    from emo_jax.config import load_config
    from emo_jax.sample import sampler as sampler_module

    config = load_config("configs/tiny.py:stage2")
    config.sample.update(steps=2, clips_per_chunk=1)
    m = config.model
    seen = []

    def recorder(name, result):
        return lambda *args: seen.append((name, get_abstract_mesh())) or result(*args)

    monkeypatch.setattr(sampler_module, "reference_program", lambda cfg: recorder("reference", lambda p, x: x))

    def video(params):
        sampler = sampler_module.Sampler(config, params)
        sampler.program = recorder("chunk", lambda p, ref, carry, audio, *rest: (
            carry, jnp.zeros(audio.shape[:2] + sampler.latent_shape)))
        ref = sampler.reference(np.zeros((1, m.latent_size, m.latent_size, 4), np.float32))
        features = np.zeros((m.clip_frames, 2 * m.audio.context + 1, m.audio.layers, m.audio.feature_dim))
        sampler.sample(ref, features, np.ones((sampler.mask_size,) * 2, np.float32), 0, 2.0, 2.0)
        return sampler

    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    weights = {"w": jax.device_put(np.zeros((8, 4), np.float32), NamedSharding(mesh, PartitionSpec("fsdp")))}
    assert video(weights).mesh == mesh
    assert [name for name, _ in seen] == ["reference", "chunk"]
    assert all(abstract == mesh.abstract_mesh for _, abstract in seen)
    seen.clear()
    assert video({"w": np.zeros((8, 4), np.float32)}).mesh is None
    assert len(seen) == 2 and all(abstract.empty for _, abstract in seen)


@pytest.mark.slow
def test_the_sampler_runs_splash_on_the_mesh_its_weights_are_sharded_over(monkeypatch):
    """emo-train's periodic evaluation samples with the weights sharded over the training mesh, outside the train
    step's mesh context; the sampler sets their mesh itself, so splash goes under a shard_map (on a TPU slice a
    bare Mosaic call in a program over several chips does not compile: the slow test below) and the video is the
    one XLA attention gives on one device."""
    from emo_jax.sample.sampler import Sampler, weights_mesh

    config, model = _model("stage2", attention_min_keys=512)
    config.sample.update(steps=2, clips_per_chunk=1)
    m = config.model
    boxed = init_params(model, 0, _random_inputs(config, model))
    params = perturb_zero_leaves(nn.unbox(boxed))
    rng = np.random.default_rng(0)
    ref_latent = rng.standard_normal((1, m.latent_size, m.latent_size, 4)).astype(np.float32)
    features = rng.standard_normal((m.clip_frames, 2 * m.audio.context + 1, m.audio.layers,
                                    m.audio.feature_dim)).astype(np.float32)

    def video(sampler):
        mask = np.ones((sampler.mask_size,) * 2, np.float32)
        return sampler.sample(sampler.reference(ref_latent), features, mask, 0, 2.0, 2.0)

    want = video(Sampler(config, params))
    config.model.unet.attention_impl = "splash"
    config.mesh.shape.update({"data": 2, "fsdp": 2, "tensor": 2})
    mesh = make_mesh(config.mesh.shape)
    sharded = jax.device_put(params, param_shardings(boxed, mesh, config.mesh.rules))
    calls = []
    real = jax.shard_map
    monkeypatch.setattr(jax, "shard_map", lambda *a, **k: calls.append(k["mesh"]) or real(*a, **k))
    sampler = Sampler(config, sharded)
    assert weights_mesh(sharded) == sampler.mesh == mesh
    got = video(sampler)
    assert calls and all(c.shape == mesh.shape for c in calls)
    assert rel_err(got, want) < 1e-4


@pytest.mark.slow
def test_the_sampler_with_sharded_weights_and_splash_compiles_for_four_tpu_chips():
    """The periodic evaluation's case on a TPU v5e 2x2 described without one: the chunk program over weights
    sharded on data 2 x fsdp 2 compiles with the mesh the sampler sets, and does not without it (about a minute)."""
    from emo_jax.config import load_config
    from emo_jax.plan import sampler_chunk_arguments
    from emo_jax.sample.sampler import Sampler, chunk_program
    from emo_jax.topology import topology_devices
    from emo_jax.train.state import StateFactory

    config = load_config("configs/tiny.py:stage2")
    config.model.unet.attention_impl = "splash"
    config.mesh.shape.update(dict(data=2, fsdp=2, tensor=1))
    _, devices = topology_devices("v5e:2x2")
    mesh = make_mesh(config.mesh.shape, devices)
    params = StateFactory(config, mesh).abstract_with_shardings().params
    sampler = Sampler(config, params)
    assert sampler.mesh == mesh
    args = sampler_chunk_arguments(config, params, NamedSharding(mesh, PartitionSpec()))
    latent = sampler.latent_shape
    program = chunk_program(sampler.cfg, sampler.spec, latent)
    with pytest.raises(Exception, match="Mosaic kernels cannot be automatically partitioned"):
        program.lower(*args).compile()
    with sampler.on_mesh():
        lowered = program.lower(*args)
    assert 'custom_call_target="tpu_custom_call"' in lowered.compile().as_text()
