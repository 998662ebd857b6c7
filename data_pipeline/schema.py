"""The segment record stored in ArrayRecord shards: fields, version, and its msgpack serialisation.

One record = one video segment (3-12 s, one shot, face visible throughout), schema version 3:

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
    speed              f32 [T]  head-rotation speed per frame, in the unit of `speed_estimator` (data_pipeline/speed.py
                                UNITS: "head_pose" gives degrees per frame, the model's unit)
    speed_estimator    str      name of the estimator that produced `speed`
    audio              f32 [N]  mono audio, N = round(T / fps * audio_sample_rate); frame t owns samples
                                [round(t * sr / fps), round((t + 1) * sr / fps))
    audio_sample_rate  int      16000
    audio_features     f16 [T, L, D] or None   (v2) wav2vec2 hidden states of the L transformer layers (no
                                embedding layer) resampled to the frames, no context: emo_jax.audio.features
                                run on the whole source's audio (normalised over the source), then sliced to
                                the segment, so frames at a segment's edges saw the real audio around them
    latents            f16 [T, h, w, C] or None   (v2) VAE posterior mean * scaling factor of every frame,
                                encoded from the decoded `frames_jpeg` (what the loader shows), h = w = size / the
                                VAE's downsampling factor (8 for SD's VAE)
    landmarks          f16 [T, 468, 3] or None   (v3) MediaPipe Face Mesh points in frame pixels (x, y; z is depth
                                in the same scale, relative to the face), NaN rows where the mesh lost the face
    head_pose          f32 [T, 6] or None   (v3) yaw, pitch, roll in degrees and translation x, y (frame pixels),
                                z (relative) of the head, from the landmarks (emo_jax/faces/head_pose.py); NaN where lost
    lip_mask           u8 [size, size] or None   (v3) 1 inside the union over the segment's frames of the hull of
                                the lip landmarks (Hallo-style masked audio attention can weight the mouth with it)
    mesh_face_mask     u8 [size, size] or None   (v3) the same union for the hull of all 468 landmarks: the face
                                itself, where `face_mask` is the union of the detector's boxes (the face locator's input)

Version 1 is version 2 without audio_features and latents; version 2 is version 3 without the last four keys.
Both still decode, with the missing fields None. None fields are msgpack nil: emo-prepare computes the encoder
fields only when given --wav2vec / --vae, and the landmark fields only with the head_pose speed estimator.

Serialisation: a msgpack map with exactly these keys. Arrays are maps {"dtype", "shape", "data"} holding
little-endian raw bytes, so a record decodes with msgpack and numpy alone, in any language with msgpack,
and no pickle is ever involved (shards are data, not code). A reader refuses a version it does not know.
"""
from __future__ import annotations

import dataclasses

import cv2
import msgpack
import numpy as np

from emo_jax.errors import SchemaError

SCHEMA_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)

_ARRAY_FIELDS = {"face_boxes": np.float32, "crop_box": np.float32, "face_mask": np.uint8, "speed": np.float32,
                 "audio": np.float32}
_OPTIONAL_ARRAY_FIELDS = {"audio_features": np.float16, "latents": np.float16,  # new in version 2
                          "landmarks": np.float16, "head_pose": np.float32, "lip_mask": np.uint8,  # version 3
                          "mesh_face_mask": np.uint8}
# The per-frame conditioning signals among the fields ([T, ...], one value per frame): the loader hands out each
# one's values for a clip's target frames under the same name, which is the model's Condition field for it
# (emo_jax/models/condition.py, frame_signal).
FRAME_SIGNALS = ("speed",)
_ADDED_IN = {"audio_features": 2, "latents": 2, "landmarks": 3, "head_pose": 3, "lip_mask": 3, "mesh_face_mask": 3}


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
    audio_features: np.ndarray | None = None
    latents: np.ndarray | None = None
    landmarks: np.ndarray | None = None
    head_pose: np.ndarray | None = None
    lip_mask: np.ndarray | None = None
    mesh_face_mask: np.ndarray | None = None
    version: int = SCHEMA_VERSION

    @property
    def num_frames(self) -> int:
        return len(self.frames_jpeg)

    def audio_window(self, t: int) -> slice:
        """The samples of `audio` that play during frame t."""
        per_frame = self.audio_sample_rate / self.fps
        return slice(round(t * per_frame), round((t + 1) * per_frame))


def decode_jpeg(data: bytes) -> np.ndarray:
    """RGB uint8 [size, size, 3] of one `frames_jpeg` entry; the loader and the VAE encoder both read frames so."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


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
    if record.audio_features is not None:
        assert record.audio_features.ndim == 3 and len(record.audio_features) == t, record.audio_features.shape
    if record.latents is not None:
        shape = record.latents.shape
        assert len(shape) == 4 and shape[0] == t and shape[1] == shape[2] and s % shape[1] == 0, shape
    if record.landmarks is not None:
        assert record.landmarks.shape == (t, 468, 3), record.landmarks.shape
    if record.head_pose is not None:
        assert record.head_pose.shape == (t, 6), record.head_pose.shape
    for mask in (record.lip_mask, record.mesh_face_mask):
        assert mask is None or mask.shape == (s, s), mask.shape


def encode_record(record: SegmentRecord) -> bytes:
    """Serialises a record to msgpack bytes in the current schema version (above)."""
    _check(record)
    fields = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
    fields["version"] = SCHEMA_VERSION
    for name, dtype in {**_ARRAY_FIELDS, **_OPTIONAL_ARRAY_FIELDS}.items():
        if fields[name] is not None:
            fields[name] = _pack_array(fields[name], dtype)
    return msgpack.packb(fields, use_bin_type=True)


def decode_record(data: bytes) -> SegmentRecord:
    """Parses bytes written by encode_record; refuses unknown versions and malformed records."""
    try:
        fields = msgpack.unpackb(data, raw=False)
    except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, ValueError) as e:
        raise SchemaError(f"record is not valid msgpack ({e}); the shard is corrupt, re-run emo-prepare") from e
    if not isinstance(fields, dict) or "version" not in fields:
        raise SchemaError("record has no 'version' field; it was not written by emo-prepare")
    version = fields["version"]
    if version not in READABLE_VERSIONS:
        raise SchemaError(
            f"record schema version {version} is not one of the readable versions {READABLE_VERSIONS}; "
            "re-run emo-prepare with this emo-jax version, or use the emo-jax version that wrote the shards"
        )
    expected = {f.name for f in dataclasses.fields(SegmentRecord)}
    expected -= {name for name, added in _ADDED_IN.items() if added > version}
    if set(fields) != expected:
        raise SchemaError(f"record fields {sorted(fields)} differ from schema v{version} {sorted(expected)}")
    for name in _ARRAY_FIELDS:
        fields[name] = _unpack_array(fields[name])
    for name in _OPTIONAL_ARRAY_FIELDS:
        fields[name] = None if fields.get(name) is None else _unpack_array(fields[name])
    return SegmentRecord(**fields)
