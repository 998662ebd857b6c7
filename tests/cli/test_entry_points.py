"""Every `emo-*` command the README, docs and launch scripts tell a user to run is an installed console script
whose target imports (emo-compile was documented for a while before setup.py declared it)."""
import importlib
import pathlib
import re
from importlib import metadata

ROOT = pathlib.Path(__file__).resolve().parents[2]
NOT_COMMANDS = {"emo-jax"}  # the project's own name


def documented_commands() -> set[str]:
    texts = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "launch").glob("*.py"))]
    found = set()
    for path in texts:
        found |= set(re.findall(r"(?<![\w/.-])emo-[a-z][a-z0-9-]*(?![\w/-])", path.read_text()))
    return found - NOT_COMMANDS


def test_documented_commands_are_installed_entry_points():
    scripts = {ep.name: ep for ep in metadata.distribution("emo-jax").entry_points
               if ep.group == "console_scripts"}
    documented = documented_commands()
    assert {"emo-train", "emo-compile", "emo-demo"} <= documented  # the scan itself finds commands
    missing = sorted(documented - set(scripts))
    assert not missing, f"documented but not in setup.py console_scripts (reinstall with pip install -e .): {missing}"
    for name in sorted(documented):
        module, _, attr = scripts[name].value.partition(":")
        assert callable(getattr(importlib.import_module(module), attr)), name
