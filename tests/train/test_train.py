"""emo-train end to end on the tiny config: resume, frozen stage-3 params, stop on non-finite losses,
preemption by SIGTERM, and two processes on localhost."""
import json
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

import grain
import jax
import numpy as np
import pytest
from flax import traverse_util

from emo_jax.batch import batch_spec, random_batch
from emo_jax.config import load_config
from emo_jax.errors import ConfigError
from emo_jax.params import STAGE_TRAINABLE, module_of
from emo_jax.train.checkpoint import restore_params
from emo_jax.train.state import StateFactory
from emo_jax.sharding import make_mesh
from data_pipeline.loader import read_manifest
from emo_jax.train.train import NonFiniteLossError, check_prepared_settings, train, training_dataset, used_keys
from tests.train.common import ROOT, make_config, pipeline_batches, subprocess_env


def _flat(params):
    return traverse_util.flatten_dict(params)


def _losses(workdir) -> list[float]:
    lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines]


def test_data_prepared_for_other_settings_stops_the_run_before_compiling():
    config = load_config("configs/tiny.py:stage2")
    batch = random_batch(batch_spec(config), 2, np.random.default_rng(0))
    assert used_keys(config, batch) == ["target", "motion", "reference", "face_mask", "audio"]
    config.data.fps = 30  # the audio of each example now spans another number of samples
    with pytest.raises(ConfigError, match=r"batch field 'audio' is float32 \(5120,\).*expects float32 \(4267,\)"
                                          r" \(from audio.sample_rate, data.fps"):
        used_keys(config, batch)


@pytest.mark.parametrize("override, words", [
    (("data", "fps", 30), r"prepared fps 25(\.0)? but config data.fps 30"),
    (("data", "size", 64), r"prepared size 32 but config data.size 64"),
    (("audio", "sample_rate", 22050), r"prepared audio_sample_rate 16000 but config audio.sample_rate 22050"),
])
def test_the_manifest_settings_must_be_the_configs(prepared, override, words):
    config = make_config("stage2", prepared)
    training_dataset(config)  # the settings it was prepared at
    section, key, value = override
    config[section][key] = value
    with pytest.raises(ConfigError, match=words + r".*emo-prepare --config"):
        training_dataset(config)


def test_features_from_another_encoder_or_schema_are_refused(tmp_path):
    config = load_config("configs/tiny.py:stage2")
    config.data.path = str(tmp_path / "data")
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    for folder, layers in ((ours, 2), (theirs, 4)):
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"num_hidden_layers": layers}))
    config.audio.wav2vec_path = str(ours)
    settings = {"fps": 25, "size": 32, "audio_sample_rate": 16000, "wav2vec": str(theirs), "vae": ""}
    with pytest.raises(ConfigError, match=r"wav2vec features were made by .*theirs.*another model than config "
                                          r"audio.wav2vec_path .*ours"):
        check_prepared_settings(config, {"schema_version": 2, "config": settings})
    check_prepared_settings(config, {"schema_version": 2, "config": dict(settings, wav2vec=str(ours))})
    with pytest.raises(ConfigError, match="schema version 9 records"):
        check_prepared_settings(config, {"schema_version": 9, "config": dict(settings, wav2vec=str(ours))})


def test_resume_equals_uninterrupted_run(prepared, compile_cache, tmp_path):
    """A run of 4 steps saving at step 2 and 4; its workdir as a run killed after logging step 3 would leave it
    (step 2's checkpoint, metrics up to a torn step-4 line) is resumed to step 4: the same parameters, EMA and
    losses as the uninterrupted run."""
    config = make_config("stage2", prepared, steps=4, checkpoint_every=2)
    train(config, str(tmp_path / "straight"), random_init_encoders=True)
    resumed = tmp_path / "resumed"
    shutil.copytree(tmp_path / "straight" / "checkpoints" / "2", resumed / "checkpoints" / "2")
    assert (resumed / "checkpoints/2/data/process_0-of-1.json").is_file()
    rows = (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(row)["step"] for row in rows] == [1, 2, 3, 4]
    (resumed / "metrics.jsonl").write_text("\n".join(rows[:2] + [json.dumps({"step": 3, "loss": 9.0}),
                                                                  '{"step": 4, "lo']))
    train(config, str(resumed), random_init_encoders=True)
    for use_ema in (False, True):
        _, straight = restore_params(str(tmp_path / "straight"), use_ema=use_ema)
        _, back = restore_params(str(resumed), step=4, use_ema=use_ema)
        a, b = _flat(straight), _flat(back)
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert _losses(tmp_path / "straight") == _losses(resumed)


def test_stage3_speed_labels_must_be_in_the_models_unit(prepared):
    config = make_config("stage3", prepared)
    manifest = read_manifest(prepared)
    assert manifest["speed_unit"] == config.model.speed.unit == "degrees_per_frame"  # emo-prepare's head_pose
    training_dataset(config)
    manifest["config"]["speed_estimator"] = "flow"  # the same data labelled by an image-motion proxy
    with pytest.raises(ConfigError, match=r"speed labels from the 'flow' estimator are in face_widths_per_second but "
                                          r"the model's speed buckets \(model.speed.unit\) are in degrees_per_frame"):
        check_prepared_settings(config, manifest)
    config.model.speed.unit = "face_widths_per_second"  # training on the proxy, knowingly
    check_prepared_settings(config, manifest)


def test_stage3_changes_only_temporal_and_speed_layers(prepared, compile_cache, tmp_path):
    config = make_config("stage3", prepared, steps=2)  # on emo-prepare's head_pose labels, in degrees per frame
    factory = StateFactory(config, make_mesh(config.mesh.shape))
    before = _flat(factory.host_params(factory.create(config.seed)))
    train(config, str(tmp_path), random_init_encoders=True)
    _, after = restore_params(str(tmp_path), use_ema=False)
    after = _flat(after)
    frozen = [k for k in before if module_of(k) not in STAGE_TRAINABLE[3]]
    assert any(module_of(k) == "audio_attention" for k in frozen)  # stage 3 keeps the audio layers fixed
    assert all(np.array_equal(before[k], after[k]) for k in frozen)
    assert any(not np.array_equal(before[k], after[k]) for k in before if module_of(k) == "speed")


def test_non_finite_losses_in_a_row_stop_the_run(prepared, compile_cache, tmp_path):
    config = make_config("stage2", prepared, steps=10, max_bad_steps=3)
    good = pipeline_batches(config, 1)[0]
    bad = dict(good, audio=np.full_like(good["audio"], np.inf))
    dataset = grain.MapDataset.source([good, bad, good, bad, bad, bad, good]).to_iter_dataset()
    with pytest.raises(NonFiniteLossError, match="steps 4-6; stopped at step 6"):
        train(config, str(tmp_path), dataset=dataset, random_init_encoders=True)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["skipped"] for m in lines] == [0, 1, 1, 2, 3, 4]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


_RUNNER = """
import sys
import grain, numpy as np
from tests.train.common import make_config
from emo_jax.train.train import init_distributed, train

workdir, data, batches, port = sys.argv[1:5]
pid, count = int(sys.argv[5]), int(sys.argv[6])
init_distributed(f"localhost:{port}", count, pid)
config = make_config("stage2", data, steps=3)
arrays = np.load(batches)
rows = config.train.batch_size // count
local = [{k: arrays[f"{i}/{k}"][pid * rows:(pid + 1) * rows] for k in ("target", "motion", "reference", "face_mask",
         "audio")} for i in range(3)]
train(config, workdir, dataset=grain.MapDataset.source(local).to_iter_dataset(), random_init_encoders=True)
"""


@pytest.mark.slow
def test_two_processes_match_one(prepared, compile_cache, tmp_path):
    config = make_config("stage2", prepared, steps=3)
    batches = pipeline_batches(config, 3)
    np.savez(tmp_path / "batches.npz", **{f"{i}/{k}": v for i, b in enumerate(batches) for k, v in b.items()})
    train(config, str(tmp_path / "one"), dataset=grain.MapDataset.source(batches).to_iter_dataset(),
          random_init_encoders=True)
    port, env = _free_port(), subprocess_env(compile_cache, devices=4)
    args = [str(tmp_path / "two"), prepared, str(tmp_path / "batches.npz"), str(port)]
    procs = [subprocess.Popen([sys.executable, "-c", _RUNNER, *args, str(i), "2"], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=1200)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs[0][-3000:] + outputs[1][-3000:]
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(one) == 3 and np.max(np.abs(np.subtract(one, two)) / np.abs(one)) < 1e-5, (one, two)


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_to_resume_from(prepared, compile_cache, tmp_path):
    cmd = [sys.executable, "-m", "emo_jax.cli.train", "--config", str(ROOT / "configs/tiny.py:stage2"),
           "--workdir", str(tmp_path), "--random-init-encoders", "--config.data.path", prepared,
           "--config.data.workers", "0", "--config.mesh.shape.data", "2", "--config.mesh.shape.fsdp", "2",
           "--config.mesh.shape.tensor", "2", "--config.train.batch_size", "4", "--config.train.lr", "1e-3",
           "--config.train.warmup_steps", "2", "--config.train.log_every", "1",
           "--config.train.checkpoint_every", "1000", "--config.train.keep_checkpoints", "2"]
    proc = subprocess.Popen(cmd + ["--config.train.steps", "1000"], cwd=ROOT, env=subprocess_env(compile_cache),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.monotonic() + 1200
    while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0][-3000:]
        time.sleep(1)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, output[-3000:]
    saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert len(saved) == 1 and 2 <= saved[0] < 1000, saved
    target = saved[0] + 1
    resumed = subprocess.run(cmd + ["--config.train.steps", str(target)], cwd=ROOT, env=subprocess_env(compile_cache),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1200)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert f"restored step {saved[0]}" in resumed.stdout
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert steps[-1] == target and steps.count(target) == 1
    _, params = restore_params(str(tmp_path), step=target)
    assert all(np.all(np.isfinite(v)) for v in jax.tree.leaves(params))
