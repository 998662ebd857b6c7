"""The segment record stored in ArrayRecord shards: fields, version, and its msgpack serialisation.

One record = one video segment (3-12 s, one shot, face visible throughout), schema version 1:

    version            int      SCHEMA_VERSION of the writer
    source             str      input path as given to emo-prepare
    segment_index      int      0, 1, ... in time order within the source
    start_frame        int      index of the segment's first frame on the source's resampled timeline
    fps                float    frame rate of `frames_jpeg` (the source resampled by timestamps)
    size               int      frames are size x size pixels
    frames_jpeg        [bytes]  T baseline JPEGs (RGB, size x size), one per frame
    face_boxes         f32 [T, 4]  per-frame face box (x0, y0, x1, y1) in frame pixels, temporally smoothed
    crop_box           f32 [4]  the segment's fixed crop window (x0, y0, x1, y1) in displayed source pixels
    face_mask          u8 [size, size]  1 inside the union of the segment's face boxes (face locator input)
    speed              f32 [T]  head-rotation speed proxy per frame (see data_pipeline/speed.py for units)
    speed_estimator    str      name of the estimator that produced `speed`
    audio              f32 [N]  mono audio, N = round(T / fps * audio_sample_rate); frame t owns samples
                                [round(t * sr / fps), round((t + 1) * sr / fps))
    audio_sample_rate  int      16000

Serialisation: a msgpack map with exactly these keys. Arrays are maps {"dtype", "shape", "data"} holding
little-endian raw bytes, so a record decodes with msgpack and numpy alone, in any language with msgpack,
and no pickle is ever involved (shards are data, not code). A reader refuses a version it does not know.
"""
from __future__ import annotations

import dataclasses

import msgpack
import numpy as np

SCHEMA_VERSION = 1

_ARRAY_FIELDS = {"face_boxes": np.float32, "crop_box": np.float32, "face_mask": np.uint8, "speed": np.float32,
                 "audio": np.float32}


class SchemaError(ValueError):
    """A record's bytes are not a segment record this version of emo-jax can read."""


@dataclasses.dataclass
class SegmentRecord:
    """One prepared video segment; field meanings are in this module's docstring."""

    source: str
    segment_index: int
    start_frame: int
    fps: float
    size: int
    frames_jpeg: list[bytes]
    face_boxes: np.ndarray
    crop_box: np.ndarray
    face_mask: np.ndarray
    speed: np.ndarray
    speed_estimator: str
    audio: np.ndarray
    audio_sample_rate: int
    version: int = SCHEMA_VERSION

    @property
    def num_frames(self) -> int:
        return len(self.frames_jpeg)

    def audio_window(self, t: int) -> slice:
        """The samples of `audio` that play during frame t."""
        per_frame = self.audio_sample_rate / self.fps
        return slice(round(t * per_frame), round((t + 1) * per_frame))


def _pack_array(x: np.ndarray, dtype: type) -> dict:
    x = np.ascontiguousarray(x, dtype=np.dtype(dtype).newbyteorder("<"))
    return {"dtype": x.dtype.str, "shape": list(x.shape), "data": x.tobytes()}


def _unpack_array(d: dict) -> np.ndarray:
    return np.frombuffer(d["data"], dtype=np.dtype(d["dtype"])).reshape(d["shape"]).astype(
        np.dtype(d["dtype"]).newbyteorder("="))


def _check(record: SegmentRecord) -> None:
    t, s = record.num_frames, record.size
    assert record.face_boxes.shape == (t, 4), record.face_boxes.shape
    assert record.speed.shape == (t,), record.speed.shape
    assert record.face_mask.shape == (s, s), record.face_mask.shape
    assert record.crop_box.shape == (4,), record.crop_box.shape
    assert record.audio.shape == (round(t / record.fps * record.audio_sample_rate),), record.audio.shape


def encode_record(record: SegmentRecord) -> bytes:
    """Serialises a record to msgpack bytes (schema above)."""
    _check(record)
    fields = dataclasses.asdict(record)
    for name, dtype in _ARRAY_FIELDS.items():
        fields[name] = _pack_array(getattr(record, name), dtype)
    return msgpack.packb(fields, use_bin_type=True)


def decode_record(data: bytes) -> SegmentRecord:
    """Parses bytes written by encode_record; refuses unknown versions and malformed records."""
    try:
        fields = msgpack.unpackb(data, raw=False)
    except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, ValueError) as e:
        raise SchemaError(f"record is not valid msgpack ({e}); the shard is corrupt, re-run emo-prepare") from e
    if not isinstance(fields, dict) or "version" not in fields:
        raise SchemaError("record has no 'version' field; it was not written by emo-prepare")
    if fields["version"] != SCHEMA_VERSION:
        raise SchemaError(
            f"record schema version {fields['version']} is not the supported version {SCHEMA_VERSION}; "
            "re-run emo-prepare with this emo-jax version, or use the emo-jax version that wrote the shards"
        )
    expected = {f.name for f in dataclasses.fields(SegmentRecord)}
    if set(fields) != expected:
        raise SchemaError(f"record fields {sorted(fields)} differ from schema v{SCHEMA_VERSION} {sorted(expected)}")
    for name in _ARRAY_FIELDS:
        fields[name] = _unpack_array(fields[name])
    return SegmentRecord(**fields)
