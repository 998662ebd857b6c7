"""docs/architecture.md's "How to add a conditioning signal" is true: docs/examples/emotion_signal.patch adds an
emotion label in the files that section lists and in no other, it still applies to the tree, and (slow) the
patched tree carries the label from emo-prepare to emo-generate (docs/examples/check_emotion_signal.py)."""
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PATCH = ROOT / "docs" / "examples" / "emotion_signal.patch"


def listed_files() -> set[str]:
    """The repository files the numbered steps of the docs section name first in each step."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = text.split("## How to add a conditioning signal", 1)[1].split("\n## ", 1)[0]
    steps = re.findall(r"^\d+\. `([^`]+)`", section, flags=re.M)
    assert steps, "the docs section has no numbered steps"
    return set(steps)


def patched_files() -> set[str]:
    return set(re.findall(r"^diff --git a/(\S+) b/", PATCH.read_text(encoding="utf-8"), flags=re.M))


def test_the_docs_list_is_the_files_the_example_touches():
    assert patched_files() == listed_files()
    assert len(listed_files()) <= 8


def test_the_example_still_applies_to_the_tree():
    done = subprocess.run(["git", "apply", "--check", str(PATCH)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, ("docs/examples/emotion_signal.patch no longer applies; refresh it "
                                  f"(docs/architecture.md says how): {done.stderr}")


@pytest.mark.slow
def test_the_example_signal_goes_from_emo_prepare_to_emo_generate(tmp_path):
    tree = tmp_path / "tree"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        if (ROOT / name).is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, tree / name)
    subprocess.run(["git", "apply", str(PATCH)], cwd=tree, check=True)
    work = tmp_path / "work"
    work.mkdir()
    env = dict(os.environ, PYTHONPATH=str(tree), JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)  # one device, as a user runs it (the tests' 8 would need a batch of 8)
    done = subprocess.run([sys.executable, "docs/examples/check_emotion_signal.py", str(work)], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0 and "emotion signal: OK" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
