"""SyncNet against a PyTorch reference of syncnet_python's network (random weights through the importer), its MFCCs
against python_speech_features, its crops and windows against run_pipeline's and evaluate's arithmetic, and the
offset search on planted shifts."""
import contextlib

import cv2
import jax
import numpy as np
import pytest

from emo_jax.errors import CheckpointError
from emo_jax.eval import syncnet
from emo_jax.interop.syncnet_import import load_syncnet, syncnet_params

import python_speech_features  # noqa: E402  (the test extra installs it: the MFCC reference)
import torch  # noqa: E402
from tests.eval.torch_syncnet import SyncNetReference, randomize  # noqa: E402


@pytest.fixture(scope="module")
def networks(tmp_path_factory):
    reference = randomize(SyncNetReference(), seed=0)
    path = tmp_path_factory.mktemp("syncnet") / "syncnet_random.model"
    torch.save(reference.state_dict(), path)
    module, params = load_syncnet(str(path))
    return reference, module, params


def relative_error(ours, theirs):
    return float(np.linalg.norm(ours - theirs) / np.linalg.norm(theirs))


def speech_like(seconds: float, seed: int) -> np.ndarray:
    """int16-scale samples: noise shaped by a slow envelope, so MFCC frames differ from one another."""
    rng = np.random.default_rng(seed)
    n = int(seconds * syncnet.SAMPLE_RATE)
    envelope = 0.2 + np.abs(np.sin(np.arange(n) / 1500.0))
    return np.round(rng.normal(0, 3000, n) * envelope).clip(-32768, 32767)


def test_embeddings_match_reference(networks):
    reference, module, params = networks
    cepstra = syncnet.mfcc(speech_like(0.5, 0))
    mfcc_N13201 = syncnet.audio_windows(cepstra, [0, 7])
    crops = np.random.default_rng(1).integers(0, 256, (7, syncnet.CROP_SIZE, syncnet.CROP_SIZE, 3), np.uint8)
    lips_N5HWC = syncnet.lip_windows(crops, [0, 2])
    audio, lip = jax.jit(module.apply)({"params": params}, mfcc_N13201, lips_N5HWC)
    with torch.no_grad():
        audio_ref = reference.forward_aud(torch.from_numpy(mfcc_N13201).permute(0, 3, 1, 2)).numpy()
        lip_ref = reference.forward_lip(torch.from_numpy(lips_N5HWC).permute(0, 4, 1, 2, 3)).numpy()
    assert audio.shape == lip.shape == (2, syncnet.EMBEDDING)
    assert relative_error(np.asarray(audio), audio_ref) < 1e-4
    assert relative_error(np.asarray(lip), lip_ref) < 1e-4
    assert relative_error(audio_ref[0], audio_ref[1]) > 1e-2 and relative_error(lip_ref[0], lip_ref[1]) > 1e-2


def test_embed_clip_follows_evaluate(networks):
    """Windows as SyncNetInstance.evaluate cuts them: min(frames, samples // 640) - 5 of them, frame i with MFCC
    columns [4i, 4i + 20), from BGR frames; batches of 2 over 3 windows."""
    reference, module, params = networks
    samples = speech_like(0.33, 2)  # 5280 samples: 8 frames' worth, so min(9, 8) - 5 = 3 windows
    crops_rgb = np.random.default_rng(3).integers(0, 256, (9, syncnet.CROP_SIZE, syncnet.CROP_SIZE, 3), np.uint8)
    audio, video = syncnet.embed_clip(module, params, samples, crops_rgb, batch=2)
    assert audio.shape == video.shape == (3, syncnet.EMBEDDING)
    cct = torch.from_numpy(python_speech_features.mfcc(samples, 16000).T[None, None].astype(np.float32))
    imtv = torch.from_numpy(crops_rgb[..., ::-1].astype(np.float32)).permute(3, 0, 1, 2)[None]  # BGR, NCDHW
    with torch.no_grad():
        audio_ref = reference.forward_aud(torch.cat([cct[..., 4 * i:4 * i + 20] for i in range(3)])).numpy()
        video_ref = reference.forward_lip(torch.cat([imtv[:, :, i:i + 5] for i in range(3)])).numpy()
    assert relative_error(audio, audio_ref) < 1e-4
    assert relative_error(video, video_ref) < 1e-4


def test_embed_clip_refuses_a_clip_too_short(networks):
    _, module, params = networks
    with pytest.raises(ValueError, match="at least 6 frames"):
        syncnet.embed_clip(module, params, np.zeros(640 * 5), np.zeros((10, 224, 224, 3), np.uint8))


def test_window_count():
    assert syncnet.window_count(100, 640 * 100) == 95
    assert syncnet.window_count(100, 640 * 50 + 639) == 45
    assert syncnet.window_count(5, 640 * 100) == 0


def test_importer_names_the_file_and_key(networks):
    reference, module, _ = networks
    state = {k: v.numpy() for k, v in reference.state_dict().items()}
    bad = dict(state, **{"netcnnlip.5.running_var": np.ones(255, np.float32)})
    with pytest.raises(CheckpointError, match=r"sn\.model: key 'netcnnlip\.5\.running_var' has shape \(255,\)"):
        syncnet_params(bad, module, "sn.model")
    missing = {k: v for k, v in state.items() if k != "netfcaud.3.weight"}
    with pytest.raises(CheckpointError, match=r"sn\.model: key 'netfcaud\.3\.weight' missing"):
        syncnet_params(missing, module, "sn.model")
    with pytest.raises(CheckpointError, match=r"sn\.model: 1 keys .* \['netcnnaud\.21\.weight'\]"):
        syncnet_params(dict(state, **{"netcnnaud.21.weight": np.ones(3)}), module, "sn.model")
    with pytest.raises(CheckpointError, match="SyncNet weights file 'nowhere.model' does not exist"):
        load_syncnet("nowhere.model")


@pytest.mark.parametrize("length", [300, 400, 16000, 16000 * 3 + 77])
def test_mfcc_equals_python_speech_features(length):
    samples = np.random.default_rng(length).integers(-20000, 20000, length).astype(np.int16)
    samples[:200] = 0  # silent frames take the log of python_speech_features' eps
    expected = python_speech_features.mfcc(samples, 16000)
    got = syncnet.mfcc(samples)
    assert got.shape == expected.shape == (1 if length <= 400 else 1 + -(-(length - 400) // 160), 13)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_mel_filterbank_equals_python_speech_features():
    np.testing.assert_allclose(syncnet.mel_filterbank(), python_speech_features.get_filterbanks(26, 512, 16000),
                               rtol=0, atol=1e-12)


def test_pcm16_rounds_and_clips_as_ffmpeg():
    np.testing.assert_array_equal(syncnet.pcm16(np.array([0.0, 0.5, -1.0, 1.0, 2.0, 1.5 / 32768])),
                                  [0, 16384, -32768, 32767, 32767, 2])


def test_windows_cut_mfcc_columns_and_flip_to_bgr():
    cepstra = np.arange(40 * 13, dtype=np.float64).reshape(40, 13)
    patches = syncnet.audio_windows(cepstra, [0, 3])
    assert patches.shape == (2, 13, 20, 1)
    np.testing.assert_array_equal(patches[1, :, :, 0], cepstra[12:32].T)
    crops = np.random.default_rng(0).integers(0, 256, (8, 4, 4, 3), np.uint8)
    lips = syncnet.lip_windows(crops, [3])
    assert lips.shape == (1, 5, 4, 4, 3) and lips.dtype == np.float32
    np.testing.assert_array_equal(lips[0, :, :, :, 0], crops[3:8, :, :, 2])


def test_face_crops_cut_as_run_pipeline():
    """A still box (100, 100)-(200, 200): half-size 50, so rows [100, 240) and columns [80, 220); one frame's box
    thrown off is smoothed away by the 13-frame median; a box at the corner reaches into the grey 110 padding."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (20, 300, 320, 3), np.uint8)
    boxes = np.tile([100.0, 100.0, 200.0, 200.0], (20, 1))
    boxes[10] = [10.0, 30.0, 60.0, 90.0]
    crops = syncnet.face_crops(frames, boxes)
    assert crops.shape == (20, 224, 224, 3)
    for i in (0, 10, 19):
        np.testing.assert_array_equal(crops[i], cv2.resize(frames[i, 100:240, 80:220], (224, 224)))
    corner = syncnet.face_crops(frames[:7], np.tile([0.0, 0.0, 40.0, 40.0], (7, 1)))
    # Half-size 20: columns [-8, 48) of the frame, the first 8 of 56 padding, 32 of the 224 crop columns.
    np.testing.assert_array_equal(corner[:, :, :29], 110)
    assert (corner[:, :, 40:] != 110).mean() > 0.9


@pytest.mark.parametrize("length", [7, 12, 40])
def test_box_smoothing_is_scipys_medfilt(length):
    from scipy import signal
    x = np.random.default_rng(length).normal(100.0, 10.0, length)
    with pytest.warns(UserWarning) if length < 13 else contextlib.nullcontext():  # scipy warns of its zero padding
        expected = signal.medfilt(x, 13)
    np.testing.assert_array_equal(syncnet._median_filter(x), expected)


def test_face_crops_need_seven_frames():
    with pytest.raises(ValueError, match="at least 7 frames"):
        syncnet.face_crops(np.zeros((6, 64, 64, 3), np.uint8), np.tile([10.0, 10.0, 50.0, 50.0], (6, 1)))


def planted(k: int, noise: float, windows: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random unit audio embeddings; video window i = audio window i - k plus noise (random where i - k is out of
    range)."""
    rng = np.random.default_rng(seed)
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    audio = unit(rng.normal(size=(windows, 64)))
    video = unit(rng.normal(size=(windows, 64)))
    i = np.arange(windows)
    inside = (i - k >= 0) & (i - k < windows)
    video[inside] = audio[i[inside] - k]
    return audio, video + noise * rng.normal(size=video.shape) / np.sqrt(64)


@pytest.mark.parametrize("k", [-5, 0, 7])
def test_sync_offset_finds_a_planted_shift(k):
    result = syncnet.sync_offset(*planted(k, noise=0.3))
    assert result.offset == k
    assert result.distances_TS.shape == (60, 31)
    assert result.min_dist == pytest.approx(result.distances_TS.mean(axis=0).min())
    assert result.confidence > 0.5


def test_confidence_falls_as_noise_grows():
    confidences = [syncnet.sync_offset(*planted(3, noise=n)).confidence for n in (0.1, 0.5, 1.0, 2.0)]
    assert all(a > b for a, b in zip(confidences, confidences[1:])), confidences


def test_sync_offset_equals_calc_pdist():
    """syncnet_python's arithmetic in torch: pad the audio by vshift zero rows, pairwise_distance (eps 1e-6) of each
    video window against 2 * vshift + 1 audio rows, mean over windows, torch.min and torch.median."""
    rng = np.random.default_rng(5)
    audio, video = rng.normal(size=(2, 40, 16)).astype(np.float32)
    vshift = 10
    padded = torch.nn.functional.pad(torch.from_numpy(audio), (0, 0, vshift, vshift))
    dists = torch.stack([torch.nn.functional.pairwise_distance(torch.from_numpy(video[[i]]).repeat(21, 1),
                                                               padded[i:i + 21]) for i in range(40)], 1)
    curve = dists.mean(1)
    minval, minidx = torch.min(curve, 0)
    result = syncnet.sync_offset(audio, video, vshift=vshift)
    assert result.offset == vshift - int(minidx)
    assert result.min_dist == pytest.approx(float(minval), rel=1e-5)
    assert result.confidence == pytest.approx(float(torch.median(curve) - minval), rel=1e-4, abs=1e-5)
    np.testing.assert_allclose(result.distances_TS, dists.T.numpy(), rtol=1e-5)


def test_sync_offset_refuses_unequal_lengths():
    with pytest.raises(ValueError, match=r"\(10, 8\) and \(9, 8\)"):
        syncnet.sync_offset(np.zeros((10, 8)), np.zeros((9, 8)))
