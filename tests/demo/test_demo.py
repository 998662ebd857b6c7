"""emo-demo --quick end to end: every output a newcomer is told to look at exists and holds sane values."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from emo_jax.video.io import read_video

ROOT = pathlib.Path(__file__).parents[2]
PER_VIDEO = ("identity_accuracy", "lip_sync", "lip_sync_control", "boundary_change", "inside_change")
PHASES = ("data", "encoders", "prepare", "train stage 1", "train stage 2", "train stage 3", "generate + measure",
          "speed + face locator", "total")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[pathlib.Path, str]:
    """One `emo-demo --quick` in a fresh process: the tests' 8 simulated devices would not fit its batch of 2."""
    out = tmp_path_factory.mktemp("demo") / "run"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    # The tests' compilation cache (tests/conftest.py): a local re-run skips the demo's compiles.
    env["JAX_COMPILATION_CACHE_DIR"] = str(ROOT / ".pytest_cache" / "jax")
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run([sys.executable, "-m", "emo_jax.cli.demo", "--out", str(out), "--quick"], env=env,
                          capture_output=True, text=True, timeout=1800, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stdout


@pytest.mark.slow
def test_quick_demo_writes_videos_sheet_and_metrics(quick_run):
    out, stdout = quick_run
    metrics = json.loads((out / "metrics.json").read_text())
    sizes = metrics["sizes"]
    names = [v["identity"] for v in metrics["videos"]]
    assert len(names) == sizes["identities"] >= 2
    frames = round(sizes["heldout_seconds"] * sizes["fps"])
    for name in names:
        for suffix in ("", "_silent"):
            video, fps = read_video(str(out / "videos" / f"{name}{suffix}.mp4"))
            assert fps == sizes["fps"]
            assert video.shape == (frames, sizes["frame_size"], sizes["frame_size"], 3)
    for v in metrics["videos"]:
        assert v["frames"] == frames
        assert 0.0 <= v["identity_accuracy"] <= 1.0
        for key in ("lip_sync", "lip_sync_control"):
            assert -1.0 <= v[key] <= 1.0
        assert v["boundary_change"] >= 0 and v["inside_change"] >= 0
    assert metrics["identity_accuracy"] == pytest.approx(np.mean([v["identity_accuracy"] for v in metrics["videos"]]))
    assert metrics["lip_sync_mean"] == pytest.approx(np.mean([v["lip_sync"] for v in metrics["videos"]]))
    seconds = metrics["seconds"]
    assert set(seconds) == set(PHASES) and all(s > 0 for s in seconds.values())
    assert seconds["total"] == pytest.approx(sum(s for k, s in seconds.items() if k != "total"))
    # The controls: every speed setting and the stage-2 model measured on the same portraits, the moved and widened
    # masks' videos, and stage 3 left the audio layers as stage 2 left them.
    controls = names[:sizes["control_identities"]]
    settings = list(metrics["speed"]["settings"])
    assert len(settings) >= 2 and metrics["speed"]["no_speed_layers"]["videos"] == len(controls)
    for r in metrics["speed_videos"]:
        assert r["identity"] in controls and r["velocity_mean"] >= 0 and r["velocity_std"] >= 0
    for name in controls:
        for suffix in [f"_speed{s}" for s in settings] + ["_mask_left", "_mask_right", "_mask_wide"]:
            assert read_video(str(out / "videos" / f"{name}{suffix}.mp4"))[0].shape[0] == frames
    assert -1.0 <= metrics["speed"]["spearman"] <= 1.0
    assert {r["mask"] for r in metrics["face_locator_videos"]} == {"portrait", "left", "right", "wide"}
    assert metrics["face_locator"]["mask_shift"] > 0 and 0 <= metrics["face_locator"]["inside_wide"] <= 1
    assert metrics["audio_layers_unchanged_by_stage3"] is True
    # Two rows per identity (real audio, silent control), one per speed setting (first identity) and three per
    # control identity (moved and widened masks), each the reference and 11 frames, zoomed 4x.
    rows = 2 * len(names) + len(settings) + 3 * len(controls)
    sheet = np.asarray(Image.open(out / "videos" / "contact_sheet.png"))
    assert sheet.shape == (rows * 4 * sizes["frame_size"], 12 * 4 * sizes["frame_size"], 3)
    assert sheet.std() > 0
    # The printed table names every identity and every phase.
    for word in names + list(PHASES):
        assert word in stdout
