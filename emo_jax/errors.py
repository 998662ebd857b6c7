"""The errors a user can cause, in one leaf module that every layer may import (it imports nothing).

Each is a ValueError whose message names the input and what to do about it. By the project's convention a
ValueError raised by the package's own code is a user error (internal invariants use assert), so the commands
report these, and those plain ValueErrors, as one line instead of a traceback (emo_jax/cli/runner.py).
RunError is the other kind the commands report on one line: not a wrong input but a run that cannot go on for a
reason it checks for and names (exit status 1).
"""


class ConfigError(ValueError):
    """A config file, variant or override the user gave is wrong."""


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, or does not match the model it is loaded into."""


class AudioError(ValueError):
    """An audio input is missing, empty, unreadable, or has no sound to decode."""


class VideoError(ValueError):
    """A video file is missing, unreadable, or an argument describing video data is invalid."""


class SchemaError(ValueError):
    """A record's bytes are not a segment record this version of emo-jax can read."""


class UsageError(ValueError):
    """A command-line argument is missing, unknown, or has a value the command cannot use."""


class RunError(RuntimeError):
    """A run stopped for a reason it checks for and names: training diverged, a toolchain is missing."""
