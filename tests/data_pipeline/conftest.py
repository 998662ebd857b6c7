"""emo-prepare runs over the synthetic inputs, shared by the data pipeline tests."""
import dataclasses

import pytest

from data_pipeline.prepare import prepare
from synthetic_videos import TEST_CONFIG, make_inputs
from tiny_encoders import save_tiny_encoders


@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
    """(inputs by role, output folder, manifest) of one emo-prepare run with two worker processes."""
    root = tmp_path_factory.mktemp("prepare")
    inputs = make_inputs(root / "raw")
    output = root / "out"
    manifest = prepare(sorted(inputs.values()), str(output), TEST_CONFIG, workers=2)
    return inputs, output, manifest


@pytest.fixture(scope="session")
def encoded(prepared, tmp_path_factory):
    """(inputs by role, output folder, wav2vec folder, vae folder) of emo-prepare with both encoders."""
    inputs = prepared[0]
    root = tmp_path_factory.mktemp("encoded")
    wav2vec, vae = save_tiny_encoders(str(root))
    cfg = dataclasses.replace(TEST_CONFIG, wav2vec=wav2vec, vae=vae)
    prepare([inputs["still"], inputs["cut"]], str(root / "out"), cfg, workers=1)
    return inputs, root / "out", wav2vec, vae
