"""Shared by the launchers: how a command is shown (--dry-run) or run, and the install line every host runs."""
from __future__ import annotations

import shlex
import subprocess
import sys
from typing import Sequence

INSTALL = ("python3 -m venv .venv && . .venv/bin/activate && "
           "pip install -q -c constraints.txt -e '.[{extra}]'")


def install_command(extra: str) -> str:
    """The pinned install every worker runs, from the repository's own constraints file."""
    return INSTALL.format(extra=extra)


def quote(cmd: Sequence[str]) -> str:
    return " ".join(shlex.quote(c) for c in cmd)


def run_all(commands: list[list[str]], dry_run: bool) -> int:
    """Prints every command; runs them in order unless dry_run, stopping at the first failure."""
    for cmd in commands:
        print(quote(cmd), flush=True)
        if not dry_run:
            code = subprocess.call(cmd)
            if code:
                print(f"command failed with exit code {code}: {quote(cmd)}", file=sys.stderr)
                return code
    return 0


def parse_with_overrides(parser, argv):
    """Parses the launcher's own flags; the rest must be --config.FIELD VALUE overrides for emo-train."""
    args, overrides = parser.parse_known_args(argv)
    bad = [o for o in overrides if o.startswith("-") and not o.startswith("--config.")]
    if bad:
        parser.error(f"unrecognized arguments: {bad}; only --config.FIELD VALUE overrides pass through to emo-train")
    args.overrides = overrides
    return args
