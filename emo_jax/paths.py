"""Checks that a path the user gave is the kind of thing expected (file or folder), with a message that says
which it is instead: a folder passed where a file belongs is named as a folder, not as missing."""
from __future__ import annotations

import os


def require_file(path: str, what: str, fix: str, error: type[ValueError] = ValueError) -> None:
    """Raises `error` naming `what` and `path` unless `path` is a regular file; `fix` says what to pass instead."""
    if os.path.isfile(path):
        return
    if os.path.isdir(path):
        raise error(f"{what} {path!r} is a folder, not a file; {fix}")
    if os.path.exists(path):
        raise error(f"{what} {path!r} is not a regular file; {fix}")
    raise error(f"{what} {path!r} does not exist; {fix}")


def require_folder(path: str, what: str, fix: str, error: type[ValueError] = ValueError) -> None:
    """Raises `error` naming `what` and `path` unless `path` is a folder."""
    if os.path.isdir(path):
        return
    if os.path.exists(path):
        raise error(f"{what} {path!r} is a file, not a folder; {fix}")
    raise error(f"{what} {path!r} does not exist; {fix}")
