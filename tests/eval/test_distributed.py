"""Feature statistics and values gathered over JAX processes: two real processes on the CPU get, bit for bit, the
statistics merged here from both processes' features; one process gets an equal copy without any collective."""
import json

import numpy as np
import pytest

from emo_jax.eval import distributed
from emo_jax.eval.distributed import allgather_json, allgather_stats
from emo_jax.eval.frechet import FeatureStats
from tests.eval.multiprocess import D, process_features, process_stats, run_processes


def stats_of(features):
    stats = FeatureStats("test", D)
    stats.add(features)
    return stats


def test_two_processes_get_the_statistics_of_all_features_exactly(tmp_path):
    outs = [str(tmp_path / f"stats_{i}.npz") for i in range(2)]
    results = run_processes(lambda i, address: ["stats", address, 2, i, outs[i]])
    for status, _, err in results:
        assert status == 0, err[-3000:]
    gathered = [FeatureStats.load(out, "test", D) for out in outs]
    expected = FeatureStats("test", D)
    for i in range(2):  # the same merge in process order, here: the transport must not change a bit
        expected.merge(process_stats(i))
    union = stats_of(np.concatenate([process_features(0), process_features(1)]))
    for stats in gathered:
        assert stats.count == union.count == 40 + 65
        np.testing.assert_array_equal(stats.mean, expected.mean)
        np.testing.assert_array_equal(stats.scatter, expected.scatter)
        np.testing.assert_allclose(stats.mean, union.mean, rtol=1e-12, atol=0)
        np.testing.assert_allclose(stats.scatter, union.scatter, rtol=1e-12, atol=1e-12 * np.abs(union.scatter).max())
    records = [json.loads(open(out + ".json").read()) for out in outs]
    assert records[0] == records[1] == [{"process": 0, "rows": 40, "name": ""},
                                        {"process": 1, "rows": 65, "name": "é"}]


def test_one_process_gets_an_equal_copy_without_a_collective(monkeypatch):
    def no_collective(words):
        raise AssertionError("a collective with one process")

    monkeypatch.setattr(distributed, "_allgather_words", no_collective)
    stats = stats_of(process_features(0))
    gathered = allgather_stats(stats)
    assert gathered is not stats and gathered.feature == "test" and gathered.count == stats.count
    np.testing.assert_array_equal(gathered.mean, stats.mean)
    np.testing.assert_array_equal(gathered.scatter, stats.scatter)
    gathered.add(process_features(1))
    assert stats.count == 40  # a copy: adding to it leaves the original as it was
    assert allgather_json({"a": [1, 2]}) == [{"a": [1, 2]}]


@pytest.mark.parametrize("process_count", [2, 3])
def test_words_travel_and_come_back_as_the_same_float64(monkeypatch, process_count):
    """The packing without processes: a gather that hands every process's words back (here the same process's
    words again) must unpack to the same statistics, merged process_count times."""
    monkeypatch.setattr(distributed.jax, "process_count", lambda: process_count)
    monkeypatch.setattr(distributed, "_allgather_words", lambda words: np.stack([words] * process_count))
    stats = stats_of(process_features(1))
    expected = FeatureStats("test", D)
    for _ in range(process_count):
        expected.merge(stats)
    gathered = allgather_stats(stats)
    assert gathered.count == process_count * 65
    np.testing.assert_array_equal(gathered.mean, expected.mean)
    np.testing.assert_array_equal(gathered.scatter, expected.scatter)
    assert allgather_json({"x": "é" * 5}) == [{"x": "é" * 5}] * process_count
