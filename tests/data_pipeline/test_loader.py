"""Tests for data_pipeline/loader.py on the shards of the shared emo-prepare run."""
import dataclasses
import itertools

import cv2
import numpy as np
import pytest

from data_pipeline.loader import ClipSampler, LoaderConfig, make_dataset, segment_dataset, shard_paths, shard_records
from data_pipeline.schema import SegmentRecord
from emo_jax.audio.features import add_context
from emo_jax.batch import batch_spec, check_batch
from emo_jax.config import load_config
from synthetic_videos import FPS, SR


def _take(iterator, n):
    return list(itertools.islice(iterator, n))


@pytest.mark.parametrize("workers", [0, 1])
def test_restored_iterator_continues_exactly(prepared, workers):
    records = shard_records(shard_paths(str(prepared[1])))
    cfg = LoaderConfig(stage=2, batch_size=2, seed=3, workers=workers)
    iterator = iter(make_dataset(records, cfg))
    _take(iterator, 3)
    state = iterator.get_state()
    expected = _take(iterator, 10)
    restored = iter(make_dataset(records, cfg))
    restored.set_state(state)
    got = _take(restored, 10)
    for a, b in zip(expected, got, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    other_seed = _take(iter(make_dataset(records, dataclasses.replace(cfg, seed=4))), 13)[3:]
    assert any(not np.array_equal(a["target"], b["target"]) for a, b in zip(expected, other_seed))


def test_processes_see_disjoint_equal_shares(prepared):
    records = shard_records(shard_paths(str(prepared[1])))
    seen = []
    for index in range(2):
        ds = segment_dataset(records, seed=0, process_index=index, process_count=2)
        seen.append({(r.source, r.segment_index) for r in (ds[i] for i in range(2))})  # one epoch: 5 // 2
    assert len(seen[0]) == len(seen[1]) == 2 and not seen[0] & seen[1]
    epoch2 = {(r.source, r.segment_index) for r in (segment_dataset(records, 0, 0, 2)[i] for i in range(2, 4))}
    assert epoch2 == seen[0]  # the next epoch reshuffles the same share


def test_stage_batches_have_the_documented_shapes(prepared):
    records = shard_records(shard_paths(str(prepared[1])))
    image = next(iter(make_dataset(records, LoaderConfig(stage=1, batch_size=3))))
    assert image["target"].shape == image["reference"].shape == (3, 64, 64, 3)
    assert image["face_mask"].shape == (3, 64, 64) and image["target"].dtype == np.uint8
    video = next(iter(make_dataset(records, LoaderConfig(stage=3, batch_size=2))))
    assert video["motion"].shape == (2, 4, 64, 64, 3) and video["target"].shape == (2, 12, 64, 64, 3)
    assert video["reference"].shape == (2, 64, 64, 3) and video["face_mask"].shape == (2, 64, 64)
    assert video["speed"].shape == (2, 12) and video["audio"].shape == (2, round(16 * SR / FPS))


def test_loader_batches_are_what_the_batch_spec_says(prepared):
    """emo_jax.batch describes the loader's output; data prepared at another size is named, not trained on."""
    records = shard_records(shard_paths(str(prepared[1])))
    for variant, batch_size in (("stage1", 3), ("stage3", 2)):
        config = load_config(f"configs/emo_512.py:{variant}")
        config.data.update(size=64, fps=FPS)
        m = config.model
        batch = next(iter(make_dataset(records, LoaderConfig(stage=config.train.stage, batch_size=batch_size,
                                                             motion_frames=m.motion_frames, clip_frames=m.clip_frames,
                                                             context=m.audio.context))))
        fields = check_batch(batch_spec(config), batch)
        assert set(batch) == {f.name for f in fields.values()}  # the synthetic records carry no latents
        config.data.size = 32
        with pytest.raises(ValueError, match=r"'target' is uint8 \(.*64, 64, 3\).* expects uint8 \(.*32, 32, 3\) "
                                             r"\(from data.size"):
            check_batch(batch_spec(config), batch)


def _numbered_record(n=40, size=8) -> SegmentRecord:
    """Frame t is a flat grey of level 5 t; its audio window holds the value t + 1; speed, features, latents = t."""
    frames = [cv2.imencode(".png", np.full((size, size, 3), 5 * t, np.uint8))[1].tobytes() for t in range(n)]
    audio = np.zeros(round(n * SR / FPS), np.float32)
    boxes = np.tile(np.array([[1, 1, 3, 3]], np.float32), (n, 1))
    boxes[20:, :] = [4, 4, 7, 7]
    record = SegmentRecord("x.mp4", 0, 0, float(FPS), size, frames, boxes, np.zeros(4, np.float32),
                           np.zeros((size, size), np.uint8), np.arange(n, dtype=np.float32), "flow", audio, SR,
                           audio_features=np.broadcast_to(np.arange(n, dtype=np.float16)[:, None, None], (n, 2, 3)),
                           latents=np.broadcast_to(np.arange(n, dtype=np.float16)[:, None, None, None], (n, 1, 1, 4)))
    for t in range(n):
        audio[record.audio_window(t)] = t + 1
    return record


def _index(frame):
    return int(round(frame.mean() / 5))


def test_video_clip_is_contiguous_and_audio_speed_follow_the_target():
    record = _numbered_record()
    sampler = ClipSampler(LoaderConfig(stage=2, batch_size=1))
    for seed in range(20):
        clip = sampler(record, np.random.default_rng(seed))
        motion = [_index(f) for f in clip["motion"]]
        target = [_index(f) for f in clip["target"]]
        first = motion[0]
        assert motion + target == list(range(first, first + 16))
        assert not first <= _index(clip["reference"]) < first + 16
        np.testing.assert_array_equal(clip["speed"], target)  # the target frames' speeds
        # Audio value k + 1 marks frame k; frames before 0 or after 39 are silence.
        frames_heard = np.unique(clip["audio"][clip["audio"] > 0]) - 1
        np.testing.assert_array_equal(frames_heard, np.arange(max(first + 2, 0), min(first + 18, 40)))
        in_box = clip["face_mask"].astype(bool)
        assert in_box[2, 2] == (first + 4 < 20) and in_box[5, 5] == (first + 15 >= 20)
        # Target frame k's features: frames k - 2 ... k + 2 of the segment, the edge frame repeated past its ends.
        assert clip["audio_features"].shape == (12, 5, 2, 3) and clip["audio_features"].dtype == np.float32
        expected_windows = np.clip(np.arange(first + 4, first + 16)[:, None] + np.arange(-2, 3), 0, 39)
        np.testing.assert_array_equal(clip["audio_features"][:, :, 0, 0], expected_windows)
        np.testing.assert_array_equal(clip["audio_features"], add_context(record.audio_features, 2)[first + 4 : first + 16])
        np.testing.assert_array_equal(clip["motion_latents"][:, 0, 0, 0], motion)
        np.testing.assert_array_equal(clip["target_latents"][:, 0, 0, 0], target)
        assert clip["reference_latent"][0, 0, 0] == _index(clip["reference"])


def test_image_reference_keeps_the_margin():
    record = _numbered_record(n=20)
    sampler = ClipSampler(LoaderConfig(stage=1, batch_size=1, reference_margin=12))
    for seed in range(30):
        pair = sampler(record, np.random.default_rng(seed))
        assert abs(_index(pair["target"]) - _index(pair["reference"])) >= 12
        assert pair["target_latent"][0, 0, 0] == _index(pair["target"]) and pair["target_latent"].shape == (1, 1, 4)
        assert pair["reference_latent"][0, 0, 0] == _index(pair["reference"])
    with pytest.raises(ValueError, match="reference_margin"):
        ClipSampler(LoaderConfig(stage=1, batch_size=1, reference_margin=20))(record, np.random.default_rng(0))


def test_prepared_features_and_latents_reach_the_batches(encoded):
    records = shard_records(shard_paths(str(encoded[1])))
    image = next(iter(make_dataset(records, LoaderConfig(stage=1, batch_size=2))))
    assert image["target_latent"].shape == image["reference_latent"].shape == (2, 32, 32, 4)
    video = next(iter(make_dataset(records, LoaderConfig(stage=2, batch_size=2, context=1))))
    assert video["audio_features"].shape == (2, 12, 3, 2, 16) and video["audio_features"].dtype == np.float32
    assert video["motion_latents"].shape == (2, 4, 32, 32, 4) and video["target_latents"].shape == (2, 12, 32, 32, 4)
    assert video["reference_latent"].shape == (2, 32, 32, 4)
    assert video["target"].shape == (2, 12, 64, 64, 3)  # the raw fields stay


def test_records_without_features_or_latents_add_no_fields(prepared):
    video = next(iter(make_dataset(shard_records(shard_paths(str(prepared[1]))), LoaderConfig(stage=2, batch_size=1))))
    assert set(video) == {"motion", "target", "reference", "face_mask", "speed", "audio"}
