"""The runner under every emo-* command: arguments, `--config FILE[:VARIANT]` with `--config.a.b VALUE` overrides,
and user errors reported as one line `emo-X: error: <message>` with exit status 2.

A user error is a bad command line, an OSError that names a file, or a ValueError raised by a `raise` statement
in this project's code: by the convention of emo_jax/errors.py such errors name the input and the fix, while
internal invariants are asserts. Anything else (a ValueError from inside numpy or JAX included) is a bug and keeps
its traceback.
"""
from __future__ import annotations

import argparse
import dis
import logging
import os
import sys
from typing import Callable, Sequence

from emo_jax.errors import ConfigError, RunError, UsageError

# Where this project's code lives; a ValueError raised from a file outside these is not ours.
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_OWN_CODE = tuple(os.path.join(_ROOT, package) + os.sep for package in ("emo_jax", "data_pipeline", "configs"))
# The paper-scale config, for the commands whose config values have defaults (emo-prepare, emo-audio-features).
DEFAULT_CONFIG = os.path.join(_ROOT, "configs", "emo_512.py")


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises its errors as UsageError, so the runner reports them like every other user error."""

    def error(self, message: str):
        raise UsageError(f"{message}; see {self.prog} --help")


def is_user_error(e: BaseException) -> bool:
    """True for the errors a user causes (see the module docstring), False for bugs."""
    if isinstance(e, OSError):
        return e.filename is not None
    if not isinstance(e, ValueError) or e.__traceback__ is None:
        return False
    tb = e.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    # The instruction that raised, read from the running bytecode (not the source file, which may have changed).
    raised_here = dis.opname[code.co_code[tb.tb_lasti]] == "RAISE_VARARGS"
    return raised_here and os.path.abspath(code.co_filename).startswith(_OWN_CODE)


def error_line(prog: str, e: BaseException) -> str:
    """`prog: error: message` on one line."""
    if isinstance(e, OSError):
        message = f"{e.filename}: {e.strerror}; check the path"
    else:
        message = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
    return f"{prog}: error: {message}"


class _StderrHandler(logging.StreamHandler):
    """Writes to sys.stderr as it is when a record is emitted, not as it was when logging was set up: a caller
    that swaps sys.stderr (a test capturing output, a notebook) and closes the old one breaks no later log line."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def log_to_stderr() -> None:
    """INFO logging with times and logger names, for the commands that log their progress messages."""
    # force: grain's absl import has already put a handler on the root logger, which would swallow ours.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", force=True,
                        handlers=[_StderrHandler()])
    logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax's dozens of INFO lines per checkpoint


def run(parser: ArgumentParser, body: Callable[..., int | None], argv: Sequence[str] | None = None, *,
        config: bool | str = False) -> int:
    """Parses argv and runs body(args), or body(args, config); returns the exit status.

    config: False, the command reads no config; True, --config is required; a spec, the config used when no
    --config is given. --help answers without a config.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        overrides = []
        if config is not False:
            from emo_jax.config import split_overrides

            default = "" if config is True else f" (default {os.path.relpath(config, _ROOT)})"
            parser.add_argument("--config", metavar="FILE[:VARIANT]",
                                help=f"config file and variant, e.g. configs/tiny.py:stage2{default}; any field is "
                                     "set with --config.SECTION.FIELD VALUE")
            overrides, argv = split_overrides(argv)
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:  # --help (argparse's own errors are raised as UsageError)
            return e.code or 0
        if config is False:
            return body(args) or 0
        spec = args.config or (config if isinstance(config, str) else None)
        if spec is None:
            raise ConfigError("pass --config FILE[:VARIANT], e.g. --config configs/tiny.py:stage2")
        from emo_jax.config import load_with_overrides

        return body(args, load_with_overrides(spec, overrides)) or 0
    except RunError as e:
        print(error_line(parser.prog, e), file=sys.stderr)
        return 1
    except (ValueError, OSError) as e:
        if not is_user_error(e):
            raise
        print(error_line(parser.prog, e), file=sys.stderr)
        return 2
