"""The Fréchet distance between two Gaussians fitted to features, and the streaming statistics it is computed from.

FID (Heusel et al. 2017) as pytorch-fid computes it: each set of images is summarised by the mean and the unbiased
(N-1) covariance of its Inception pool3 features, all in float64, and

    d² = |mu1 - mu2|² + Tr(S1) + Tr(S2) - 2 Tr(sqrt(S1 S2)).

The statistics are accumulated batch by batch (FeatureStats), so no feature array of a whole data set is held, and
can be saved to .npz and compared later against statistics of the same feature. The features for FID come from
emo_jax/eval/inception.py, those for FVD from emo_jax/eval/i3d.py.
"""
from __future__ import annotations

import io
import os

import numpy as np

from emo_jax.paths import require_file


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """d² between N(mu1, sigma1) and N(mu2, sigma2), in float64; both covariances symmetric positive semi-definite.

    Only the trace of sqrt(S1 S2) is needed, and it equals the sum of the square roots of the eigenvalues of the
    symmetric matrix sqrt(S1) S2 sqrt(S1): XY and YX share their non-zero eigenvalues, with X = sqrt(S1) and
    Y = S2 sqrt(S1). A symmetric eigensolver finds those eigenvalues to within rounding of the matrix norm and they
    are real, so a singular or near-singular product (fewer samples than dimensions) needs neither pytorch-fid's
    eps offset on the diagonal nor the dropping of an imaginary part that scipy.linalg.sqrtm's Schur method leaves
    on the non-symmetric S1 S2.

    Eigenvalues within rounding of zero (below D * machine epsilon * the largest) are taken as zero: they are
    noise of size eps * |M|, and their square roots, ~sqrt(eps) * |M|^0.5 each, would otherwise add up to a relative
    error of 1e-8 (the size of sqrtm's on a singular product) where the exact answer, e.g. d(S, S) = 0, is known.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    d = mu1.shape[0] if mu1.ndim == 1 else -1
    if d < 0 or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"Fréchet distance needs means [D] and covariances [D, D] of one D; got means "
                         f"{mu1.shape}, {mu2.shape} and covariances {sigma1.shape}, {sigma2.shape}")
    root1 = _psd_sqrt(sigma1)
    inner = root1 @ sigma2 @ root1
    trace_sqrt = np.sqrt(_resolved(np.linalg.eigvalsh((inner + inner.T) / 2))).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt)


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix."""
    eigenvalues, vectors = np.linalg.eigh((sigma + sigma.T) / 2)
    return (vectors * np.sqrt(_resolved(eigenvalues))) @ vectors.T


def _resolved(eigenvalues: np.ndarray) -> np.ndarray:
    """Eigenvalues of a PSD matrix with those within rounding of zero (or below it) set to zero."""
    floor = len(eigenvalues) * np.finfo(np.float64).eps * max(eigenvalues.max(initial=0.0), 0.0)
    return np.where(eigenvalues > floor, eigenvalues, 0.0)


class FeatureStats:
    """Count, mean and covariance of `dim`-wide features of one kind (`feature`, e.g. 'inception_pool3'), fed
    batch by batch.

    Each batch's own mean and centred scatter matrix are merged into the running ones by Chan, Golub and LeVeque's
    pairwise update, in float64, so the result does not depend on how the features were split into batches (to
    rounding) and never subtracts two large sums. `merge` combines two sets of statistics by the same update, so
    processes or shards can each hold their own and merge them at the end.
    """

    def __init__(self, feature: str, dim: int):
        self.feature = feature
        self.dim = dim
        self.count = 0
        self._mean = np.zeros(dim, np.float64)
        self._scatter = np.zeros((dim, dim), np.float64)  # sum over features of (x - mean)(x - mean)^T

    def add(self, features_ND: np.ndarray) -> None:
        """Adds a batch of features [N, dim] (N may be 0)."""
        x = np.asarray(features_ND, np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"{self.feature} statistics take features [N, {self.dim}]; got shape {x.shape}")
        if x.shape[0] == 0:
            return
        batch_mean = x.mean(axis=0)
        centred = x - batch_mean
        self._combine(x.shape[0], batch_mean, centred.T @ centred)

    def merge(self, other: "FeatureStats") -> None:
        """Adds another set of statistics of the same feature, in place, as if its features had been added here
        (the statistics of several processes or shards combined)."""
        if other.feature != self.feature or other.dim != self.dim:
            raise ValueError(f"cannot merge statistics of {other.feature!r} [{other.dim}] into {self.feature!r} "
                             f"[{self.dim}]; merge statistics of the same network's features")
        if other.count > 0:
            self._combine(other.count, other._mean, other._scatter)

    def _combine(self, n: int, mean: np.ndarray, scatter: np.ndarray) -> None:
        """Chan et al.'s pairwise update with a group of n features of this mean and centred scatter matrix."""
        delta = mean - self._mean
        total = self.count + n
        self._scatter += scatter + np.outer(delta, delta) * (self.count * n / total)
        self._mean += delta * (n / total)
        self.count = total

    @classmethod
    def from_moments(cls, feature: str, count: int, mean: np.ndarray, scatter: np.ndarray) -> "FeatureStats":
        """Statistics of `count` features with this mean [D] and centred scatter matrix [D, D]."""
        mean, scatter = np.asarray(mean, np.float64), np.asarray(scatter, np.float64)
        assert mean.ndim == 1 and scatter.shape == (len(mean), len(mean)), (mean.shape, scatter.shape)
        stats = cls(feature, len(mean))
        stats.count, stats._mean, stats._scatter = int(count), mean.copy(), scatter.copy()
        return stats

    @property
    def mean(self) -> np.ndarray:
        return self._mean.copy()

    @property
    def scatter(self) -> np.ndarray:
        """The sum over the features of (x - mean)(x - mean)^T."""
        return self._scatter.copy()

    @property
    def cov(self) -> np.ndarray:
        """The unbiased covariance (divided by count - 1), as np.cov and pytorch-fid compute it."""
        if self.count < 2:
            raise ValueError(f"{self.feature} statistics hold {self.count} features; a covariance needs at least 2")
        return self._scatter / (self.count - 1)

    def save(self, path: str) -> None:
        """Writes an .npz (feature name, count, mean, scatter matrix) through a temporary file beside `path`."""
        buffer = io.BytesIO()
        np.savez(buffer, feature=np.array(self.feature), count=np.array(self.count, np.int64), mean=self._mean,
                 scatter=self._scatter)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(buffer.getvalue())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str, feature: str, dim: int) -> "FeatureStats":
        """Statistics saved by `save`, which must be of `feature` and `dim`; anything else is a ValueError naming
        the file."""
        require_file(path, "feature statistics file", "pass an .npz written by FeatureStats.save")
        try:
            with np.load(path, allow_pickle=False) as data:
                saved = {k: data[k] for k in ("feature", "count", "mean", "scatter")}
        except (OSError, ValueError, KeyError) as e:
            raise ValueError(f"cannot read feature statistics from {path!r}: {e}") from e
        if str(saved["feature"]) != feature:
            raise ValueError(f"{path!r} holds statistics of {str(saved['feature'])!r} features, not {feature!r}; "
                             "compute the statistics again with the same network")
        if saved["mean"].shape != (dim,) or saved["scatter"].shape != (dim, dim):
            raise ValueError(f"{path!r} holds {feature} statistics with a mean of shape {saved['mean'].shape}, not "
                             f"({dim},); compute the statistics again with the same network")
        return cls.from_moments(feature, int(saved["count"]), saved["mean"], saved["scatter"])


def frechet_distance_between(a: FeatureStats, b: FeatureStats) -> float:
    """The Fréchet distance between two sets of statistics of the same feature (FID for Inception pool3)."""
    if a.feature != b.feature or a.dim != b.dim:
        raise ValueError(f"cannot compare statistics of {a.feature!r} [{a.dim}] with {b.feature!r} [{b.dim}]")
    return frechet_distance(a.mean, a.cov, b.mean, b.cov)
