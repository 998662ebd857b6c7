"""emo-eval's SyncNet scoring of a video (emo_jax/eval/lipsync.py) against the same steps done by hand with
emo_jax/eval/syncnet.py on the whole decoded video: the face track, the crops cut a chunk at a time, the embeddings
in small sharded batches, and the videos it refuses with their reasons. Random weights in syncnet_python's key
layout; small drawn talking faces."""
import cv2
import numpy as np
import pytest

from emo_jax.audio.decode import load_audio
from emo_jax.eval import lipsync, syncnet
from emo_jax.interop.syncnet_import import load_syncnet
from emo_jax.video.io import read_video

torch = pytest.importorskip("torch")
pytest.importorskip("ai_edge_litert.interpreter")  # BlazeFace's runtime (the faces extra)
from tests.eval.torch_syncnet import SyncNetReference, randomize  # noqa: E402
from tests.data_pipeline.synthetic_videos import FPS as WRITE_FPS, SR, draw_face, write_mp4  # noqa: E402

SIDE, HALF_WIDTH = 128, 26


def save_syncnet_weights(path, seed: int = 0) -> str:
    """Random SyncNet weights in syncnet_v2.model's key layout, the last layers scaled so that distances come out
    near a real model's (around 10) rather than in the thousands, and both given one bias, so that embeddings lie
    nearer one another than the zero vectors the offset search pads the audio with (as a real model's do)."""
    state = randomize(SyncNetReference(), seed).state_dict()
    for key in ("netfcaud.3.weight", "netfclip.3.weight"):
        state[key] = state[key] * 2e-3
    for key in ("netfcaud.3.bias", "netfclip.3.bias"):
        state[key] = torch.ones_like(state[key])
    torch.save(state, path)
    return str(path)


def talking_video(path, seconds: float, seed: int = 0, face: bool = True, sound: bool = True,
                  sound_seconds: float | None = None) -> str:
    """A drawn face drifting right whose mouth opens with the loudness of a 220 Hz tone (as long as the video
    unless `sound_seconds`), written at 30 fps (so SyncNet's 25 fps resampling is exercised)."""
    frames = np.full((round(seconds * WRITE_FPS), SIDE, SIDE, 3), 90, np.uint8)
    syllables = lambda t: np.abs(np.sin(2 * np.pi * 2.5 * t + seed))  # noqa: E731
    for i, frame in enumerate(frames if face else []):
        cx, cy = 60 + 0.3 * i, 60
        draw_face(frame, cx, cy, HALF_WIDTH)
        opening = max(1, round(0.35 * HALF_WIDTH * syllables(i / WRITE_FPS)))
        cv2.ellipse(frame, (round(cx), round(cy + 0.65 * HALF_WIDTH)), (round(0.35 * HALF_WIDTH), opening), 0, 0,
                    360, (40, 10, 20), -1)
    t = np.arange(round((sound_seconds or seconds) * SR)) / SR
    audio = (0.3 * syllables(t) * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    return write_mp4(path, frames, audio if sound else None)


def direct_boxes(frames):
    """BlazeFace full-range on every frame's detection copy, tracked as emo-eval tracks, in frame pixels."""
    from emo_jax.faces.detect import detection_frame, make_detector, track_faces

    detector = make_detector("blazeface_full")
    copies = [detection_frame(frame, detector) for frame in frames]
    return track_faces([c for c, _ in copies], [0], detector, every=1, max_gap=25) / copies[0][1]


def direct_score(path, module, params):
    """SyncResult of the video from syncnet.py's functions over the whole decoded video at once."""
    frames, _ = read_video(path, 25)
    samples = syncnet.pcm16(load_audio(path, 16000))
    boxes = direct_boxes(frames)
    assert not np.isnan(boxes).any()
    audio, video = syncnet.embed_clip(module, params, samples, syncnet.face_crops(frames, boxes))
    return syncnet.sync_offset(audio, video)


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    return load_syncnet(save_syncnet_weights(tmp_path_factory.mktemp("syncnet") / "syncnet_v2.model"))


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("talking")
    return {"talking": talking_video(folder / "talking.mp4", 0.8), "silent": talking_video(
        folder / "silent.mp4", 0.5, sound=False), "faceless": talking_video(folder / "faceless.mp4", 0.5, face=False),
        "short": talking_video(folder / "short.mp4", 0.2),
        "sound_ends_first": talking_video(folder / "sound_ends_first.mp4", 0.8, seed=1, sound_seconds=0.4)}


def test_face_track_follows_the_drawn_face(network, videos):
    scorer = lipsync.LipSyncScorer(*network, batch=4)
    boxes = scorer.face_boxes(videos["talking"])
    frames, _ = read_video(videos["talking"], 25)
    assert boxes.shape == (len(frames), 4) == (20, 4)
    np.testing.assert_allclose(boxes, direct_boxes(frames), rtol=0, atol=1e-4)
    centre_x = (boxes[:, 0] + boxes[:, 2]) / 2
    drawn_x = 60 + 0.3 * (np.arange(20) + 0.5) * WRITE_FPS / 25  # the 30 fps frame shown at each 25 fps frame
    np.testing.assert_allclose(centre_x, drawn_x, atol=4)
    assert np.all(boxes[:, 2] - boxes[:, 0] > 1.5 * HALF_WIDTH)


@pytest.mark.parametrize("chunk", [1, 5, 100])
def test_crops_cut_a_chunk_at_a_time_equal_those_cut_from_the_whole_video(videos, chunk):
    frames, _ = read_video(videos["talking"], 25)
    rng = np.random.default_rng(chunk)
    corner = rng.uniform(10, 30, (len(frames), 2))
    boxes = np.concatenate([corner, corner + rng.uniform(50, 80, (len(frames), 1))], axis=1)
    pieces = list(lipsync._crop_chunks(videos["talking"], boxes, chunk))
    assert [len(p) for p in pieces[:-1]] == [chunk] * (len(pieces) - 1)
    np.testing.assert_array_equal(np.concatenate(pieces), syncnet.face_crops(frames, boxes))


# 6 windows where the sound ends first: AAC pads its 0.4 s to 11 frames' worth, and 11 - 5 = 6.
@pytest.mark.parametrize("video, windows", [("talking", 15), ("sound_ends_first", 6)])
def test_score_equals_syncnet_on_the_whole_video(network, videos, video, windows):
    """Batches of 4 windows sharded over 2 devices, crops a chunk of 4 frames at a time: the numbers of one pass of
    embed_clip over all the crops; where the sound ends first, the windows stop with it."""
    import jax

    scorer = lipsync.LipSyncScorer(*network, batch=4, devices=jax.local_devices()[:2])
    got = scorer.score(videos[video])
    expected = direct_score(videos[video], *network)
    assert (got["frames"], got["windows"]) == (20, windows)
    assert got["offset"] == expected.offset
    assert got["confidence"] == pytest.approx(expected.confidence, abs=1e-5)
    assert got["min_dist"] == pytest.approx(expected.min_dist, abs=1e-5)
    assert 1 < got["min_dist"] < 100 and got["confidence"] > 0.1


SKIP_REASONS = {
    "silent": "no audio to score: '{path}' has no audio stream",
    "faceless": "no face tracked in 12 of 12 frames at 25 fps (the first: frame 0)",
    # AAC's last frame pads the 0.2 s of sound written.
    "short": "too short: 5 frames at 25 fps and 0.26 s of audio; SyncNet needs 7 frames and 6 frames' worth of audio "
             "(0.24 s)"}


@pytest.mark.parametrize("video", sorted(SKIP_REASONS))
def test_videos_it_cannot_score_are_refused_with_the_reason(network, videos, video):
    scorer = lipsync.LipSyncScorer(*network, batch=4)
    with pytest.raises(lipsync.NotScored) as refused:
        scorer.score(videos[video])
    assert str(refused.value).startswith(SKIP_REASONS[video].format(path=videos[video]))
