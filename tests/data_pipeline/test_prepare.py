"""End-to-end tests of emo-prepare on synthetic videos (see synthetic_videos.py for what each input holds)."""
import dataclasses
import json
import os
import shutil

import cv2
import numpy as np
import pytest
from array_record.python.array_record_module import ArrayRecordReader

import data_pipeline.prepare as prepare_module
from synthetic_videos import (CLICK_FRAME, CUT_CLICK_FRAME, FPS, SIDE, SR, TEST_CONFIG, face_frames, make_inputs,
                              tone_with_click, write_mp4)
from data_pipeline.prepare import INLINE, input_id, output_lock, prepare
from data_pipeline.schema import SCHEMA_VERSION, decode_record
from emo_jax.cli.prepare import main
from emo_jax.errors import UsageError

SKIN_RGB = np.array([230, 200, 180])
MOUTH_RGB = np.array([120, 50, 60])


def _records(output, source):
    reader = ArrayRecordReader(str(output / "shards" / f"{input_id(source)}.array_record"))
    records = [decode_record(b) for b in reader.read(list(range(reader.num_records())))]
    reader.close()
    return records


def _rgb(jpeg: bytes) -> np.ndarray:
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _snapshot(folder) -> dict:
    """Path -> (mtime_ns, bytes) of every file below folder, bar the lock file every run takes."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            if name == ".lock":
                continue
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = (os.stat(path).st_mtime_ns, f.read())
    return out


def test_manifest_counts_segments_and_every_bad_input(prepared):
    inputs, _, manifest = prepared
    assert manifest["schema_version"] == SCHEMA_VERSION
    assert manifest["inputs"] == 8
    assert manifest["segments"] == 5  # still, moving, rotated: 1 each; cut: 2
    assert manifest["frames"] == 5 * 3 * FPS
    assert manifest["hours"] == pytest.approx(450 / FPS / 3600)
    assert len(manifest["shards"]) == 4
    assert manifest["skipped_counts"] == {"no_audio": 1, "no_face": 1, "too_short": 1, "unreadable": 1}
    reasons = {s["input"]: s["reason"] for s in manifest["skipped"]}
    assert reasons == {inputs["no_audio"]: "no_audio", inputs["no_face"]: "no_face",
                       inputs["too_short"]: "too_short", inputs["corrupt"]: "unreadable"}
    assert all(s["detail"] for s in manifest["skipped"])
    assert manifest["handled_counts"] == {"rotated": 1, "variable_frame_rate": 1}
    assert manifest["speed_unit"] == "degrees_per_frame"


def test_records_follow_the_schema(prepared):
    inputs, output, _ = prepared
    for role in ("still", "moving", "rotated", "cut"):
        records = _records(output, inputs[role])
        assert [r.segment_index for r in records] == list(range(len(records)))
        for r in records:
            assert r.version == SCHEMA_VERSION and r.source == inputs[role]
            assert r.fps == FPS and r.size == TEST_CONFIG.size and r.audio_sample_rate == SR
            assert r.num_frames == 3 * FPS
            assert _rgb(r.frames_jpeg[0]).shape == (64, 64, 3)
            assert r.face_boxes.shape == (r.num_frames, 4) and r.speed.shape == (r.num_frames,)
            assert r.face_mask.shape == (64, 64) and r.face_mask.dtype == np.uint8
            assert r.audio.shape == (round(r.num_frames / FPS * SR),)
            assert r.speed_estimator == "head_pose"
            assert r.landmarks.shape == (r.num_frames, 468, 3) and r.head_pose.shape == (r.num_frames, 6)
            assert np.isfinite(r.landmarks).all() and r.lip_mask.shape == (64, 64)


def test_shot_change_splits_segments(prepared):
    inputs, output, _ = prepared
    records = _records(output, inputs["cut"])
    assert [(r.start_frame, r.start_frame + r.num_frames) for r in records] == [(0, 90), (90, 180)]
    # The second shot has the bright background: no frame of one shot leaks into the other.
    assert _rgb(records[0].frames_jpeg[-1])[0, 0].mean() < 100 < _rgb(records[1].frames_jpeg[0])[0, 0].mean()


@pytest.mark.parametrize("role, segment, click_frame", [("still", 0, CLICK_FRAME), ("cut", 1, CUT_CLICK_FRAME)])
def test_click_sits_in_its_frames_audio_window(prepared, role, segment, click_frame):
    inputs, output, _ = prepared
    record = _records(output, inputs[role])[segment]
    t = click_frame - record.start_frame
    # The video side: the frame with the white forehead patch is frame t of the segment.
    assert int(np.argmax([_rgb(j).mean() for j in record.frames_jpeg])) == t
    # The audio side: the loudest sample (the click) falls in frame t's window.
    loudest = int(np.argmax(np.abs(record.audio)))
    window = record.audio_window(t)
    assert window.start <= loudest < window.stop
    assert np.abs(record.audio[: window.start - 2 * SR // FPS]).max() < 0.2  # only the tone before it


@pytest.mark.parametrize("role", ["still", "moving", "rotated"])
def test_union_mask_covers_the_face_in_every_frame(prepared, role):
    inputs, output, _ = prepared
    (record,) = _records(output, inputs[role])
    for t in range(0, record.num_frames, 10):
        frame = _rgb(record.frames_jpeg[t]).astype(int)
        skin = np.abs(frame - SKIN_RGB).sum(-1) < 40
        mouth = np.abs(frame - MOUTH_RGB).sum(-1) < 40
        assert skin.sum() > 100 and mouth.sum() > 10
        # BlazeFace's box (the paper's) runs from the brows to below the mouth: the drawn oval's top and bottom
        # edges stay outside, the features never.
        assert record.face_mask[skin].mean() > 0.9 and record.face_mask[mouth].mean() > 0.99
    if role != "moving":
        assert record.face_mask.mean() < 0.5  # a still face gets a tight mask, not the whole frame


def test_head_rotation_speed_is_the_rolling_rate_in_degrees_per_frame(prepared, tmp_path):
    """A drawn face turning in the image plane at 0.8 degrees per frame (out to 36 degrees and back) reads 0.8;
    the still face reads ~0; the label's roll follows the turn; the lip mask sits on the drawn mouth."""
    n, rate = 3 * FPS, 0.8
    angle = rate * np.minimum(np.arange(n), n - np.arange(n))
    frames = face_frames(n)
    for t in range(n):
        turn = cv2.getRotationMatrix2D((SIDE / 2, SIDE / 2), float(angle[t]), 1.0)  # counter-clockwise on screen
        frames[t] = cv2.warpAffine(frames[t], turn, (SIDE, SIDE), borderValue=(90, 90, 90))
    path = write_mp4(tmp_path / "rolling.mp4", frames, tone_with_click(3, None))
    prepare([path], str(tmp_path / "out"), TEST_CONFIG)
    (rolling,) = _records(tmp_path / "out", path)
    inner = np.r_[5:n // 2 - 5, n // 2 + 5:n - 5]  # away from the ends and the turning point (smoothing)
    np.testing.assert_allclose(np.median(rolling.speed[inner]), rate, rtol=0.1)  # within 10%
    assert np.abs(rolling.speed[inner] - rate).max() < 0.35
    roll = rolling.head_pose[:, 2]
    np.testing.assert_allclose(roll - roll[0], -angle, atol=2.0)  # clockwise on screen is positive roll
    inputs, output, _ = prepared
    (still,) = _records(output, inputs["still"])
    assert np.median(still.speed) < 0.02 and still.speed.mean() < 0.05
    mouth = np.abs(_rgb(still.frames_jpeg[0]).astype(int) - MOUTH_RGB).sum(-1) < 40
    assert still.lip_mask[mouth].mean() > 0.9 and still.lip_mask.sum() < 4 * mouth.sum()
    skin = np.abs(_rgb(still.frames_jpeg[0]).astype(int) - SKIN_RGB).sum(-1) < 40
    assert still.mesh_face_mask[skin].mean() > 0.8 and still.mesh_face_mask.sum() < 1.5 * skin.sum()


def test_rerun_is_a_no_op(prepared, tmp_path, monkeypatch):
    inputs, output, manifest = prepared
    copy = tmp_path / "out"
    shutil.copytree(output, copy)
    before = _snapshot(copy)
    monkeypatch.setattr(prepare_module, "extract_segments", pytest.fail)
    assert prepare(sorted(inputs.values()), str(copy), TEST_CONFIG, workers=2) == manifest
    assert _snapshot(copy) == before


def test_interrupted_run_resumes_to_the_same_output(prepared, tmp_path, monkeypatch):
    all_inputs, full_output, _ = prepared
    inputs = sorted([all_inputs["corrupt"], all_inputs["moving"], all_inputs["still"]])
    output = tmp_path / "out"
    real = prepare_module.extract_segments
    calls = []

    def interrupted_on_moving(path, *args):
        calls.append(path)
        if path == all_inputs["moving"]:
            (output / "shards" / ".leftover.123.tmp").write_bytes(b"partial")  # what a killed writer leaves
            raise KeyboardInterrupt
        return real(path, *args)

    monkeypatch.setattr(prepare_module, "extract_segments", interrupted_on_moving)
    with pytest.raises(KeyboardInterrupt):  # inline: the inputs in order (test_beam.py kills a Beam run)
        prepare(inputs, str(output), TEST_CONFIG, runner=INLINE)
    done = sorted(os.listdir(output / "done"))
    assert done == [input_id(all_inputs["corrupt"]) + ".json"]
    assert not (output / "manifest.json").exists()

    calls.clear()
    monkeypatch.setattr(prepare_module, "extract_segments", lambda path, *a: calls.append(path) or real(path, *a))
    manifest = prepare(inputs, str(output), TEST_CONFIG, workers=1)
    assert sorted(calls) == sorted([all_inputs["moving"], all_inputs["still"]])
    assert (manifest["segments"], manifest["skipped_counts"]) == (2, {"unreadable": 1})
    assert not list((output / "shards").glob(".*"))
    for role in ("moving", "still"):
        name = input_id(all_inputs[role]) + ".array_record"
        assert (output / "shards" / name).read_bytes() == (full_output / "shards" / name).read_bytes()


def test_a_second_run_on_a_folder_in_use_stops_and_deletes_nothing(prepared, tmp_path, monkeypatch):
    inputs, output, manifest = prepared
    copy = tmp_path / "out"
    shutil.copytree(output, copy)
    in_progress = copy / "shards" / ".moving-0123456789.4242.tmp"  # the first run's shard being written
    in_progress.write_bytes(b"partial")
    monkeypatch.setattr(prepare_module, "extract_segments", pytest.fail)
    with output_lock(str(copy)):
        with pytest.raises(UsageError, match=rf"being written by another emo-prepare \(pid {os.getpid()} on .*\)"):
            prepare(sorted(inputs.values()), str(copy), TEST_CONFIG)
        assert in_progress.read_bytes() == b"partial"
    assert prepare(sorted(inputs.values()), str(copy), TEST_CONFIG) == manifest  # free again once released
    assert not in_progress.exists()


def test_an_encoder_that_does_not_load_leaves_no_settings_behind(prepared, tmp_path):
    inputs, _, _ = prepared
    vae = tmp_path / "vae"
    vae.mkdir()
    (vae / "config.json").write_text("{}")  # passes the folder check; there are no weights to load
    output = tmp_path / "out"
    with pytest.raises(ValueError, match=r"vae/config.json: missing config keys \['block_out_channels'"):
        prepare([inputs["still"]], str(output), dataclasses.replace(TEST_CONFIG, vae=str(vae)))
    assert not (output / "config.json").exists()
    assert prepare([inputs["still"]], str(output), TEST_CONFIG)["segments"] == 1  # the folder is usable again


def test_other_settings_on_the_same_output_are_refused(prepared):
    inputs, output, _ = prepared
    with pytest.raises(ValueError, match="size"):
        prepare(sorted(inputs.values()), str(output), dataclasses.replace(TEST_CONFIG, size=32))


def test_cli_end_to_end_and_user_errors(tmp_path, capsys):
    inputs = make_inputs(tmp_path / "raw")
    for role, path in inputs.items():
        if role not in ("still", "no_audio"):
            os.remove(path)
    out = tmp_path / "out"
    args = ["--input", str(tmp_path / "raw"), "--output", str(out), "--size", "64", "--min-seconds", "2",
            "--max-seconds", "4"]
    assert main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["segments"], manifest["skipped_counts"]) == (1, {"no_audio": 1})
    assert main(["--input", str(tmp_path / "nothing-*.mp4"), "--output", str(out)]) == 2
    assert "no input videos" in capsys.readouterr().err
    assert main(args[:4] + ["--min-seconds", "3", "--max-seconds", "4"]) == 2
    assert "--max-seconds" in capsys.readouterr().err
