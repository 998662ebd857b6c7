"""Loading pytorch-fid's Inception state dict: .pth and .safetensors alike, the logits layer and batch-norm counters
left out, a missing or extra key a CheckpointError naming the file and the key, and a file whose sha256 does not
start with the digits in pytorch-fid's file name refused before it is read."""
import numpy as np
import pytest
from flax import traverse_util

from emo_jax.errors import CheckpointError
from emo_jax.eval import weights
from emo_jax.interop import inception_import
from emo_jax.interop.inception_import import load_fid_inception

torch = pytest.importorskip("torch")
from safetensors.torch import save_file  # noqa: E402

from tests.eval.torch_inception import FIDInceptionV3, randomize  # noqa: E402


@pytest.fixture(scope="module")
def state():
    return randomize(FIDInceptionV3(), seed=1).state_dict()


def save_pth(state, folder, name="weights.pth"):
    path = folder / name
    torch.save(state, path)
    return str(path)


def test_pth_and_safetensors_give_the_same_params(state, tmp_path):
    assert "fc.weight" in state and "Conv2d_1a_3x3.bn.num_batches_tracked" in state
    _, from_pth = load_fid_inception(save_pth(state, tmp_path), sha256_prefix=None)
    without_counters = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked") and "fc." not in k}
    save_file(without_counters, tmp_path / "weights.safetensors")
    _, from_safetensors = load_fid_inception(str(tmp_path / "weights.safetensors"), sha256_prefix=None)
    flat_pth, flat_st = traverse_util.flatten_dict(from_pth), traverse_util.flatten_dict(from_safetensors)
    assert flat_pth.keys() == flat_st.keys()
    assert len(flat_pth) == len(without_counters)  # every remaining key became one parameter
    for path in flat_pth:
        np.testing.assert_array_equal(flat_pth[path], flat_st[path])
    np.testing.assert_array_equal(flat_pth[("Mixed_6b", "branch7x7_2", "conv", "kernel")],
                                  state["Mixed_6b.branch7x7_2.conv.weight"].numpy().transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(flat_pth[("Mixed_7c", "branch_pool", "bn", "running_var")],
                                  state["Mixed_7c.branch_pool.bn.running_var"].numpy())


def test_missing_key_names_file_and_key(state, tmp_path):
    damaged = {k: v for k, v in state.items() if k != "Mixed_6b.branch7x7_2.bn.running_mean"}
    with pytest.raises(CheckpointError, match=r"weights\.pth.*1 Inception keys missing.*branch7x7_2\.bn\.running_mean"):
        load_fid_inception(save_pth(damaged, tmp_path), sha256_prefix=None)


def test_extra_key_names_file_and_key(state, tmp_path):
    extra = dict(state, **{"AuxLogits.fc.weight": torch.zeros(1008, 768)})
    with pytest.raises(CheckpointError, match=r"weights\.pth.*AuxLogits\.fc\.weight"):
        load_fid_inception(save_pth(extra, tmp_path), sha256_prefix=None)


def test_a_file_of_another_sha256_is_refused_before_it_is_read(state, tmp_path, monkeypatch):
    path = save_pth(state, tmp_path, weights.FID_FILE)
    found = weights.sha256_of(path)
    assert not found.startswith(weights.FID_SHA256_PREFIX)

    def never(path):
        raise AssertionError("torch.load ran on a file of the wrong digest")

    monkeypatch.setattr(inception_import, "load_state_dict", never)
    expected = (f"{path}: sha256 {found}, expected one starting 6726825d (pytorch-fid's {weights.FID_FILE}); fetch "
                f"the right file with `curl -L --create-dirs -o {path} {weights.FID_URL}`")
    with pytest.raises(CheckpointError) as refused:
        load_fid_inception(path)
    assert str(refused.value) == expected
    monkeypatch.undo()
    _, params = load_fid_inception(path, sha256_prefix=found[:8])  # the right digits: the check lets it through
    assert "Mixed_7c" in params


def test_a_missing_file_names_the_fetch_command(tmp_path):
    with pytest.raises(CheckpointError, match=r"does not exist; fetch it with `curl -L"):
        load_fid_inception(str(tmp_path / weights.FID_FILE))
