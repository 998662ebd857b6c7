"""FID over video frames (EMO's Table 1 "FID": per-frame FID between generated and reference frames).

Frames are taken from each video (every frame, or every k-th starting at the first), given to pytorch-fid's
Inception as [0, 1] images (uint8 / 255, as its loader's ToTensor does), and the pool3 features gathered in
FeatureStats batch by batch, sharded over the local devices (emo_jax/eval/extract.py). The network and its
preprocessing are emo_jax/eval/inception.py's.
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp

from emo_jax.eval.extract import ShardedExtractor
from emo_jax.eval.frechet import FeatureStats, frechet_distance_between
from emo_jax.eval.inception import FEATURES, FIDInception

FEATURE = "inception_pool3"


def inception_extractor(module: FIDInception, params: Any, batch_size: int,
                        devices: Sequence[jax.Device] | None = None) -> ShardedExtractor:
    """Frames uint8 [N, H, W, 3] -> pool3 features [N, 2048], sharded over `devices`."""
    return ShardedExtractor(lambda p, frames: module.apply({"params": p}, frames.astype(jnp.float32) / 255.0),
                            params, batch_size, devices)


def new_stats() -> FeatureStats:
    return FeatureStats(FEATURE, FEATURES)


def fid(generated: FeatureStats, reference: FeatureStats) -> float:
    return frechet_distance_between(generated, reference)
