"""emo-prepare with --wav2vec and --vae (data_pipeline/encoders.py) on tiny random encoders."""
import dataclasses
import json
import os
import shutil

import numpy as np
import pytest
from array_record.python.array_record_module import ArrayRecordReader

import data_pipeline.prepare as prepare_module
from data_pipeline.prepare import input_id, prepare
from data_pipeline.schema import SCHEMA_VERSION, decode_jpeg, decode_record
from emo_jax.cli.prepare import main
from emo_jax.audio.features import audio_features
from emo_jax.interop.vae_import import load_vae
from emo_jax.interop.wav2vec2_import import load_wav2vec2
from emo_jax.models.vae_codec import VAECodec
from synthetic_videos import FPS, TEST_CONFIG
from tiny_encoders import WAV2VEC

# Stored as float16: relative rounding 2^-11, features here reach |x| ~ 2.
TOLERANCE = dict(rtol=1e-3, atol=1e-3)


def _records(output, source):
    reader = ArrayRecordReader(str(output / "shards" / f"{input_id(source)}.array_record"))
    records = [decode_record(b) for b in reader.read(list(range(reader.num_records())))]
    reader.close()
    return records


def _direct(audio, folder):
    module, params, _ = load_wav2vec2(folder)
    return audio_features(audio, FPS, module, params, context=0)[:, 0]


def test_features_are_the_whole_source_features_sliced_to_the_segment(encoded):
    inputs, output, wav2vec, _ = encoded
    (still,) = _records(output, inputs["still"])
    assert still.audio_features.shape == (still.num_frames, WAV2VEC["num_hidden_layers"], WAV2VEC["hidden_size"])
    assert still.audio_features.dtype == np.float16
    # A segment that is its whole source: exactly audio_features run on the segment's own audio.
    np.testing.assert_allclose(still.audio_features.astype(np.float32), _direct(still.audio, wav2vec), **TOLERANCE)
    # Two segments of one source (a cut at frame 90): their audio together is the source's audio, and the stored
    # features are that source's features sliced, not features of each segment's audio alone, which differ
    # (normalisation and group-norm statistics over the source, attention to audio across the segment's edges).
    cut = _records(output, inputs["cut"])
    whole = _direct(np.concatenate([r.audio for r in cut]), wav2vec)
    for record in cut:
        stored = record.audio_features.astype(np.float32)
        np.testing.assert_allclose(stored, whole[record.start_frame : record.start_frame + record.num_frames],
                                   **TOLERANCE)
        assert np.abs(stored - _direct(record.audio, wav2vec)).max() > 0.1


def test_latents_encode_the_decoded_jpeg_frames(encoded):
    inputs, output, _, vae = encoded
    module, params, _ = load_vae(vae)
    codec = VAECodec(module, params)
    for role in ("still", "cut"):
        for record in _records(output, inputs[role]):
            assert record.latents.shape == (record.num_frames, 32, 32, 4) and record.latents.dtype == np.float16
            # Every 8th frame: the VAE works frame by frame, and one 8-frame chunk compiles once.
            frames = np.stack([decode_jpeg(j) for j in record.frames_jpeg[::8]])
            np.testing.assert_allclose(record.latents[::8].astype(np.float32), codec.encode(frames), **TOLERANCE)
            assert np.abs(record.latents).max() > 0.1  # not a zero tensor that any tolerance would accept


def test_encoder_folders_are_recorded_settings(encoded, tmp_path):
    inputs, output, wav2vec, vae = encoded
    recorded = json.loads((output / "config.json").read_text())
    assert (recorded["wav2vec"], recorded["vae"], recorded["schema_version"]) == (wav2vec, vae, SCHEMA_VERSION)
    with pytest.raises(ValueError, match=r"\(vae\)"):
        prepare([inputs["still"]], str(output), dataclasses.replace(TEST_CONFIG, wav2vec=wav2vec))


def test_encoders_load_once_per_process(encoded, tmp_path, monkeypatch):
    inputs, _, wav2vec, _ = encoded
    loads = []
    real = prepare_module.SegmentEncoders
    monkeypatch.setattr(prepare_module, "SegmentEncoders", lambda *a: loads.append(a) or real(*a))
    monkeypatch.setattr(prepare_module, "_TOOLS", {})
    cfg = dataclasses.replace(TEST_CONFIG, wav2vec=wav2vec)
    manifest = prepare([inputs["still"], inputs["moving"]], str(tmp_path / "out"), cfg, workers=1)
    assert manifest["segments"] == 2 and loads == [(wav2vec, "")]


def test_bad_encoder_folders_are_clear_errors(encoded, tmp_path, capsys):
    inputs, _, wav2vec, _ = encoded
    args = ["--input", inputs["still"], "--output", str(tmp_path / "out")]
    assert main(args + ["--vae", str(tmp_path / "missing")]) == 2
    assert "--vae" in capsys.readouterr().err and not (tmp_path / "out").exists()
    # A folder with a config.json but no weights fails when the model loads, before any input is marked done.
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    shutil.copy(os.path.join(wav2vec, "config.json"), no_weights)
    assert main(args + ["--wav2vec", str(no_weights), "--output", str(tmp_path / "out2")]) == 2
    assert "no weights" in capsys.readouterr().err
    assert not list((tmp_path / "out2" / "done").iterdir())
