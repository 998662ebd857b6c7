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
def test_tiny_train_step_compiles_for_v5e_2x2(tmp_path, capsys):
    out = tmp_path / "plan.json"
    code = main(["--config", "configs/tiny.py:stage1", "--topology", "v5e:2x2", "--global-batch", "4",
                 "--config.mesh.shape.data", "2", "--config.mesh.shape.fsdp", "2", "--json", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["chips"] == 4 and report["chip"] == "v5e" and report["mesh"] == {"data": 2, "fsdp": 2, "tensor": 1}
    assert report["fits"] is True
    assert 0 < report["hbm_per_chip_bytes"] < report["hbm_capacity_bytes"] == 16 * 2**30
    # Per chip: the state (params, Adam moments, EMA) is split over fsdp, so arguments hold well under the
    # whole float32 state (2M params x 4 copies x 4 bytes = 32 MB) but more than a quarter of it.
    assert 4e6 < report["arguments_bytes"] < 32e6
    assert report["flops_per_step"] > 1e8
    assert report["estimated_step_seconds"] is None or report["estimated_step_seconds"] > 0
    assert "fits" in capsys.readouterr().out


def test_batch_that_does_not_divide_the_mesh_is_refused(capsys):
    code = main(["--config", "configs/tiny.py:stage1", "--topology", "v5e:2x2", "--global-batch", "3",
                 "--config.mesh.shape.data", "2", "--config.mesh.shape.fsdp", "2"])
    assert code == 2 and "does not divide" in capsys.readouterr().err
