"""Shared set-up of the trainer tests: one prepared dataset and the compilation cache folder.

Every test that compiles a train step uses the same config and mesh where it can, and XLA's persistent
compilation cache (shared with the subprocesses) turns a repeated compile into a cache read.
"""
import pathlib
import sys

import jax
import numpy as np
import pytest

from data_pipeline.extract import PrepareConfig
from data_pipeline.prepare import prepare

sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "data_pipeline"))
from synthetic_videos import FPS, SIDE, face_frames, tone_with_click, write_mp4  # noqa: E402


@pytest.fixture(scope="session")
def compile_cache(tmp_path_factory) -> str:
    """XLA's persistent compilation cache folder (tests/conftest.py sets one), handed to the subprocesses too."""
    if not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("xla_cache")))
    return jax.config.jax_compilation_cache_dir


@pytest.fixture(scope="session")
def prepared(tmp_path_factory) -> str:
    """emo-prepare output of two 2-second synthetic talking heads at 32 px, 25 fps: four 1-second segments."""
    root = tmp_path_factory.mktemp("train_data")
    n = 2 * FPS
    still = write_mp4(root / "still.mp4", face_frames(n), tone_with_click(2, 20))
    moving = write_mp4(root / "moving.mp4", face_frames(n, centre_x=lambda t: SIDE / 2 + 22 * np.sin(t / 5)),
                       tone_with_click(2, None))
    prepare([still, moving], str(root / "out"), PrepareConfig(fps=25, size=32, min_seconds=0.5, max_seconds=1.0))
    return str(root / "out")

