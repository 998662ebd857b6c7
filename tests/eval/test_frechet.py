"""Fréchet distance against pytorch-fid's formula (scipy.linalg.sqrtm of the product), and the streaming
statistics against one-shot np.mean / np.cov."""
import numpy as np
import pytest
import scipy.linalg

from emo_jax.eval.frechet import FeatureStats, frechet_distance, frechet_distance_between

D = 64


def sqrtm_reference(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """pytorch-fid's computation: sqrtm of S1 S2, an eps offset on both diagonals if that is not finite, the real
    part kept."""
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(mu1)) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


def gaussian_stats(rng, samples, scale=1.0):
    """Mean and covariance of `samples` correlated random features; fewer samples than D gives a singular one."""
    mixing = rng.normal(size=(D, D)) * scale
    x = rng.normal(size=(samples, D)) @ mixing + rng.normal(size=D)
    return x.mean(axis=0), np.cov(x, rowvar=False)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_sqrtm_reference(seed):
    rng = np.random.default_rng(seed)
    mu1, sigma1 = gaussian_stats(rng, 500)
    mu2, sigma2 = gaussian_stats(rng, 500, scale=0.7)
    ours = frechet_distance(mu1, sigma1, mu2, sigma2)
    assert ours == pytest.approx(sqrtm_reference(mu1, sigma1, mu2, sigma2), rel=1e-6)
    assert ours > 1.0


def test_near_singular_covariances_match_reference():
    """40 samples in 64 dimensions: both covariances have rank 39, the product is singular."""
    rng = np.random.default_rng(3)
    mu1, sigma1 = gaussian_stats(rng, 40)
    mu2, sigma2 = gaussian_stats(rng, 40)
    assert np.linalg.matrix_rank(sigma1) < D
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(
        sqrtm_reference(mu1, sigma1, mu2, sigma2), rel=1e-6)


def test_distance_to_itself_is_zero_and_mean_shift_adds_its_square():
    rng = np.random.default_rng(4)
    mu, sigma = gaussian_stats(rng, 40)  # singular, where a sqrtm of the product is least accurate
    scale = np.trace(sigma)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-9 * scale
    shift = rng.normal(size=D)
    assert frechet_distance(mu, sigma, mu + shift, sigma) == pytest.approx(shift @ shift, abs=1e-9 * scale)


def test_mismatched_shapes_are_a_value_error():
    with pytest.raises(ValueError, match=r"\(64,\), \(32,\)"):
        frechet_distance(np.zeros(D), np.eye(D), np.zeros(32), np.eye(32))


def test_streaming_over_uneven_batches_equals_one_shot():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(1000, D)) @ rng.normal(size=(D, D)) + 100.0  # a large mean, as pool3 features have
    stats = FeatureStats("test", D)
    for start, stop in [(0, 1), (1, 1), (1, 7), (7, 300), (300, 301), (301, 1000)]:
        stats.add(x[start:stop])
    assert stats.count == 1000
    np.testing.assert_allclose(stats.mean, x.mean(axis=0), rtol=1e-10, atol=0)
    np.testing.assert_allclose(stats.cov, np.cov(x, rowvar=False), rtol=1e-10, atol=1e-10 * np.abs(stats.cov).max())


def test_merging_statistics_equals_statistics_of_the_union():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(700, D)) @ rng.normal(size=(D, D)) + 100.0
    a, b, union = FeatureStats("test", D), FeatureStats("test", D), FeatureStats("test", D)
    a.add(x[:200]), a.add(x[200:230])
    b.add(x[230:])
    union.add(x)
    a.merge(b)
    assert a.count == 700 and b.count == 470  # b is left as it was
    np.testing.assert_allclose(a.mean, union.mean, rtol=1e-12, atol=0)
    np.testing.assert_allclose(a.scatter, union.scatter, rtol=1e-12, atol=1e-12 * np.abs(union.scatter).max())
    np.testing.assert_allclose(a.cov, np.cov(x, rowvar=False), rtol=1e-10, atol=1e-10 * np.abs(a.cov).max())


def test_merging_empty_statistics_is_the_identity():
    rng = np.random.default_rng(8)
    stats = FeatureStats("test", D)
    stats.add(rng.normal(size=(30, D)) + 5.0)
    into_empty = FeatureStats("test", D)
    into_empty.merge(stats)
    stats_before = (stats.count, stats.mean, stats.scatter)
    stats.merge(FeatureStats("test", D))
    for merged in (stats, into_empty):
        assert merged.count == stats_before[0]
        np.testing.assert_array_equal(merged.mean, stats_before[1])
        np.testing.assert_array_equal(merged.scatter, stats_before[2])


def test_merging_other_features_is_a_value_error():
    with pytest.raises(ValueError, match=r"'i3d' \[64\] into 'test' \[64\]"):
        FeatureStats("test", D).merge(FeatureStats("i3d", D))
    with pytest.raises(ValueError, match=r"'test' \[32\] into 'test' \[64\]"):
        FeatureStats("test", D).merge(FeatureStats("test", 32))


def test_covariance_needs_two_features_and_batches_their_width():
    stats = FeatureStats("test", D)
    stats.add(np.zeros((1, D)))
    with pytest.raises(ValueError, match="at least 2"):
        stats.cov
    with pytest.raises(ValueError, match=r"\[N, 64\]"):
        stats.add(np.zeros((3, 32)))


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(6)
    stats = FeatureStats("inception_pool3", D)
    stats.add(rng.normal(size=(50, D)))
    path = str(tmp_path / "stats.npz")
    stats.save(path)
    loaded = FeatureStats.load(path, "inception_pool3", D)
    assert loaded.count == 50
    np.testing.assert_array_equal(loaded.mean, stats.mean)
    np.testing.assert_array_equal(loaded.cov, stats.cov)
    more = rng.normal(size=(20, D))
    stats.add(more)
    loaded.add(more)
    np.testing.assert_array_equal(loaded.cov, stats.cov)
    assert frechet_distance_between(loaded, stats) == pytest.approx(0.0, abs=1e-9)
    assert not list(tmp_path.glob("*.tmp"))


def test_loading_other_statistics_names_the_file(tmp_path):
    path = str(tmp_path / "stats.npz")
    stats = FeatureStats("inception_pool3", D)
    stats.add(np.ones((2, D)))
    stats.save(path)
    with pytest.raises(ValueError, match=r"stats\.npz.*shape \(64,\), not \(2048,\)"):
        FeatureStats.load(path, "inception_pool3", 2048)
    with pytest.raises(ValueError, match=r"stats\.npz.*'inception_pool3' features, not 'i3d'"):
        FeatureStats.load(path, "i3d", D)
    with pytest.raises(ValueError, match=r"missing\.npz.*does not exist"):
        FeatureStats.load(str(tmp_path / "missing.npz"), "inception_pool3", D)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"bad\.npz"):
        FeatureStats.load(str(tmp_path / "bad.npz"), "inception_pool3", D)


def test_comparing_different_features_is_a_value_error():
    with pytest.raises(ValueError, match="'a'.*'b'"):
        frechet_distance_between(FeatureStats("a", D), FeatureStats("b", D))
