"""FVD's clips and the sharded extraction under it: windows of 16 frames cut from a stream of frames, too-short
videos named, and features sharded over 8 simulated CPU devices equal to one device's, the padding dropped."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emo_jax.eval.extract import ShardedExtractor, StatsFeeder
from emo_jax.eval.frechet import FeatureStats
from emo_jax.eval.fvd import ClipWindows


def frames(count, size=4):
    """Frame i is filled with the value i, so a window's frames say where it starts."""
    return [np.full((size, size, 3), i, np.uint8) for i in range(count)]


def windows(count, stride):
    cutter = ClipWindows(stride=stride)
    return cutter, [w for f in frames(count) if (w := cutter.push(f)) is not None]


@pytest.mark.parametrize("count, stride, starts", [(40, 16, [0, 16]), (40, 8, [0, 8, 16, 24]), (16, 16, [0]),
                                                   (31, 16, [0])])
def test_windows_of_16_consecutive_frames_start_every_stride(count, stride, starts):
    cutter, cut = windows(count, stride)
    assert [int(w[0, 0, 0, 0]) for w in cut] == starts
    for w in cut:
        assert w.shape == (16, 4, 4, 3)
        np.testing.assert_array_equal(w[:, 0, 0, 0], np.arange(w[0, 0, 0, 0], w[0, 0, 0, 0] + 16))
    assert cutter.too_short is None


def test_a_video_shorter_than_16_frames_gives_no_clip_and_says_why():
    cutter, cut = windows(10, 16)
    assert cut == [] and cutter.too_short == "10 frames, shorter than FVD's 16-frame clips"


class TinyVideoNet(nn.Module):
    """A small 3D convolutional feature network standing in for I3D."""

    @nn.compact
    def __call__(self, clips):
        x = nn.relu(nn.Conv(8, (3, 3, 3), strides=(1, 2, 2), padding="SAME")(clips.astype(jnp.float32) / 255.0))
        return nn.Dense(5)(jnp.mean(x, axis=(1, 2, 3)))


@pytest.fixture(scope="module")
def tiny():
    module = TinyVideoNet()
    clips = np.random.default_rng(0).integers(0, 256, (11, 4, 8, 8, 3), dtype=np.uint8)
    params = module.init(jax.random.key(0), clips[:1])["params"]
    return (lambda p, x: module.apply({"params": p}, x)), params, clips


def test_eight_devices_give_one_devices_features_with_the_padding_dropped(tiny):
    fn, params, clips = tiny
    assert len(jax.devices()) == 8  # tests/conftest.py's simulated CPU devices
    sharded = ShardedExtractor(fn, params, batch_size=5)
    single = ShardedExtractor(fn, params, batch_size=3, devices=jax.devices()[:1])
    assert sharded.batch_size == 8 and single.batch_size == 3
    many, one = sharded(clips), single(clips)  # 11 clips: batches of 8 + 3 (padded to 8), and 3 + 3 + 3 + 2 (to 3)
    assert many.shape == one.shape == (11, 5)
    np.testing.assert_allclose(many, one, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(many, np.asarray(fn(params, clips)), rtol=1e-5, atol=1e-6)
    assert sharded(clips[:0]).shape[0] == 0


def test_the_feeder_gives_the_statistics_of_all_items_across_batches_and_shapes(tiny):
    fn, params, clips = tiny
    extractor = ShardedExtractor(fn, params, batch_size=8)
    stats = FeatureStats("tiny", 5)
    feeder = StatsFeeder(extractor, stats)
    other = np.random.default_rng(1).integers(0, 256, (3, 4, 16, 12, 3), dtype=np.uint8)
    for clip in list(clips) + list(other):
        feeder.add(clip)
    feeder.flush()
    expected = np.concatenate([np.asarray(fn(params, clips)), np.asarray(fn(params, other))])
    assert stats.count == 14
    np.testing.assert_allclose(stats.mean, expected.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats.cov, np.cov(expected, rowvar=False), rtol=1e-4, atol=1e-6)
