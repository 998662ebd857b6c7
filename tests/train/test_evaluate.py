"""emo-train's periodic evaluation: held-out clips generated with the EMA weights, measured, and logged."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from emo_jax.errors import ConfigError
from emo_jax.eval.frechet import FeatureStats, frechet_distance_between
from emo_jax.train import evaluate
from emo_jax.train.checkpoint import restore_params
from emo_jax.train.evaluate import EvalConfig, FrechetMetric, PeriodicEvaluation, eval_config, frechet_metrics
from emo_jax.train.state import TrainState
from emo_jax.train.train import train
from tests.train.common import ROOT, make_config


def _pooled(frames: np.ndarray) -> np.ndarray:
    """[N, ..., H, W, 3] uint8 -> [N, 12]: each item's mean colour over a 2x2 grid (a tiny stand-in network)."""
    x = frames.astype(np.float64) / 255.0
    x = x.reshape(len(x), -1, *x.shape[-3:]).mean(axis=1)  # a window's frames averaged
    n, h, w, c = x.shape
    return x.reshape(n, 2, h // 2, 2, w // 2, c).mean(axis=(2, 4)).reshape(n, -1)


def _windows(frames: np.ndarray) -> list[np.ndarray]:
    return [frames[i:i + 4] for i in range(0, len(frames) - 3, 2)]


def tiny_metrics(e: EvalConfig):
    """FVD and FID shaped as emo-eval's (windows / frames, Fréchet distance of their features), tiny networks."""
    stats = lambda: FeatureStats("pooled_colour", 12)  # noqa: E731
    return {"fvd": FrechetMetric(_pooled, stats, _windows), "fid": FrechetMetric(_pooled, stats, list)}, {}


def fake_videos(evaluation: PeriodicEvaluation) -> dict[int, np.ndarray]:
    """Stand-in generated frames for every held-out clip, the same in every process."""
    return {k: np.random.default_rng(k).integers(0, 256, c.frames.shape, dtype=np.uint8)
            for k, c in enumerate(evaluation.clips)}


def _eval_rows(workdir) -> list[dict]:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "eval" in r]


def test_training_evaluates_the_ema_weights_every_n_steps(prepared, compile_cache, tmp_path, monkeypatch):
    monkeypatch.setattr(evaluate, "frechet_metrics", tiny_metrics)
    config = make_config("stage2", prepared, steps=4)  # test_train's resume run compiles this step program too
    config.eval.update(dict(every=2, data_path=prepared, clips=2, frames=8))
    train(config, str(tmp_path), random_init_encoders=True)

    rows = _eval_rows(tmp_path)
    assert [r["step"] for r in rows] == [2, 4]
    for row in rows:
        values = row["eval"]
        assert values["clips"] == 2 and values["seconds"] > 0
        for name in ("fvd", "fid", "identity_accuracy", "boundary_change", "inside_change"):
            assert np.isfinite(values[name]), (name, values)
        assert "lip_sync" not in values  # the demo's mouth-colour measure is off for real data
    tags = b"".join(p.read_bytes() for p in tmp_path.glob("events.out.tfevents.*"))
    assert b"eval/fvd" in tags and b"eval/identity_accuracy" in tags

    # The same measures from the EMA weights of the step-4 checkpoint, evaluated afresh (one device, host weights).
    again = PeriodicEvaluation(config, str(tmp_path / "again"), precomputed_audio=False, random_init_encoders=True,
                               metrics=tiny_metrics(None)[0])
    _, ema = restore_params(str(tmp_path), step=4, use_ema=True)
    from_ema, logged = again.measure(again.generate(ema)), rows[1]["eval"]
    saved = sorted(p.name for p in (tmp_path / "eval/4").iterdir())  # generated beside real, one per clip
    assert saved == sorted(c.name.replace("#", "_") + ".mp4" for c in again.clips)
    for name in ("fvd", "fid", "boundary_change", "inside_change"):
        assert from_ema[name] == pytest.approx(logged[name], rel=2e-3), (name, from_ema, logged)
    assert from_ema["identity_accuracy"] == logged["identity_accuracy"]


def test_the_evaluation_samples_with_the_ema_of_the_trained_leaves(prepared, monkeypatch):
    config = make_config("stage2", prepared)
    config.eval.update(dict(every=1, data_path=prepared, clips=2, frames=8))
    evaluation = PeriodicEvaluation(config, "unused", precomputed_audio=False, random_init_encoders=True,
                                    metrics=tiny_metrics(None)[0])
    seen = {}
    monkeypatch.setattr(evaluation, "generate", lambda params: seen.setdefault("params", params) and {})
    state = TrainState(step=4, params={"a": {"w": np.ones(2)}, "b": {"w": np.zeros(2)}}, opt_state=None,
                       ema={"a": {"w": np.full(2, 0.5)}}, rng=None, bad_steps=0, skipped=0)
    evaluation.evaluate(state, 4)
    assert np.all(seen["params"]["a"]["w"] == 0.5) and np.all(seen["params"]["b"]["w"] == 0)


def test_measures_are_the_frechet_distance_of_the_generated_and_real_clips(prepared):
    config = make_config("stage2", prepared)
    config.eval.update(dict(every=1, data_path=prepared, clips=2, frames=8))
    evaluation = PeriodicEvaluation(config, "unused", precomputed_audio=False, random_init_encoders=True,
                                    metrics=tiny_metrics(None)[0])
    assert len(evaluation.clips) == 2
    rng = np.random.default_rng(0)
    generated = {k: rng.integers(0, 256, c.frames.shape, dtype=np.uint8) for k, c in enumerate(evaluation.clips)}
    values = evaluation.measure(generated)

    def distance(items_of):
        a, b = FeatureStats("pooled_colour", 12), FeatureStats("pooled_colour", 12)
        a.add(_pooled(np.stack([i for v in generated.values() for i in items_of(v)])))
        b.add(_pooled(np.stack([i for c in evaluation.clips for i in items_of(c.frames)])))
        return frechet_distance_between(a, b)

    assert values["fid"] == pytest.approx(distance(list), rel=1e-12)
    assert values["fvd"] == pytest.approx(distance(_windows), rel=1e-12)
    assert values["clips"] == 2 and 0 <= values["identity_accuracy"] <= 1
    assert "lip_sync" not in values  # off without eval.mouth_colour
    config.eval.mouth_colour = (12, 12, 12)
    evaluation.e = eval_config(config)
    assert -1 <= evaluation.measure(generated)["lip_sync"] <= 1


@pytest.mark.parametrize("change, words", [
    (dict(every=5), "eval.data_path is empty"),
    (dict(every=5, data_path="/nonexistent/held_out"), "eval.data_path"),
    (dict(every=5, clips=0, data_path="."), "eval.clips must be at least 1"),
    (dict(every=-1), "eval.every must be >= 0"),
])
def test_bad_eval_settings_stop_the_run_before_anything_loads(prepared, tmp_path, change, words):
    config = make_config("stage2", prepared)
    config.eval.update(change)
    with pytest.raises(ConfigError, match=words):
        if config.eval.data_path.startswith("/nonexistent"):
            PeriodicEvaluation(config, str(tmp_path), precomputed_audio=False, random_init_encoders=True)
        else:
            train(config, str(tmp_path), random_init_encoders=True)
    assert not (tmp_path / "checkpoints").exists()


def test_eval_settings_are_checked_against_the_stage_and_the_data(prepared, tmp_path):
    config = make_config("stage1", prepared)
    config.eval.update(dict(every=5, data_path=prepared))
    with pytest.raises(ConfigError, match="train.stage 1 trains no video model"):
        eval_config(config)
    config = make_config("stage2", prepared)
    config.eval.update(dict(every=5, data_path=prepared, frames=1000))
    with pytest.raises(ConfigError, match="no segment of at least eval.frames 1000 frames"):
        PeriodicEvaluation(config, str(tmp_path), precomputed_audio=False, random_init_encoders=True)
    config.eval.bogus = 1
    with pytest.raises(ConfigError, match=r"unknown keys in eval: \['bogus'\]"):
        eval_config(config)


def test_missing_metric_weights_are_reported_as_not_computed(tmp_path):
    metrics, missing = frechet_metrics(EvalConfig(weights=str(tmp_path)))
    assert metrics == {}
    assert missing["fvd"].startswith(f"not computed: i3d-kinetics-400.ckpt missing in {tmp_path}")
    assert missing["fid"].startswith(f"not computed: pt_inception-2015-12-05-6726825d.pth missing in {tmp_path}")


_PROCESS = """
import json, sys
import jax
address, pid, data, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
jax.distributed.initialize(coordinator_address=address, num_processes=2, process_id=pid)
from emo_jax.train.evaluate import PeriodicEvaluation
from tests.train.common import make_config
from tests.train.test_evaluate import fake_videos, tiny_metrics
config = make_config("stage2", data)
config.eval.update(dict(every=1, data_path=data, clips=3, frames=8))
evaluation = PeriodicEvaluation(config, "unused", precomputed_audio=False, random_init_encoders=True,
                                metrics=tiny_metrics(None)[0])
videos = fake_videos(evaluation)
values = evaluation.measure({k: videos[k] for k in evaluation.mine})
with open(out, "w") as f:
    json.dump({"mine": evaluation.mine, "values": values}, f)
"""


def test_two_processes_split_the_clips_and_measure_what_one_does(prepared, tmp_path):
    from tests.eval.multiprocess import _free_port

    config = make_config("stage2", prepared)
    config.eval.update(dict(every=1, data_path=prepared, clips=3, frames=8))
    one = PeriodicEvaluation(config, "unused", precomputed_audio=False, random_init_encoders=True,
                             metrics=tiny_metrics(None)[0])
    expected = one.measure(fake_videos(one))
    address = f"localhost:{_free_port()}"
    flags = re.sub(r"--xla_force_host_platform_device_count=\S+", "", os.environ.get("XLA_FLAGS", "")).strip()
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, "-c", _PROCESS, address, str(i), prepared, str(tmp_path / f"{i}.json")],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs[0][-3000:] + outputs[1][-3000:]
    results = [json.loads((tmp_path / f"{i}.json").read_text()) for i in range(2)]
    assert [r["mine"] for r in results] == [[0, 2], [1]]
    for r in results:
        assert r["values"].keys() == expected.keys()
        for name, value in expected.items():
            assert r["values"][name] == pytest.approx(value, rel=1e-6), name
