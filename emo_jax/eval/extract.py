"""Batched feature extraction sharded over local devices, feeding FeatureStats (emo_jax/eval/frechet.py).

The batch axis is split over a 1-D mesh of the devices (NamedSharding, axis 'batch'), the network's parameters are
replicated, and every call runs one jitted program of a fixed batch size: the last batch is padded with zeros and
the padding's features dropped, so one compile serves a whole data set of one item shape.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from emo_jax.eval.frechet import FeatureStats


class ShardedExtractor:
    """features = extractor(items): fn(params, batch) over batches of `batch_size` items (rounded up to a multiple
    of the device count), each split over `devices` (default: all local devices)."""

    def __init__(self, fn: Callable[[Any, jax.Array], jax.Array], params: Any, batch_size: int,
                 devices: Sequence[jax.Device] | None = None):
        devices = list(jax.local_devices() if devices is None else devices)
        mesh = Mesh(np.array(devices), ("batch",))
        self.batch_size = -(-max(batch_size, 1) // len(devices)) * len(devices)
        self._split = NamedSharding(mesh, P("batch"))
        replicated = NamedSharding(mesh, P())
        self._params = jax.device_put(params, replicated)
        self._fn = jax.jit(fn, in_shardings=(replicated, self._split), out_shardings=self._split)

    def __call__(self, items: np.ndarray) -> np.ndarray:
        """Features [N, D] of items [N, ...] (N may be anything, 0 included)."""
        items = np.asarray(items)
        out = []
        for start in range(0, len(items), self.batch_size):
            batch = items[start:start + self.batch_size]
            real = len(batch)
            if real < self.batch_size:
                batch = np.concatenate([batch, np.zeros((self.batch_size - real, *batch.shape[1:]), batch.dtype)])
            out.append(np.asarray(self._fn(self._params, jax.device_put(batch, self._split)))[:real])
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


class StatsFeeder:
    """Collects items as they come (frames, clips) and adds their features to `stats` a full batch at a time; items
    of a new shape first flush those of the old one."""

    def __init__(self, extractor: ShardedExtractor, stats: FeatureStats):
        self.extractor, self.stats = extractor, stats
        self._pending: list[np.ndarray] = []

    def add(self, item: np.ndarray) -> None:
        if self._pending and item.shape != self._pending[0].shape:
            self.flush()
        self._pending.append(item)
        if len(self._pending) == self.extractor.batch_size:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self.stats.add(self.extractor(np.stack(self._pending)))
            self._pending = []
