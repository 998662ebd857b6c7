"""The demo's measures on ground-truth renders: they must see sync and identity where they exist, and not elsewhere."""
import cv2
import numpy as np

from emo_jax.demo.metrics import continuity, identity_accuracy, mouth_opening, pearson
from emo_jax.demo.synthetic import loudness_per_frame, make_identities, reference_image, render_video, speech_audio

FPS, SIDE, SMALL = 25, 128, 32


def _small(frames):
    return np.stack([cv2.resize(f, (SMALL, SMALL), interpolation=cv2.INTER_AREA) for f in frames])


def test_ground_truth_video_scores_sync_and_identity():
    ids = make_identities(4)
    refs = [_small(reference_image(i, SIDE)[None])[0] for i in ids]
    for k, ident in enumerate(ids):
        audio = speech_audio(6.0, ident.pitch, seed=k)
        frames = _small(render_video(ident, audio, FPS, SIDE, seed=k))
        assert len(frames) == 150
        loud = loudness_per_frame(audio, FPS, len(frames))
        assert pearson(mouth_opening(frames), loud) > 0.95
        assert identity_accuracy(frames, k, refs) == 1.0
        # Someone else's identity index is (almost) never the nearest.
        assert identity_accuracy(frames, (k + 1) % 4, refs) == 0.0


def test_a_closed_mouth_does_not_correlate():
    ident = make_identities(1)[0]
    audio = speech_audio(6.0, ident.pitch, seed=3)
    still = np.repeat(_small(reference_image(ident, SIDE)[None]), 150, axis=0)
    assert pearson(mouth_opening(still), loudness_per_frame(audio, FPS, 150)) == 0.0


def test_continuity_separates_boundary_jumps():
    frames = np.zeros((12, 8, 8, 3), np.uint8)
    frames[4:8] = 10
    frames[8:] = 20  # jumps at the boundaries after frames 3 and 7 (clips of 4)
    boundary, inside = continuity(frames, 4)
    assert boundary == 10.0 and inside == 0.0
