"""The command runner: which errors are the user's (one line, exit 2) and which are bugs (they raise)."""
import os

import numpy as np
import pytest

import emo_jax
from emo_jax.cli.runner import ArgumentParser, is_user_error, run


def _functions_in_package(source: str) -> dict:
    """Functions compiled as if they were a file of emo_jax, so the runner takes them for the project's code."""
    namespace = {"np": np}
    exec(compile(source, os.path.join(os.path.dirname(emo_jax.__file__), "fake_module.py"), "exec"), namespace)
    return namespace


FUNCTIONS = _functions_in_package('''
def bad_input():
    raise ValueError("--fps must be positive, got 0")

def numpy_bug():
    return np.ones(3) + np.ones(4)

def open_missing(path):
    return open(path)
''')


def _raised(fn, *args) -> BaseException:
    with pytest.raises(BaseException) as info:
        fn(*args)
    return info.value


def test_our_raise_statements_and_named_files_are_user_errors(tmp_path):
    assert is_user_error(_raised(FUNCTIONS["bad_input"]))
    assert is_user_error(_raised(FUNCTIONS["open_missing"], str(tmp_path / "missing.json")))


def test_value_errors_from_inside_numpy_or_outside_the_package_are_bugs():
    assert not is_user_error(_raised(FUNCTIONS["numpy_bug"]))  # raised in our file, but not by a raise statement

    def here():
        raise ValueError("a test's own error")

    assert not is_user_error(_raised(here))  # a raise statement, but outside emo_jax / data_pipeline / configs
    assert not is_user_error(_raised(lambda: [][0]))


def test_run_reports_user_errors_on_one_line_and_raises_bugs(capsys):
    parser = ArgumentParser(prog="emo-x")
    assert run(parser, lambda args: FUNCTIONS["bad_input"](), []) == 2
    assert capsys.readouterr().err == "emo-x: error: --fps must be positive, got 0\n"
    with pytest.raises(ValueError, match="broadcast"):
        run(ArgumentParser(prog="emo-x"), lambda args: FUNCTIONS["numpy_bug"](), [])
    assert run(ArgumentParser(prog="emo-x"), lambda args: None, ["--unknown"]) == 2
    assert capsys.readouterr().err == "emo-x: error: unrecognized arguments: --unknown; see emo-x --help\n"


def test_config_is_loaded_with_overrides_and_required_unless_help(capsys):
    seen = []
    assert run(ArgumentParser(prog="emo-x"), lambda args, config: seen.append(config), [
        "--config", "configs/tiny.py:stage1", "--config.train.lr", "3e-4"], config=True) == 0
    assert seen[0].train.stage == 1 and seen[0].train.lr == 3e-4
    assert run(ArgumentParser(prog="emo-x"), lambda args, config: None, [], config=True) == 2
    assert "pass --config FILE[:VARIANT]" in capsys.readouterr().err
    assert run(ArgumentParser(prog="emo-x"), lambda args, config: None, ["--help"], config=True) == 0
    assert "--config FILE[:VARIANT]" in capsys.readouterr().out


def test_a_run_that_stops_for_a_named_reason_is_one_line_and_exit_1(capsys):
    from emo_jax.errors import RunError
    from emo_jax.train.train import NonFiniteLossError

    def diverged(args):
        raise NonFiniteLossError("the loss was not finite for 3 steps in a row, steps 4-6; stopped at step 6")

    assert issubclass(NonFiniteLossError, RunError)
    assert run(ArgumentParser(prog="emo-train"), diverged, []) == 1
    assert capsys.readouterr().err == ("emo-train: error: the loss was not finite for 3 steps in a row, steps 4-6; "
                                       "stopped at step 6\n")
    with pytest.raises(RuntimeError, match="a bug"):  # other runtime errors are still bugs, with their traceback
        run(ArgumentParser(prog="emo-x"), lambda args: (_ for _ in ()).throw(RuntimeError("a bug")), [])


def test_command_logging_follows_sys_stderr_when_it_is_swapped_and_closed(monkeypatch, capsys):
    """A command's log lines go to sys.stderr as it is when they are written: an earlier command's stream, since
    closed (pytest closes each test's capture), must not turn later log lines into '--- Logging error ---'."""
    import io
    import logging

    from emo_jax.cli.runner import log_to_stderr

    first = io.StringIO()
    monkeypatch.setattr("sys.stderr", first)
    log_to_stderr()
    logging.getLogger("emo-x").info("one")
    first.close()
    second = io.StringIO()
    monkeypatch.setattr("sys.stderr", second)
    logging.getLogger("emo-x").info("two")
    assert second.getvalue().endswith("emo-x: two\n") and "Logging error" not in second.getvalue()
