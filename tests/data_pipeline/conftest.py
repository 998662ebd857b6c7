"""One emo-prepare run over the synthetic inputs, shared by the data pipeline tests."""
import pytest

from data_pipeline.prepare import prepare
from synthetic_videos import TEST_CONFIG, make_inputs


@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
    """(inputs by role, output folder, manifest) of one emo-prepare run with two worker processes."""
    root = tmp_path_factory.mktemp("prepare")
    inputs = make_inputs(root / "raw")
    output = root / "out"
    manifest = prepare(sorted(inputs.values()), str(output), TEST_CONFIG, workers=2)
    return inputs, output, manifest
