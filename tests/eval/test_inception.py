"""FID's Inception in Flax against the PyTorch reference of pytorch-fid's network (random weights and batch-norm
statistics, loaded through the .pth importer): pool3 features and the resize to 299x299."""
import jax
import numpy as np
import pytest

from emo_jax.eval.inception import FEATURES, SIZE, resize_for_inception
from emo_jax.interop.inception_import import load_fid_inception

torch = pytest.importorskip("torch")
from tests.eval.torch_inception import FIDInceptionV3, randomize  # noqa: E402


@pytest.fixture(scope="module")
def networks(tmp_path_factory):
    reference = randomize(FIDInceptionV3(), seed=0)
    path = tmp_path_factory.mktemp("fid") / "pt_inception-random.pth"
    torch.save(reference.state_dict(), path)
    module, params = load_fid_inception(str(path), sha256_prefix=None)
    return reference, jax.jit(lambda images: module.apply({"params": params}, images))


def relative_error(ours, theirs):
    return float(np.linalg.norm(ours - theirs) / np.linalg.norm(theirs))


def two_images(size: int) -> np.ndarray:
    """Two [size, size] images in [0, 1] unlike enough to give clearly different features: noise, and a colour
    ramp with a little noise."""
    rng = np.random.default_rng(size)
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)
    smooth = np.stack([ramp[:, None] * np.ones(size), ramp[None, :] * np.ones((size, 1)),
                       np.full((size, size), 0.3)], axis=-1)
    return np.stack([rng.random((size, size, 3)), 0.9 * smooth + 0.1 * rng.random((size, size, 3))]
                    ).astype(np.float32)


@pytest.mark.parametrize("size", [SIZE, 64])
def test_pool3_features_match_pytorch_fid(networks, size):
    """At 299x299 (no resize) and from 64x64 through the resize."""
    reference, features = networks
    images = two_images(size)
    with torch.no_grad():
        expected = reference(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
    got = np.asarray(features(images))
    assert got.shape == (2, FEATURES)
    assert relative_error(got, expected) < 1e-4
    assert relative_error(got[0], got[1]) > 1e-2  # the two images give different features


@pytest.mark.parametrize("shape", [(64, 64), (512, 384), (299, 299)])
def test_resize_matches_torch_interpolate(shape):
    images = np.random.default_rng(1).random((2, *shape, 3), dtype=np.float32)
    expected = torch.nn.functional.interpolate(torch.from_numpy(images).permute(0, 3, 1, 2), size=(SIZE, SIZE),
                                               mode="bilinear", align_corners=False).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(np.asarray(resize_for_inception(images)), expected, atol=1e-6, rtol=0)
