"""Evaluation over several JAX processes (hosts): feature statistics and plain values gathered from all of them.

Every process calls these functions in the same order with the same kind of value (they are collectives), and
every process gets the same answer. With one process nothing is sent.

JAX runs without x64, so a float64 array handed to a collective would come back as float32. The bytes travel
instead, viewed as uint32 words, and are viewed back on arrival: the float64 statistics arrive bit for bit.
"""
from __future__ import annotations

import json
from typing import Any

import jax
import numpy as np

from emo_jax.eval.frechet import FeatureStats


def _allgather_words(words: np.ndarray) -> np.ndarray:
    """[processes, N] uint32: every process's N words, in process order (N the same on all of them)."""
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(words))


def allgather_stats(stats: FeatureStats) -> FeatureStats:
    """The statistics of all processes merged in process order, a new object; every process passes statistics of
    the same feature and width."""
    merged = FeatureStats(stats.feature, stats.dim)
    if jax.process_count() == 1:
        merged.merge(stats)
        return merged
    words = np.concatenate([np.array([stats.count], np.int64).view(np.uint32), stats.mean.view(np.uint32),
                            stats.scatter.reshape(-1).view(np.uint32)])
    d = stats.dim
    for row in _allgather_words(words):
        count = int(row[:2].view(np.int64)[0])
        mean = row[2:2 + 2 * d].view(np.float64)
        scatter = row[2 + 2 * d:].view(np.float64).reshape(d, d)
        merged.merge(FeatureStats.from_moments(stats.feature, count, mean, scatter))
    return merged


def allgather_json(value: Any) -> list[Any]:
    """Every process's `value` (anything json.dumps takes: counts, names, lists of records), in process order."""
    if jax.process_count() == 1:
        return [value]
    data = json.dumps(value).encode()
    sizes = _allgather_words(np.array([len(data)], np.uint32))[:, 0]
    width = -(-int(sizes.max()) // 4)  # the longest, in whole words
    padded = np.zeros(width * 4, np.uint8)
    padded[:len(data)] = np.frombuffer(data, np.uint8)
    rows = _allgather_words(padded.view(np.uint32))
    return [json.loads(row.view(np.uint8)[:size].tobytes()) for row, size in zip(rows, sizes)]
