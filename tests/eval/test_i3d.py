"""FVD's I3D in Flax against the PyTorch reference (tests/eval/torch_i3d.py, random weights and batch statistics,
loaded through i3d-jax's pickle layout), and the original FVD's TF1 bilinear resize."""
import pickle

import jax
import numpy as np
import pytest

from emo_jax.eval.i3d import FEATURES, SIZE, preprocess_clips, tf_bilinear_matrix
from emo_jax.interop.i3d_import import load_i3d

torch = pytest.importorskip("torch")
from tests.eval.torch_i3d import i3d_jax_variables, random_i3d  # noqa: E402


@pytest.fixture(scope="module")
def networks(tmp_path_factory):
    reference = random_i3d(seed=0)
    path = tmp_path_factory.mktemp("i3d") / "i3d-random.ckpt"
    with open(path, "wb") as f:
        pickle.dump(i3d_jax_variables(reference), f)
    module, params = load_i3d(str(path), sha256=None)
    return reference, jax.jit(lambda clips: module.apply({"params": params}, clips))


def relative_error(ours, theirs):
    return float(np.linalg.norm(ours - theirs) / np.linalg.norm(theirs))


@pytest.mark.parametrize("shape", [(2, 20, 193, 201), (1, 16, SIZE, SIZE)])
def test_logits_match_the_pytorch_reference(networks, shape):
    """The smallest size the pooling allows, non-square and with two time steps left to average; and FVD's size."""
    reference, logits = networks
    clips = np.random.default_rng(0).uniform(-1, 1, (*shape, 3)).astype(np.float32)
    clips[-1] *= np.linspace(0.2, 1.0, shape[1], dtype=np.float32)[:, None, None, None]
    with torch.no_grad():
        expected = reference(torch.from_numpy(clips).permute(0, 4, 1, 2, 3)).numpy()
    got = np.asarray(logits(clips))
    assert got.shape == (shape[0], FEATURES)
    assert relative_error(got, expected) < 1e-4
    assert np.std(got) > 0.1  # not a constant the two sides could agree on by accident


def test_tf_bilinear_has_no_half_pixel_centres():
    """TF1's resize_bilinear: output i reads input i * in / out, the upper neighbour clamped at the edge."""
    up = tf_bilinear_matrix(4, 8) @ np.arange(4.0)
    np.testing.assert_allclose(up, [0, 0.5, 1, 1.5, 2, 2.5, 3, 3])
    down = tf_bilinear_matrix(4, 2) @ np.arange(4.0)
    np.testing.assert_allclose(down, [0, 2])
    np.testing.assert_allclose(tf_bilinear_matrix(5, 5), np.eye(5))


def test_preprocess_resizes_rows_and_columns_and_scales_to_unit_range():
    h, w = 112, 56
    rows = np.broadcast_to(np.arange(h, dtype=np.float32)[:, None, None], (h, w, 3))
    clip = np.stack([rows, np.full((h, w, 3), 255.0, np.float32)])[None]  # [1, 2, H, W, 3]
    out = np.asarray(preprocess_clips(clip))
    assert out.shape == (1, 2, SIZE, SIZE, 3)
    expected_rows = 2.0 * (tf_bilinear_matrix(h, SIZE) @ np.arange(h)) / 255.0 - 1.0
    np.testing.assert_allclose(out[0, 0, :, 17, 0], expected_rows, atol=1e-6)  # constant along a row
    np.testing.assert_allclose(out[0, 0, :, :, 1], np.broadcast_to(expected_rows[:, None], (SIZE, SIZE)), atol=1e-6)
    np.testing.assert_allclose(out[0, 1], 1.0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(preprocess_clips(np.zeros((1, 1, SIZE, SIZE, 3), np.uint8))), -1.0)
