"""emo-generate end to end on a drawn face and a generated wav, with --random-init and with a checkpoint whose
conditioning layers are live; its input errors; its framing of the portrait against emo-prepare's of the same face."""
import json
import wave

import ml_collections
import numpy as np
import pytest
from PIL import Image

from data_pipeline.crop import crop_window, to_crop_pixels
from data_pipeline.loader import shard_paths, shard_records
from data_pipeline.schema import decode_jpeg, decode_record
from emo_jax.cli.generate import main
from emo_jax.cli.prepare import main as prepare_main
from emo_jax.config import load_config
from emo_jax.errors import ConfigError
from emo_jax.sample.generate import detect_face, frame_reference, load_speed
from emo_jax.train.checkpoint import restore_model
from emo_jax.video import iter_frames
from emo_jax.video.image import read_image
from emo_jax.video.io import read_video, video_info
from tests.data_pipeline.synthetic_videos import draw_face, tone_with_click, write_mp4
from tests.helpers import perturb_zero_leaves

SR = 16000
TINY = ["--config", "configs/tiny.py:stage2"]


def _wav(path, seconds, hz=220.0):
    t = np.arange(round(seconds * SR)) / SR
    samples = (0.3 * np.sin(2 * np.pi * hz * t) * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(samples.tobytes())
    return str(path)


def _image(path, face=True):
    image = np.full((96, 128, 3), 90, np.uint8)  # landscape, so the square crop has to pick a window
    if face:
        draw_face(image, 80, 48, 20)
    Image.fromarray(image).save(path)
    return str(path)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("generate")
    # 0.45 s at the tiny config's 25 fps: 11.25 -> 11 frames, not a multiple of its 4-frame clips.
    return folder, _image(folder / "face.png"), _image(folder / "blank.png", face=False), _wav(folder / "a.wav", 0.45)


def test_cli_writes_exact_length_video_with_audio_reproducibly(inputs, capsys):
    folder, face, _, audio = inputs
    # The second run passes the box the first one detects: the same inputs by the other route, same seed.
    box = ",".join(str(int(v)) for v in detect_face(read_image(face), face))
    runs, sheets = {}, {}
    for name, extra in [("detected", []), ("boxed", ["--face-box", box])]:
        out, sheet = str(folder / f"{name}.mp4"), str(folder / f"{name}.png")
        assert main(TINY + ["--random-init", "--image", face, "--audio", audio, "--out", out, "--seed", "3",
                            "--contact-sheet", sheet] + extra) == 0, capsys.readouterr().err
        runs[name], _ = read_video(out)
        info = video_info(out)
        assert info.frames == 11 and info.fps == pytest.approx(25.0)
        assert (info.width, info.height) == (32, 32)
        assert abs(info.audio_duration - 11 / 25) < 1 / 25
        assert Image.open(sheet).size == (8 * 32, 2 * 32)  # 11 frames, 8 per row
        sheets[name] = np.asarray(Image.open(sheet))
    assert "wrote" in capsys.readouterr().out
    assert runs["detected"].shape == (11, 32, 32, 3) and runs["detected"].std() > 1
    # Same seed, same frames bit for bit: the contact sheet holds all 11 as generated. The mp4s are compared
    # loosely, since x264 itself does not always give the same bits for the same frames (about 1 run in 150).
    np.testing.assert_array_equal(sheets["detected"], sheets["boxed"])
    assert np.abs(runs["detected"].astype(int) - runs["boxed"]).mean() < 1.0


@pytest.fixture(scope="module")
def live_model(tmp_path_factory) -> list[str]:
    """emo-generate's arguments for a tiny stage-2 checkpoint whose zero-initialised layers (audio attention, motion
    modules, face locator output) hold random values, and the smoke-test encoders saved as model folders: a run
    that reads its weights as it reads a trained model's, with every conditioning path live."""
    from emo_jax import encoders
    from emo_jax.demo.encoders import write_vae_folder, write_wav2vec2_folder
    from emo_jax.sample.generate import random_model_params
    from emo_jax.train.checkpoint import Checkpointer
    from emo_jax.train.state import TrainState

    folder = tmp_path_factory.mktemp("live")
    config = load_config(TINY[1])
    params = perturb_zero_leaves(random_model_params(config))
    # Written by the trainer's Checkpointer. Host arrays and no optimiser state: emo-generate reads the params, the
    # EMA (stage 2 trains every parameter) and the config; sharded Adam moments take tens of seconds to save.
    zero = np.zeros((), np.int32)
    state = TrainState(step=zero, params=params, opt_state=(), ema=params, rng=np.zeros(2, np.uint32),
                       bad_steps=zero, skipped=zero)
    checkpoints = Checkpointer(str(folder / "run"), config)
    checkpoints.save(state, None, force=True)
    checkpoints.wait()
    checkpoints.close()
    _, w2v_params, _ = encoders.audio_encoder(config, random_init=True)
    _, vae_params, _ = encoders.vae(config, random_init=True)
    wav2vec = write_wav2vec2_folder(config, str(folder / "wav2vec2"), w2v_params)
    vae = write_vae_folder(config, vae_params, config.vae.scaling_factor, str(folder / "vae"))
    return TINY + ["--checkpoint", str(folder / "run"), "--config.audio.wav2vec_path", wav2vec,
                   "--config.vae.path", vae]


def test_audio_and_face_mask_reach_every_frame_of_a_live_model(inputs, live_model, capsys):
    folder, face, _, audio = inputs

    def frames(name: str, extra: list[str]) -> np.ndarray:
        out = str(folder / f"live_{name}.mp4")
        assert main(live_model + ["--image", face, "--seed", "3", "--out", out] + extra) == 0, capsys.readouterr().err
        return read_video(out)[0].astype(np.int64)

    base = frames("base", ["--audio", audio])
    assert base.shape == (11, 32, 32, 3)
    # Mean |change| per frame on 0-255 (measured: 12-17 for the audio, 4-7 for the mask). Wiring that dropped the
    # audio, or the mask, would leave the frames bit for bit, as the zero-initialised layers of a fresh model do.
    heard = frames("other_audio", ["--audio", _wav(folder / "other.wav", 0.45, hz=330)])
    assert np.abs(heard - base).mean(axis=(1, 2, 3)).min() > 1.0
    # The same reference crop; only the face locator's mask is wider.
    masked = frames("wide_mask", ["--audio", audio, "--config.sample.mask_expand", "3.0"])
    assert np.abs(masked - base).mean(axis=(1, 2, 3)).min() > 1.0


def test_no_face_without_face_box_names_the_image(inputs, capsys):
    folder, _, blank, audio = inputs
    assert main(TINY + ["--random-init", "--image", blank, "--audio", audio, "--out", str(folder / "x.mp4")]) == 2
    err = capsys.readouterr().err
    assert "no face found" in err and blank in err and "--face-box" in err


def test_audio_shorter_than_a_frame_names_the_audio(inputs, capsys):
    folder, face, _, _ = inputs
    short = _wav(folder / "short.wav", 0.01)  # 10 ms: a quarter of a 25 fps frame
    assert main(TINY + ["--random-init", "--image", face, "--audio", short, "--out", str(folder / "y.mp4")]) == 2
    err = capsys.readouterr().err
    assert short in err and "shorter than one video frame" in err


def test_bad_face_box_and_missing_weights_are_clear(inputs, capsys):
    folder, face, _, audio = inputs
    common = TINY + ["--image", face, "--audio", audio, "--out", str(folder / "z.mp4")]
    assert main(common + ["--random-init", "--face-box", "10,10,5"]) == 2
    assert "x0,y0,x1,y1" in capsys.readouterr().err
    assert main(common) == 2
    assert "--checkpoint" in capsys.readouterr().err
    assert main(common + ["--random-init", "--speed", "1.0"]) == 2  # stage2 has no speed layers
    assert "stage3" in capsys.readouterr().err


@pytest.fixture
def no_models(monkeypatch):
    """Makes loading any encoder or model weights fail the test."""
    import emo_jax.encoders
    import emo_jax.sample.generate as generate_module
    import emo_jax.train.checkpoint as checkpoint_module

    def loaded(*args, **kwargs):
        raise AssertionError("a model was loaded before the output paths were checked")

    for module, name in [(emo_jax.encoders, "audio_encoder"), (emo_jax.encoders, "vae"),
                         (generate_module, "random_model_params"), (checkpoint_module, "restore_model")]:
        monkeypatch.setattr(module, name, loaded)


def test_output_paths_are_checked_before_any_model_is_loaded(inputs, tmp_path, no_models, capsys):
    _, face, _, audio = inputs
    common = TINY + ["--random-init", "--image", face, "--audio", audio]
    (tmp_path / "a_file").write_text("not a folder")
    cases = [
        (["--out", str(tmp_path / "x.avi")], ["x.avi", "must end in .mp4", str(tmp_path / "x.mp4")]),
        (["--out", str(tmp_path)], [str(tmp_path), "is a directory", str(tmp_path / "out.mp4")]),
        (["--out", str(tmp_path / "a_file" / "x.mp4")], ["a_file", "is a file"]),
        (["--out", str(tmp_path / "x.mp4"), "--contact-sheet", str(tmp_path / "s.jpg")],
         ["--contact-sheet", "s.jpg", "must end in .png"]),
    ]
    for args, words in cases:
        assert main(common + args) == 2
        err = capsys.readouterr().err
        assert err.startswith("emo-generate: error: ") and len(err.strip().splitlines()) == 1, err
        assert all(w in err for w in words), (words, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]  # nothing written, no probe left behind


def test_an_unwritable_output_folder_is_named_before_any_model_is_loaded(inputs, tmp_path, no_models, capsys):
    import os
    import pathlib

    _, face, _, audio = inputs
    # A 0500 folder stops everyone but root; nobody, root included, creates files in /proc.
    locked = pathlib.Path("/proc") if os.geteuid() == 0 else tmp_path / "locked"
    if locked != pathlib.Path("/proc"):
        locked.mkdir()
        locked.chmod(0o500)
    try:
        for args in (["--out", str(locked / "x.mp4")],
                     ["--out", str(tmp_path / "x.mp4"), "--contact-sheet", str(locked / "new" / "s.png")]):
            assert main(TINY + ["--random-init", "--image", face, "--audio", audio] + args) == 2
            err = capsys.readouterr().err
            assert "cannot write in" in err and str(locked) in err, err
    finally:
        if locked != pathlib.Path("/proc"):
            locked.chmod(0o700)


def test_output_check_makes_nothing_for_a_folder_still_to_be_made(tmp_path):
    from emo_jax.sample.generate import check_output

    check_output(str(tmp_path / "new" / "deeper" / "x.mp4"), "--out", ".mp4")
    assert list(tmp_path.iterdir()) == []  # the writer makes the folders when it writes


def test_reference_is_framed_by_the_face_and_the_mask_grown():
    image = np.zeros((100, 200, 3), np.uint8)
    image[40:60, 180:200] = 255  # the "face", against the right border
    reference, mask = frame_reference(image, np.array([180, 40, 200, 60], np.float32), 80, face_expand=2.0,
                                      mask_expand=1.5)
    assert reference.shape == (80, 80, 3) and mask.shape == (80, 80)
    # The window is twice the face, 40 px, centred on it but pushed inside the image: x 160..200, y 30..70. At
    # 2x the face lands at x 40..80, y 20..60, and the mask box grown 1.5x covers x 30..90 (cut at 80), y 10..70.
    assert reference[40, 60].min() > 200 and reference[40, 20].max() == 0
    ys, xs = np.nonzero(mask)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (30, 79, 10, 69)


def test_a_portrait_is_framed_as_emo_prepare_framed_the_same_still_face(tmp_path):
    """emo-prepare on a still-face video and emo-generate's framing of its first frame, both with configs/tiny.py
    (data.face_expand, data.size): the same face box and crop window, frames within JPEG error, the same mask."""
    frames = np.full((75, 112, 160, 3), 90, np.uint8)  # landscape: the old largest-square rule would differ
    for frame in frames:
        draw_face(frame, 112, 56, 16)
    (tmp_path / "raw").mkdir()
    # Lossless, so every frame decodes the same and the face track is one box, as a still face's should be.
    video = write_mp4(tmp_path / "raw" / "still.mp4", frames, tone_with_click(2.5, None), lossless=True)
    assert prepare_main(["--config", "configs/tiny.py", "--input", str(tmp_path / "raw"), "--output",
                         str(tmp_path / "out"), "--min-seconds", "2", "--max-seconds", "4"]) == 0
    (record,) = [decode_record(r) for r in shard_records(shard_paths(str(tmp_path / "out")))]

    config = load_config("configs/tiny.py")
    d = config.data
    portrait = next(iter_frames(video, d.fps))
    box = detect_face(portrait, video)
    np.testing.assert_array_equal(record.crop_box, crop_window(box[None], 160, 112, d.face_expand))
    track = np.repeat(box[None], record.num_frames, axis=0)
    np.testing.assert_allclose(record.face_boxes, to_crop_pixels(track, record.crop_box, d.size), atol=1e-4)
    assert record.crop_box[2] - record.crop_box[0] < 112  # a window of its own, not the whole frame height
    reference, mask = frame_reference(portrait, box, d.size, d.face_expand, mask_expand=1.0)
    # JPEG at quality 95 moves a 32 px frame by 1.7 on average; the window shifted by one source pixel: 3.5.
    assert np.abs(reference.astype(int) - decode_jpeg(record.frames_jpeg[0])).mean() < 2.5
    np.testing.assert_array_equal(mask, record.face_mask)
    # emo-generate's own mask: the same box grown by sample.mask_expand, for the head motion to come.
    _, grown = frame_reference(portrait, box, d.size, d.face_expand, config.sample.mask_expand)
    assert np.all(grown >= mask) and grown.sum() > 1.5 * mask.sum()


def test_speed_is_a_number_or_a_per_frame_curve(tmp_path):
    np.testing.assert_array_equal(load_speed("2.5", 3), [2.5, 2.5, 2.5])
    np.save(tmp_path / "s.npy", np.arange(5, dtype=np.float32))
    np.testing.assert_array_equal(load_speed(str(tmp_path / "s.npy"), 4), [0, 1, 2, 3])  # longer curves are cut
    (tmp_path / "s.txt").write_text("0.5\n1.5\n")
    with pytest.raises(ValueError, match="give at least 3 finite values"):
        load_speed(str(tmp_path / "s.txt"), 3)
    with pytest.raises(ValueError, match="neither a number nor"):
        load_speed("fast", 3)


def test_checkpoint_must_hold_the_configs_model(monkeypatch):
    import emo_jax.train.checkpoint as checkpoint

    config = load_config("configs/tiny.py:stage2")
    # What the trainer's checkpoint gives back: the config through JSON, so its tuples are lists.
    stored = ml_collections.ConfigDict(json.loads(config.to_json_best_effort()))
    monkeypatch.setattr(checkpoint, "restore_params", lambda folder, step=None, use_ema=True: (stored, {"w": 1}))
    assert restore_model("run", config) == {"w": 1}
    config.model.unet.attention_impl, config.model.unet.remat = "chunked", True  # how it runs, not what
    config.model.unet.attention_min_keys = 4
    assert restore_model("run", config) == {"w": 1}
    config.model.clip_frames = 8
    with pytest.raises(ConfigError, match="model.clip_frames differ"):
        restore_model("run", config)
