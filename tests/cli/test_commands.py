"""Every console script, run as the user runs it: `--help` answers without a config, and one bad argument each
gives exit status 2 and one line `emo-X: error: ...` on stderr naming the problem, with no traceback."""
import pathlib
import subprocess
import sys
from importlib import metadata

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY = "configs/tiny.py:stage2"


def bad_arguments(tmp: pathlib.Path) -> dict[str, tuple[list[str], str]]:
    """command -> (arguments with one mistake, what the error line must say)."""
    full = tmp / "full"
    full.mkdir()
    (full / "something").write_text("")
    return {
        "emo-summary": (["--config", "configs/nowhere.py"], "config file 'configs/nowhere.py' does not exist"),
        "emo-audio-features": ([str(tmp / "missing.wav"), "--wav2vec", str(tmp), "--out", str(tmp / "f.npy")],
                               "missing.wav' does not exist"),
        "emo-prepare": (["--input", str(tmp / "no_videos"), "--output", str(tmp / "prepared")],
                        "no input videos found"),
        "emo-train": (["--config", TINY, "--config.model.xyz", "1", "--workdir", str(tmp / "run")],
                      "unknown config key 'model.xyz'"),
        "emo-generate": (["--config", TINY, "--random-init", "--image", str(tmp / "missing.png"), "--audio",
                          str(tmp / "missing.wav"), "--out", str(tmp / "x.mp4")], "missing.png' does not exist"),
        "emo-export": (["--checkpoint", str(tmp / "no_run"), "--out", str(tmp / "export")],
                       "no_run' does not exist"),
        "emo-eval": (["--generated", str(tmp / "no_videos"), "--reference", str(tmp), "--out", str(tmp / "eval.json")],
                     "no_videos' does not exist"),
        "emo-demo": (["--out", str(full)], "is not empty"),
        "emo-compile": (["--config", TINY, "--topology", "v9-8"], "unknown TPU generation 'v9'"),
    }


def console_scripts() -> list[str]:
    return sorted(ep.name for ep in metadata.distribution("emo-jax").entry_points if ep.group == "console_scripts")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[tuple[str, str], subprocess.CompletedProcess]:
    """(command, 'help' or 'bad') -> its finished process; all started at once, since each start imports JAX."""
    tmp = tmp_path_factory.mktemp("commands")
    bad = bad_arguments(tmp)
    bin_dir = pathlib.Path(sys.executable).parent
    procs = {}
    for name in console_scripts():
        script = bin_dir / name
        assert script.is_file(), f"{script} is missing: reinstall with pip install -e ."
        for kind, args in (("help", ["--help"]), ("bad", bad[name][0])):
            procs[name, kind] = subprocess.Popen([str(script), *args], cwd=ROOT, text=True,
                                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    results = {}
    for key, p in procs.items():
        out, err = p.communicate(timeout=300)
        results[key] = subprocess.CompletedProcess(p.args, p.returncode, out, err)
    return results


def test_every_command_has_a_bad_argument_case(tmp_path):
    assert set(bad_arguments(tmp_path)) == set(console_scripts())


@pytest.mark.parametrize("name", console_scripts())
def test_help_needs_no_config(runs, name):
    result = runs[name, "help"]
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {name} ")
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize("name", console_scripts())
def test_a_bad_argument_is_one_error_line(runs, name, tmp_path):
    result, expected = runs[name, "bad"], bad_arguments(tmp_path)[name][1]
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{name}: error: "), result.stderr
    assert expected in lines[0]
