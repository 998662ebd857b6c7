"""Runs in a copy of the repository with docs/examples/emotion_signal.patch applied (tests/test_add_a_signal.py,
slow): the emotion label added by those 8 files goes from a `.emotion` file beside a video through emo-prepare,
the loader, emo-train's step, the sampler and emo-generate, with no edit to any of them.

    python docs/examples/check_emotion_signal.py WORK_FOLDER     (from the patched copy's root)
"""
import os
import sys

import numpy as np

sys.path[:0] = [os.getcwd(), os.path.join(os.getcwd(), "tests", "data_pipeline")]  # the patched copy first
from synthetic_videos import SIDE, face_frames, tone_with_click, write_mp4  # noqa: E402

import jax  # noqa: E402

from data_pipeline.extract import PrepareConfig  # noqa: E402
from data_pipeline.loader import read_manifest, shard_paths, shard_records  # noqa: E402
from data_pipeline.prepare import prepare  # noqa: E402
from data_pipeline.schema import decode_record  # noqa: E402
from emo_jax.config import load_config  # noqa: E402
from emo_jax.sharding import make_mesh  # noqa: E402
from emo_jax.train.state import StateFactory  # noqa: E402
from emo_jax.train.train import train, training_dataset  # noqa: E402

work = sys.argv[1]
config = load_config("configs/tiny.py:stage2")
config.model.emotion.classes = 3
config.data.workers = 0

# emo-prepare reads the label from the file beside the video and stores it per frame.
video = write_mp4(os.path.join(work, "happy.mp4"), face_frames(50), tone_with_click(2, None))
with open(os.path.join(work, "happy.emotion"), "w") as f:
    f.write("2\n")
data = os.path.join(work, "prepared")
prepare([video], data, PrepareConfig(fps=config.data.fps, size=config.data.size, min_seconds=0.5, max_seconds=1.0,
                                     detector="haar", speed_estimator="flow"))
read_manifest(data)
record = decode_record(shard_records(shard_paths(data))[0])
assert record.version == 4 and record.emotion.tolist() == [2] * record.num_frames, record.emotion
print("emo-prepare: emotion", record.emotion[:3], "per frame")

# The loader hands it out per target frame, and emo-train's step trains the new encoder on it.
config.data.path = data
batch = next(iter(training_dataset(config)))
assert batch["emotion"].shape == (config.train.batch_size, config.model.clip_frames), batch["emotion"].shape
assert (batch["emotion"] == 2).all()
config.train.update(steps=3, lr=1e-3, warmup_steps=0, checkpoint_every=1000, log_every=1)
fresh = jax.device_get(StateFactory(config, make_mesh(config.mesh.shape)).create(config.seed).params)
trained = jax.device_get(train(config, os.path.join(work, "run"), random_init_encoders=True).params)
moved = np.abs(trained["emotion_encoder"]["embed"]["embedding"] - fresh["emotion_encoder"]["embed"]["embedding"])
print("emo-train: emotion table rows moved by", moved.max(axis=1))
assert moved[2].max() > 10 * max(moved[0].max(), moved[1].max(), 1e-12), moved.max(axis=1)  # the class it saw

# The sampler passes it per frame; a different emotion gives a different video; a missing one is named.
from emo_jax.sample.generate import random_model_params  # noqa: E402
from emo_jax.sample.sampler import Sampler  # noqa: E402

params = random_model_params(config)
rng = np.random.default_rng(1)
params = jax.tree.map(lambda a: a + 0.05 * rng.standard_normal(a.shape).astype(a.dtype), params)
sampler = Sampler(config, params)
m = config.model
ref = sampler.reference(np.zeros((1, m.latent_size, m.latent_size, 4), np.float32))
features = rng.standard_normal((6, 2 * m.audio.context + 1, m.audio.layers, m.audio.feature_dim)).astype(np.float32)
mask = np.ones((sampler.mask_size,) * 2, np.float32)
videos = [sampler.sample(ref, features, mask, 0, 1.0, 1.0, {"emotion": np.full(6, e, np.int32)}) for e in (0, 2)]
print("sampler: emotion 0 vs 2 differ by", np.abs(videos[0] - videos[1]).max())
assert np.abs(videos[0] - videos[1]).max() > 1e-3
try:
    sampler.sample(ref, features, mask, 0, 1.0, 1.0)
    raise AssertionError("a model that reads emotion generated without it")
except ValueError as e:
    assert "per-frame emotion" in str(e), e

# emo-generate takes it from the config.
from emo_jax.cli.generate import main  # noqa: E402
import cv2  # noqa: E402

cv2.imwrite(os.path.join(work, "face.png"), cv2.cvtColor(face_frames(1)[0], cv2.COLOR_RGB2BGR))
wav = write_mp4(os.path.join(work, "voice.mp4"), face_frames(13), tone_with_click(0.5, None))
out = os.path.join(work, "out.mp4")
code = main(["--config", "configs/tiny.py:stage2", "--config.model.emotion.classes", "3",
             "--config.sample.emotion", "1", "--random-init", "--image", os.path.join(work, "face.png"),
             "--audio", wav, "--out", out, "--steps", "2", "--face-box", f"8,8,{SIDE - 8},{SIDE - 8}"])
assert code == 0 and os.path.getsize(out) > 0, code
print("emo-generate: wrote", out)
print("emotion signal: OK")
