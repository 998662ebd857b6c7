"""TFDS builder "emo_segments": emo-prepare over a manual_dir of videos, stored as TFDS array_record files.

    import tensorflow_datasets as tfds
    from data_pipeline.tfds_builder import EmoSegments, EmoSegmentsConfig, tfds_records
    config = EmoSegmentsConfig(name="hdtf512", prepare=PrepareConfig(vae="sd15/vae"), workers=8)  # DirectRunner
    EmoSegments(config=config, data_dir=D, file_format="array_record").download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir="HDTF/videos"))
    batches = make_dataset(tfds_records(D, "hdtf512"), LoaderConfig(stage=2, batch_size=4))

Each example is one segment: `record` holds the same bytes as an emo-prepare shard record (schema.py), beside
`source` and `segment_index` for inspection. Generation runs data_pipeline.prepare.prepare() into
<data_dir>/downloads/emo_prepare/<config name> and copies its records, so preparation is the very same Beam
pipeline as emo-prepare's (data_pipeline/beam_prepare.py: `runner` and `beam_args` choose where it runs; the
DirectRunner with `workers` processes by default), resumes after an interruption, and logs and counts skipped inputs (also stored in
the dataset's metadata.json). TFDS reuses a finished dataset without regenerating it; building one whose
stored settings differ from the config's is refused. TensorFlow is not needed (tested with TFDS 4.9.10 alone).
"""
from __future__ import annotations

import dataclasses
import os

import grain
import numpy as np
import tensorflow_datasets as tfds
from array_record.python.array_record_module import ArrayRecordReader

from data_pipeline.extract import PrepareConfig
from data_pipeline.prepare import find_inputs, prepare
from data_pipeline.schema import SCHEMA_VERSION, decode_record

NAME = "emo_segments"


@dataclasses.dataclass(eq=False)
class EmoSegmentsConfig(tfds.core.BuilderConfig):
    """A named preparation setting; `workers`, `runner` and `beam_args` only set where and how wide it runs."""

    prepare: PrepareConfig = PrepareConfig()
    workers: int = 1
    runner: str = "DirectRunner"
    beam_args: tuple[str, ...] = ()


def _settings(config: EmoSegmentsConfig) -> dict:
    return {"schema_version": SCHEMA_VERSION, **dataclasses.asdict(config.prepare.with_absolute_paths())}


class EmoSegments(tfds.core.GeneratorBasedBuilder):
    """Talking-head video segments prepared by emo-prepare (one example per segment)."""

    VERSION = tfds.core.Version(f"{SCHEMA_VERSION}.0.0")  # major version = record schema version
    BUILDER_CONFIGS = [EmoSegmentsConfig(name="default", description="emo-prepare defaults: 30 fps, 512 px")]
    MANUAL_DOWNLOAD_INSTRUCTIONS = ("Put the videos (any folder tree of mp4/mov/mkv/avi/webm/m4v files, e.g. "
                                    "HDTF's clips) in manual_dir.")

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # A finished dataset restores its metadata from disk; TFDS would reuse it whatever the config says.
        stored, wanted = self.info.metadata.get("settings", {}), _settings(self.builder_config)
        if self.is_prepared() and stored != wanted:
            changed = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
            raise ValueError(f"{self.data_path} was built with other settings ({', '.join(changed)}); give the "
                             "config another name or delete that folder")

    def is_prepared(self) -> bool:
        """Whether this version and config are already generated under data_dir."""
        return os.path.isfile(os.path.join(os.fspath(self.data_path), "dataset_info.json"))

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__.split("\n")[0],
            features=tfds.features.FeaturesDict({
                "record": tfds.features.Tensor(shape=(), dtype=np.object_),
                "source": tfds.features.Text(),
                "segment_index": tfds.features.Scalar(dtype=np.int32),
            }),
            metadata=tfds.core.MetadataDict(settings=_settings(self.builder_config)),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        inputs = find_inputs(os.fspath(dl_manager.manual_dir))
        work = os.path.join(os.fspath(dl_manager.download_dir), "emo_prepare", self.builder_config.name)
        config = self.builder_config
        manifest = prepare(inputs, work, config.prepare, workers=config.workers, runner=config.runner,
                           beam_args=config.beam_args)
        self.info.metadata["skipped_counts"] = manifest["skipped_counts"]
        self.info.metadata["skipped"] = manifest["skipped"]
        return {"train": self._generate_examples([os.path.join(work, s) for s in manifest["shards"]])}

    def _generate_examples(self, shards: list[str]):
        for shard in shards:
            reader = ArrayRecordReader(shard)
            try:
                for i in range(reader.num_records()):
                    data = reader.read([i])[0]  # one at a time: a long video's records with latents fill GBs
                    record = decode_record(data)
                    key = f"{os.path.basename(shard)}#{record.segment_index}"
                    yield key, {"record": data, "source": record.source, "segment_index": record.segment_index}
            finally:
                reader.close()


def _record_bytes(example: dict) -> bytes:
    return example["record"]


def tfds_records(data_dir: str, config_name: str = "default", split: str = "train") -> grain.MapDataset:
    """The serialised segment records of a built emo_segments dataset, for data_pipeline.loader.make_dataset."""
    source = tfds.data_source(f"{NAME}/{config_name}", data_dir=data_dir, split=split)
    return grain.MapDataset.source(source).map(_record_bytes)
