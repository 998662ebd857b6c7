"""The TFDS builder (data_pipeline/tfds_builder.py): build from a manual_dir, read back through tfds.data_source."""
import dataclasses
import shutil

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets", reason="the 'tfds' extra (tensorflow-datasets) is not installed")

from array_record.python.array_record_module import ArrayRecordReader  # noqa: E402

from data_pipeline import beam_prepare  # noqa: E402
from data_pipeline.loader import LoaderConfig, make_dataset  # noqa: E402
from data_pipeline.prepare import input_id  # noqa: E402
from data_pipeline.schema import SCHEMA_VERSION, decode_record, encode_record  # noqa: E402
from data_pipeline.tfds_builder import EmoSegments, EmoSegmentsConfig, tfds_records  # noqa: E402
from synthetic_videos import TEST_CONFIG  # noqa: E402


def _build(data_dir, manual_dir, prepare_config):
    config = EmoSegmentsConfig(name="tiny64", prepare=prepare_config)
    builder = EmoSegments(config=config, data_dir=str(data_dir), file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
    return builder


def test_tfds_dataset_holds_the_emo_prepare_records_and_feeds_the_loader(prepared, tmp_path, monkeypatch):
    inputs, output, _ = prepared
    manual = tmp_path / "manual"
    manual.mkdir()
    roles = {role: str(shutil.copy(inputs[role], manual / f"{role}.mp4")) for role in ("still", "cut", "no_face")}
    pipelines = []
    real = beam_prepare.run_pipeline
    monkeypatch.setattr(beam_prepare, "run_pipeline", lambda *a, **k: pipelines.append(a[4]) or real(*a, **k))
    builder = _build(tmp_path / "tfds", manual, TEST_CONFIG)
    assert pipelines == ["DirectRunner"]  # built by emo-prepare's Beam pipeline
    assert builder.info.splits["train"].num_examples == 3
    assert builder.info.metadata["skipped_counts"] == {"no_face": 1}
    assert list((tmp_path / "tfds" / "emo_segments" / "tiny64" / f"{SCHEMA_VERSION}.0.0").glob("*.array_record-*"))

    records = tfds_records(str(tmp_path / "tfds"), "tiny64")
    got = {(r.source, r.segment_index): data for data in (records[i] for i in range(len(records)))
           for r in [decode_record(data)]}
    assert sorted(got) == sorted([(roles["still"], 0), (roles["cut"], 0), (roles["cut"], 1)])
    # Byte for byte the records emo-prepare wrote for the same videos, up to the source path.
    for role in ("still", "cut"):
        reader = ArrayRecordReader(str(output / "shards" / f"{input_id(inputs[role])}.array_record"))
        for data in reader.read(list(range(reader.num_records()))):
            expected = decode_record(data)
            ours = decode_record(got[(roles[role], expected.segment_index)])
            assert encode_record(dataclasses.replace(ours, source=expected.source)) == data
        reader.close()

    batch = next(iter(make_dataset(records, LoaderConfig(stage=2, batch_size=2))))
    assert batch["target"].shape == (2, 12, 64, 64, 3) and batch["target"].dtype == np.uint8

    # Same name, other settings: refused rather than silently reusing the finished dataset.
    with pytest.raises(ValueError, match=r"\(size\)"):
        _build(tmp_path / "tfds", manual, dataclasses.replace(TEST_CONFIG, size=32))
