"""Tests for data_pipeline/schema.py."""
import msgpack
import numpy as np
import pytest

from data_pipeline.schema import SCHEMA_VERSION, SegmentRecord, decode_record, encode_record
from emo_jax.errors import SchemaError


def _record(t: int = 3) -> SegmentRecord:
    rng = np.random.default_rng(0)
    return SegmentRecord(
        source="a.mp4", segment_index=2, start_frame=30, fps=30.0, size=8,
        frames_jpeg=[bytes([i]) * 5 for i in range(t)],
        face_boxes=rng.uniform(0, 8, (t, 4)).astype(np.float32), crop_box=np.array([0, 0, 16, 16], np.float32),
        face_mask=(rng.uniform(size=(8, 8)) > 0.5).astype(np.uint8), speed=rng.uniform(size=t).astype(np.float32),
        speed_estimator="flow", audio=rng.normal(size=round(t / 30 * 16000)).astype(np.float32),
        audio_sample_rate=16000,
    )


def test_roundtrip_keeps_every_field_exactly():
    record = _record()
    back = decode_record(encode_record(record))
    assert back.version == SCHEMA_VERSION
    for name in ("source", "segment_index", "start_frame", "fps", "size", "frames_jpeg", "speed_estimator",
                 "audio_sample_rate"):
        assert getattr(back, name) == getattr(record, name)
    for name in ("face_boxes", "crop_box", "face_mask", "speed", "audio"):
        np.testing.assert_array_equal(getattr(back, name), getattr(record, name))
        assert getattr(back, name).dtype == getattr(record, name).dtype


def test_audio_window_partitions_the_audio():
    record = _record(t=7)
    windows = [record.audio_window(t) for t in range(7)]
    assert windows[0].start == 0 and windows[-1].stop == len(record.audio)
    assert all(a.stop == b.start for a, b in zip(windows[:-1], windows[1:]))


def test_unknown_version_and_garbage_are_refused():
    fields = msgpack.unpackb(encode_record(_record()))
    fields["version"] = SCHEMA_VERSION + 1
    with pytest.raises(SchemaError, match="version"):
        decode_record(msgpack.packb(fields, use_bin_type=True))
    with pytest.raises(SchemaError):
        decode_record(b"\xc1 not msgpack")
    del fields["speed"]
    fields["version"] = SCHEMA_VERSION
    with pytest.raises(SchemaError, match="fields"):
        decode_record(msgpack.packb(fields, use_bin_type=True))


def test_version_2_fields_roundtrip_as_float16():
    record = _record()
    record.audio_features = np.linspace(-3, 3, 3 * 2 * 4, dtype=np.float32).reshape(3, 2, 4)
    record.latents = np.full((3, 1, 1, 4), 0.5, np.float32)
    back = decode_record(encode_record(record))
    assert back.audio_features.dtype == back.latents.dtype == np.float16
    np.testing.assert_allclose(back.audio_features, record.audio_features, rtol=1e-3)
    np.testing.assert_array_equal(back.latents, record.latents)
    assert decode_record(encode_record(_record())).latents is None


def test_version_3_landmark_fields_roundtrip():
    record = _record()
    record.landmarks = np.linspace(-40, 500, 3 * 468 * 3, dtype=np.float32).reshape(3, 468, 3)
    record.landmarks[1] = np.nan  # a frame where the mesh lost the face
    record.head_pose = np.arange(18, dtype=np.float32).reshape(3, 6) - 9.5
    record.lip_mask = np.eye(8, dtype=np.uint8)
    record.mesh_face_mask = 1 - np.eye(8, dtype=np.uint8)
    back = decode_record(encode_record(record))
    assert back.landmarks.dtype == np.float16 and np.isnan(back.landmarks[1]).all()
    np.testing.assert_allclose(back.landmarks, record.landmarks, atol=0.25)  # f16 spacing at 256-512 px
    np.testing.assert_array_equal(back.head_pose, record.head_pose)
    np.testing.assert_array_equal(back.lip_mask, record.lip_mask)
    np.testing.assert_array_equal(back.mesh_face_mask, record.mesh_face_mask)
    bare = decode_record(encode_record(_record()))
    assert bare.landmarks is None and bare.head_pose is None and bare.lip_mask is None and bare.mesh_face_mask is None


@pytest.mark.parametrize("version, missing", [(1, ("audio_features", "latents", "landmarks", "head_pose",
                                                    "lip_mask", "mesh_face_mask")),
                                              (2, ("landmarks", "head_pose", "lip_mask", "mesh_face_mask"))])
def test_older_versions_still_decode(version, missing):
    fields = msgpack.unpackb(encode_record(_record()))
    for name in missing:
        del fields[name]
    fields["version"] = version
    back = decode_record(msgpack.packb(fields, use_bin_type=True))
    assert back.version == version and all(getattr(back, name) is None for name in missing)
    np.testing.assert_array_equal(back.audio, _record().audio)
    fields[missing[-1]] = None  # an older record has no place for it
    with pytest.raises(SchemaError, match=f"v{version}"):
        decode_record(msgpack.packb(fields, use_bin_type=True))


def test_the_records_per_frame_signals_are_the_models():
    """The loader hands out the record fields schema.FRAME_SIGNALS names under the model's Condition names, so the
    two lists are one list: each signal has a record field of its name, [T, *shape] in the model's dtype."""
    from data_pipeline.schema import _ARRAY_FIELDS, _OPTIONAL_ARRAY_FIELDS, FRAME_SIGNALS
    from emo_jax.models.condition import frame_signals

    assert set(FRAME_SIGNALS) == set(frame_signals())
    record = _record(t=3)
    for name, (shape, dtype) in frame_signals().items():
        assert np.dtype({**_ARRAY_FIELDS, **_OPTIONAL_ARRAY_FIELDS}[name]) == np.dtype(dtype), name
        value = getattr(record, name)  # a field new in a later version may be None in this record
        assert value is None or value.shape == (3,) + shape, name
