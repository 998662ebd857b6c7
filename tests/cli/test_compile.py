"""emo-compile on a CPU host: the tiny train step compiled for a real TPU topology (libtpu describes it)."""
import json

import pytest

from emo_jax.cli.compile import main
from emo_jax.topology import parse_topology

pytest.importorskip("libtpu", reason="ahead-of-time TPU compiles need libtpu (the test extra installs it)")


def test_slice_names_map_to_cloud_tpu_grids():
    assert parse_topology("v5p-128")[1:] == ("v5p:4x4x4", 64)  # v5p names count TensorCores, 2 per chip
    assert parse_topology("v5litepod-64")[1:] == ("v5e:8x8", 64)
    assert parse_topology("v6e-64")[1:] == ("v6e:8x8", 64)
    assert parse_topology("v4-32")[1:] == ("v4:2x2x4", 16)
    with pytest.raises(ValueError, match="unknown TPU generation"):
        parse_topology("v9-8")


@pytest.mark.slow
def test_tiny_train_step_and_sampler_compile_for_v5e_2x2(tmp_path, capsys):
    out = tmp_path / "plan.json"
    code = main(["--config", "configs/tiny.py:stage2", "--topology", "v5e:2x2", "--global-batch", "4", "--sample",
                 "--config.mesh.shape.data", "2", "--config.mesh.shape.fsdp", "2", "--json", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["chips"] == 4 and report["chip"] == "v5e" and report["mesh"] == {"data": 2, "fsdp": 2, "tensor": 1}
    assert report["fits"] is True
    assert 0 < report["hbm_per_chip_bytes"] < report["hbm_capacity_bytes"] == 16 * 2**30
    # The float32 state (params, Adam moments, EMA of 2.5M trainable parameters) is 40 MB, 21 MB per chip once
    # split over fsdp; TPU layouts pad the tiny config's small arrays to (8, 128) tiles (38.8 MB measured), so
    # the bound is loose: more than a quarter of the state, less than twice it.
    assert 10e6 < report["arguments_bytes"] < 80e6
    assert report["flops_per_step"] > 1e8
    # No loops in the train step: XLA's per-chip count is the jaxpr's matmuls over 4 chips plus elementwise work.
    assert report["flops_per_step"] == report["xla_flops_per_step"]
    assert report["jaxpr_flops_per_step"] < report["xla_flops_per_step"] < 1.5 * report["jaxpr_flops_per_step"]
    assert report["estimated_step_seconds"] >= report["flops_floor_seconds"] > 0
    assert report["estimate_source"] in ("xla", "roofline of xla costs")
    # Model FLOPs (remat off, XLA attention): the tiny config runs without remat, so they are the jaxpr's count.
    assert report["model_flops_per_step"] == report["jaxpr_flops_per_step"]
    assert 0 < report["estimated_mfu"] <= report["estimated_hfu"]
    sample = report["sample"]
    assert sample["fits"] and sample["frames_per_call"] == 8 and sample["estimated_call_seconds"] > 0
    assert "fits" in capsys.readouterr().out


def test_batch_that_does_not_divide_the_mesh_is_refused(capsys):
    code = main(["--config", "configs/tiny.py:stage1", "--topology", "v5e:2x2", "--global-batch", "3",
                 "--config.mesh.shape.data", "2", "--config.mesh.shape.fsdp", "2"])
    assert code == 2 and "does not divide" in capsys.readouterr().err


def test_step_time_estimate_prefers_xla_and_falls_back_to_the_roofline():
    from emo_jax.plan import estimate_seconds
    from emo_jax.topology import CHIPS

    v5e = CHIPS["v5e"]
    assert estimate_seconds({"optimal_seconds": 0.25, "flops": 1e15}, v5e) == (0.25, "xla")
    compute_bound = {"optimal_seconds": -1.0, "flops": 197e12, "bytes accessed": 1e9}
    assert estimate_seconds(compute_bound, v5e) == (pytest.approx(1.0), "roofline of xla costs")
    memory_bound = {"flops": 1e9, "bytes accessed": 2 * 819e9}
    assert estimate_seconds(memory_bound, v5e)[0] == pytest.approx(2.0)


def test_sampler_chunk_compiles_from_abstract_inputs():
    """The sampler part of emo-compile --sample, compiled for this host's CPU (the TPU variant is the slow test)."""
    import jax

    from emo_jax.config import load_config
    from emo_jax.plan import compile_sampler, sampler_report
    from emo_jax.topology import CHIPS

    config = load_config("configs/tiny.py:stage2")
    chunk, step, frames = compile_sampler(config, jax.devices()[0])
    s = config.sample
    assert frames == s.clips_per_chunk * config.model.clip_frames
    r = sampler_report(chunk, step, CHIPS["v5e"], frames, s.steps, s.clips_per_chunk, config.data.fps)
    assert r["fits"] and 0 < r["hbm_per_chip_bytes"] < 2**30
    # Guidance "separate" runs three passes per DDIM step: a step's FLOPs exceed three single forwards' worth
    # of the tiny model (> 1e8), and the call multiplies them by steps x clips.
    assert r["flops_per_call"] > 3e8 * s.steps * s.clips_per_chunk
    # ... and exactly the step's own count times steps x clips (the chunk program's count holds one loop body).
    step_cost = step.cost_analysis()
    step_flops = (step_cost[0] if isinstance(step_cost, list) else step_cost)["flops"]
    assert r["flops_per_call"] == pytest.approx(step_flops * s.steps * s.clips_per_chunk)
    assert r["estimated_call_seconds"] > 0 and r["seconds_per_video_second"] > 0


def test_mesh_on_a_real_topology_follows_the_interconnect(caplog):
    """8 x 2 x 2 over v5p-64 (a 2x4x4 torus) needs a physical axis split; it is laid by mesh_utils, not in
    enumeration order with a warning."""
    import logging

    from emo_jax.sharding import make_mesh
    from emo_jax.topology import topology_devices

    _, devices = topology_devices("v5p-64")
    with caplog.at_level(logging.WARNING):
        mesh = make_mesh({"data": 8, "fsdp": 2, "tensor": 2}, devices)
    assert dict(mesh.shape) == {"data": 8, "fsdp": 2, "tensor": 2}
    assert sorted(d.id for d in mesh.devices.flat) == sorted(d.id for d in devices)
    assert "enumeration order" not in caplog.text
    # Consecutive devices of the innermost (tensor) axis are torus neighbours: their coordinates differ by one
    # step along one physical axis.
    for pair in mesh.devices.reshape(-1, 2):
        a, b = (tuple(d.coords) for d in pair)
        assert sum(abs(x - y) for x, y in zip(a, b)) == 1, (a, b)


def test_mesh_over_devices_mesh_utils_cannot_lay_is_enumeration_order_with_a_warning(caplog):
    """Every other chip of a v5e-64 is not a contiguous block of the torus: mesh_utils asserts, and make_mesh
    still returns a correct mesh over exactly those devices, in their order, and says why."""
    import logging

    from emo_jax.sharding import make_mesh
    from emo_jax.topology import topology_devices

    _, devices = topology_devices("v5e-64")
    chosen = devices[::2]
    with caplog.at_level(logging.WARNING):
        mesh = make_mesh({"data": 4, "fsdp": 8, "tensor": 1}, chosen)
    assert [d.id for d in mesh.devices.flat] == [d.id for d in chosen]
    assert "enumeration order" in caplog.text and "AssertionError" in caplog.text
    assert "without split axes" in caplog.text and "; with split axes" in caplog.text  # both attempts' reasons
    assert len(caplog.text) < 1000  # the reason is cut, not mesh_utils' list of every device
