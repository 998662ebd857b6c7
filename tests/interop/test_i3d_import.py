"""Reading i3d-jax's pickled I3D weights: only numpy arrays are let out of the pickle, the sha256 is checked, and
every array fills one parameter (a missing or extra array named)."""
import copy
import os
import pickle

import numpy as np
import pytest
from flax import traverse_util

from emo_jax.errors import CheckpointError
from emo_jax.eval.weights import I3D_SHA256, check_i3d_sha256, sha256_of
from emo_jax.interop.i3d_import import load_i3d, read_arrays_pickle

torch = pytest.importorskip("torch")
from tests.eval.torch_i3d import i3d_jax_variables, random_i3d  # noqa: E402


class Custom:
    def __init__(self):
        self.value = 1


class RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def variables():
    return i3d_jax_variables(random_i3d(seed=2))


def dump(obj, folder, name="i3d.ckpt"):
    path = folder / name
    with open(path, "wb") as f:
        pickle.dump(obj, f)
    return str(path)


def test_a_pickle_of_arrays_dicts_lists_strings_and_numbers_loads(tmp_path):
    obj = {"a": [np.arange(6, dtype=np.float32).reshape(2, 3), "text", 3, 2.5, None, (1, 2)],
           "b": {"c": np.ones((4,), np.int64)}}
    loaded = read_arrays_pickle(dump(obj, tmp_path))
    np.testing.assert_array_equal(loaded["a"][0], obj["a"][0])
    assert loaded["a"][1:] == obj["a"][1:] and loaded["b"]["c"].dtype == np.int64


@pytest.mark.parametrize("obj, refused", [(os.system, r"(posix|nt)\.system"),
                                          (Custom(), r"tests\.interop\.test_i3d_import\.Custom"),
                                          ({"w": [np.zeros(2), Custom()]}, r"tests\.interop\.test_i3d_import\.Custom")])
def test_any_other_class_is_refused_naming_file_and_class(tmp_path, obj, refused):
    path = dump(obj, tmp_path)
    with pytest.raises(CheckpointError, match=rf"i3d\.ckpt: the pickle names {refused}"):
        read_arrays_pickle(path)


def test_a_pickled_command_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "ran"
    path = dump({"params": RunsACommand(marker)}, tmp_path)
    with pytest.raises(CheckpointError, match=r"system"):
        read_arrays_pickle(path)
    assert not marker.exists()


def test_a_wrong_sha256_names_both_digests_and_the_fetch_command(tmp_path):
    path = dump({"params": {}}, tmp_path)
    found = sha256_of(path)
    with pytest.raises(CheckpointError) as error:
        check_i3d_sha256(path, I3D_SHA256)
    message = str(error.value)
    assert found in message and I3D_SHA256 in message
    assert f"python -m emo_jax.eval.fetch i3d --to {tmp_path}" in message
    with pytest.raises(CheckpointError, match="sha256"):
        load_i3d(path)  # the pinned digest is checked by default
    check_i3d_sha256(path, found)


def test_every_array_fills_one_parameter(variables, tmp_path):
    _, params = load_i3d(dump(variables, tmp_path), sha256=None)
    flat = traverse_util.flatten_dict(params)
    source = {k for c in variables for k in traverse_util.flatten_dict(variables[c])}
    assert len(flat) == len(source) == 230
    np.testing.assert_array_equal(flat[("Mixed_4c", "Branch_2_Conv3d_0b_3x3", "conv", "kernel")],
                                  variables["params"]["Mixed_4c"]["Branch_2/Conv3d_0b_3x3"]["Conv_0"]["kernel"])
    np.testing.assert_array_equal(flat[("Conv3d_2c_3x3", "bn", "var")],
                                  variables["batch_stats"]["Conv3d_2c_3x3"]["BatchNorm_0"]["var"].reshape(-1))
    np.testing.assert_array_equal(flat[("Logits_Conv3d_0c_1x1", "bias")],
                                  variables["params"]["Logits/Conv3d_0c_1x1"]["Conv_0"]["bias"])


def test_a_missing_or_extra_array_is_named(variables, tmp_path):
    damaged = copy.deepcopy(variables)
    del damaged["batch_stats"]["Mixed_5b"]["Branch_1/Conv3d_0a_1x1"]["BatchNorm_0"]["mean"]
    with pytest.raises(CheckpointError, match=r"1 I3D parameters missing.*Mixed_5b/Branch_1_Conv3d_0a_1x1/bn/mean"):
        load_i3d(dump(damaged, tmp_path), sha256=None)
    extra = copy.deepcopy(variables)
    extra["params"]["Mixed_5c"]["Branch_4/Conv3d_0a_1x1"] = {"Conv_0": {"kernel": np.zeros((1, 1, 1, 2, 2),
                                                                                            np.float32)}}
    with pytest.raises(CheckpointError, match=r"no place for.*params/Mixed_5c/Branch_4/Conv3d_0a_1x1/Conv_0/kernel"):
        load_i3d(dump(extra, tmp_path), sha256=None)
    moved = copy.deepcopy(variables)  # a batch-norm bias among the statistics fills nothing
    moved["batch_stats"]["Conv3d_2b_1x1"]["BatchNorm_0"]["bias"] = moved["params"]["Conv3d_2b_1x1"].pop("BatchNorm_0")[
        "bias"]
    with pytest.raises(CheckpointError, match=r"no place for: \['batch_stats/Conv3d_2b_1x1/BatchNorm_0/bias'\]"):
        load_i3d(dump(moved, tmp_path), sha256=None)
    wrong = copy.deepcopy(variables)
    wrong["params"]["Conv3d_1a_7x7"]["Conv_0"]["kernel"] = np.zeros((3, 7, 7, 3, 64), np.float32)
    with pytest.raises(CheckpointError, match=r"Conv3d_1a_7x7/Conv_0/kernel has shape \(3, 7, 7, 3, 64\)"):
        load_i3d(dump(wrong, tmp_path), sha256=None)
