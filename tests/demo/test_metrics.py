"""The demo's measures on ground-truth renders: they must see sync and identity where they exist, and not elsewhere."""
import cv2
import numpy as np
import pytest
from scipy import stats

from emo_jax.demo.evaluate import (LocatorResult, SpeedResult, locator_summary, mask_box, shift_mask, spearman,
                                   speed_result, speed_summary, widen_mask)
from emo_jax.demo.metrics import (continuity, face_patches, face_pose, head_roll, identity_accuracy,
                                  mouth_opening, pearson, roll_velocity, share_inside)
from emo_jax.demo.synthetic import (ROLL_AMPLITUDE, ROLL_SEGMENTS, ROLL_SPEEDS, HeadMotion, head_motion,
                                    loudness_per_frame, make_identities, reference_image, render_video, roll_track,
                                    speech_audio)

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


def test_roll_track_turns_at_the_given_speed_between_the_ends():
    speeds = np.where(np.arange(300) < 150, 0.8, 2.5)
    roll = roll_track(speeds, 0.1)
    assert np.abs(roll).max() <= ROLL_AMPLITUDE + 1e-9
    steps = np.abs(np.diff(roll))
    # Away from the turning points (where part of a step goes back) every step is the speed of its frame.
    straight = np.abs(roll[1:]) < ROLL_AMPLITUDE - 2.5
    assert np.allclose(steps[straight], speeds[1:][straight])
    assert np.all(roll_track(np.zeros(50), 0.3) == roll_track(np.zeros(50), 0.3)[0])


def test_head_motion_changes_roll_speed_within_a_video():
    """The drawn roll speed is constant within each of ROLL_SEGMENTS stretches, drawn from ROLL_SPEEDS, and differs
    between stretches in most videos: the label, not the motion frames, must tell the speed layers the new speed."""
    changed = 0
    for seed in range(10):
        m = head_motion(120, 15, SIDE, seed)
        stretches = np.split(m.roll_speed, ROLL_SEGMENTS)
        assert all(np.all(s == s[0]) and s[0] in ROLL_SPEEDS for s in stretches)
        changed += sum(a[0] != b[0] for a, b in zip(stretches, stretches[1:]))
        # The drawn roll turns at that speed away from the swing's ends.
        straight = np.abs(m.roll[1:]) < ROLL_AMPLITUDE - 6.5
        assert np.allclose(np.abs(np.diff(m.roll))[straight], m.roll_speed[1:][straight])
    assert changed >= 0.7 * 10 * (ROLL_SEGMENTS - 1)


def _rendered(ident, speed: float, seed: int, frames: int = 60, dx: float = 0.0):
    """32 px frames of a drawn head rolling at `speed` degrees per frame, moved dx pixels of the 128 px drawing; the
    middle 96 px are kept, about as emo-prepare crops the demo's videos."""
    audio = speech_audio(frames / 15, ident.pitch, seed=seed)
    m = head_motion(frames, 15, SIDE, seed)
    motion = HeadMotion(m.cx + dx, m.cy, roll_track(np.full(frames, speed), 0.3), np.full(frames, speed))
    return _small(render_video(ident, audio, 15, SIDE, seed=seed, motion=motion)[:, 16:112, 16:112]), motion


@pytest.mark.parametrize("k", range(5))
def test_head_roll_and_its_velocity_read_from_32px_frames(k):
    ident = make_identities(5)[k]
    reference = _small(reference_image(ident, SIDE)[None, 16:112, 16:112])[0]
    measured, drawn = [], []
    for speed in (0.0, 1.0, 2.0, 3.0):
        frames, motion = _rendered(ident, speed, seed=k)
        roll = head_roll(frames, reference)
        assert np.isfinite(roll).all()
        assert np.median(np.abs(roll - motion.roll)) < 2.0  # degrees (per-frame reading noise: sd 0.6-1.9)
        measured.append(roll_velocity(roll).mean())
        drawn.append(roll_velocity(motion.roll).mean())
    # A still head reads below 0.5 deg/frame (pixel noise, also the floor under slow turns); faster turns read
    # faster, every step of the way.
    assert measured[0] < 0.5 and np.all(np.diff(measured) > 0.3), measured
    # Turning heads read as the label reads the drawn roll: the label's smoothing rounds the turning points, so a
    # 3 deg/frame triangle wave of +-30 degrees reads about 2.5 both ways.
    assert np.allclose(measured[1:], drawn[1:], atol=0.3), (measured, drawn)
    assert 2.2 < drawn[-1] < 2.8


def test_speed_result_leaves_out_unreadable_frames():
    ident = make_identities(2)[1]
    reference = _small(reference_image(ident, SIDE)[None, 16:112, 16:112])[0]
    # A head rolling from 6 to 20 degrees, its last 10 frames turned 60 more: beyond the measure's +-40 (near 90
    # degrees the drawn face can match a wrong angle inside the range; the demo's heads swing +-30).
    frames, _ = _rendered(ident, 0.5, seed=5, frames=30)
    turn = cv2.getRotationMatrix2D((SMALL / 2, SMALL / 2), 60.0, 1.0)
    frames[20:] = [cv2.warpAffine(f, turn, (SMALL, SMALL), borderMode=cv2.BORDER_REPLICATE) for f in frames[20:]]
    result = speed_result("id1", 1.0, frames, reference)
    assert result.readable == pytest.approx(20 / 30)
    whole = roll_velocity(head_roll(frames[:20], reference))
    assert result.velocity_mean == pytest.approx(whole.mean())  # the 60-degree frames did not count as +-40


def test_roll_velocity_is_the_head_pose_labels_speed():
    """The roll as a rotation about the view axis, through emo-prepare's own smoothing and differencing: a constant
    turn reads its speed at every frame (ends included), a still head 0, and a NaN frame only its neighbours."""
    assert np.allclose(roll_velocity(np.arange(30) * 1.5), 1.5)
    assert np.allclose(roll_velocity(np.full(30, 7.0)), 0.0)
    roll = np.arange(30) * 1.5
    roll[12] = np.nan
    v = roll_velocity(roll)
    assert np.isnan(v[12]) and np.isnan(v[13]) and np.allclose(v[np.isfinite(v)], 1.5)


def test_head_roll_is_nan_where_no_turn_in_its_range_matches():
    ident = make_identities(2)[0]
    reference = _small(reference_image(ident, SIDE)[None, 16:112, 16:112])[0]
    frames, _ = _rendered(ident, 0.0, seed=2, frames=4)
    turned = np.stack([cv2.warpAffine(f, cv2.getRotationMatrix2D((SMALL / 2, SMALL / 2), 60.0, 1.0), (SMALL, SMALL),
                                      borderMode=cv2.BORDER_REPLICATE) for f in frames])
    assert np.isfinite(head_roll(frames, reference)).all()
    assert np.isnan(head_roll(turned, reference)).all()  # 60 degrees, the search spans +-40


def test_head_roll_ignores_a_colour_drift():
    ident = make_identities(2)[1]
    reference = _small(reference_image(ident, SIDE)[None, 16:112, 16:112])[0]
    frames, motion = _rendered(ident, 2.0, seed=3)
    drifted = np.clip(frames.astype(np.float32) * (0.85, 1.1, 0.9) + (10, -20, 5), 0, 255).astype(np.uint8)
    assert np.median(np.abs(head_roll(drifted, reference) - motion.roll)) < 1.5


def test_face_pose_centre_follows_the_head():
    ident = make_identities(3)[2]
    left, _ = _rendered(ident, 1.0, seed=1, dx=-6)
    right, _ = _rendered(ident, 1.0, seed=1, dx=6)
    pose_left, pose_right = face_pose(left, ident), face_pose(right, ident)
    assert np.allclose(pose_right.cx - pose_left.cx, 12 * SMALL / 96, atol=0.5)  # 12 px of the 96 px crop: 4 of 32
    # The drawn face's semi-axes, 0.21 x 128 px and 1.2 times that, in the 32 px frame of a 96 px crop; the pixels
    # where the face's edge blends into the hair count as face, which makes it up to a pixel larger, never smaller.
    for measured, drawn in ((pose_left.half_w, 0.21 * SIDE * SMALL / 96), (pose_left.half_h, 1.2 * 0.21 * SIDE / 3)):
        assert np.all((measured > 0.95 * drawn) & (measured < drawn + 2)), (measured, drawn)
    background = np.zeros((1, 8, 8, 3), np.uint8) + np.uint8(ident.background)
    assert np.isnan(face_pose(background, ident).cx[0])  # no face pixels, no face


def test_masks_move_and_widen():
    mask = np.zeros((32, 32), np.float32)
    mask[8:24, 10:22] = 1
    assert mask_box(mask) == (10, 8, 22, 24)
    assert mask_box(shift_mask(mask, 3)) == (13, 8, 25, 24)
    assert mask_box(shift_mask(mask, -3)) == (7, 8, 19, 24)
    assert mask_box(widen_mask(mask, 1.5)) == (7, 4, 25, 28)
    assert shift_mask(mask, 3).sum() == mask.sum()


def test_spearman_matches_scipy():
    rng = np.random.default_rng(0)
    for a, b in ((rng.normal(size=7), rng.normal(size=7)), ([1, 2, 3, 4], [0.5, 0.4, 0.9, 1.0]),
                 ([1, 2, 2, 3], [3, 1, 1, 2])):
        assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic)


def test_speed_and_locator_summaries():
    results = [SpeedResult("a", s, v, 0.1, 1.0) for s, v in ((0.1, 0.5), (1.0, 0.9), (2.0, 1.4))]
    results += [SpeedResult("a", None, 1.1, 0.6, 0.9)]
    summary = speed_summary(results, (0.1, 1.0, 2.0))
    assert summary["spearman"] == 1.0 and summary["settings"]["1"]["velocity_mean"] == 0.9
    assert summary["velocity_std_with_speed"] == pytest.approx(0.1) and summary["velocity_std_without"] == 0.6
    assert summary["unreadable_videos"] == []
    # A video whose roll was unreadable in most frames is left out and listed, not averaged in.
    summary = speed_summary(results + [SpeedResult("b", 1.0, 9.0, 5.0, readable=0.3)], (0.1, 1.0, 2.0))
    assert summary["settings"]["1"] == {"velocity_mean": 0.9, "velocity_std": 0.1, "videos": 1}
    assert [r["identity"] for r in summary["unreadable_videos"]] == ["b"] and summary["spearman"] == 1.0
    summary = speed_summary([SpeedResult("b", s, np.nan, np.nan, 0.0) for s in (0.1, 1.0)], (0.1, 1.0))
    assert np.isnan(summary["spearman"]) and summary["settings"]["1"]["videos"] == 0
    box, left, right = (3.0, 3.0, 29.0, 29.0), (0.0, 3.0, 26.0, 29.0), (6.0, 3.0, 32.0, 29.0)
    frame = (32.0, 32.0)
    located = [LocatorResult("a", "portrait", box, 16.0, 16.0, 1.0, frame),
               LocatorResult("a", "left", left, 13.5, 16.0, 0.9, frame),
               LocatorResult("a", "right", right, 17.0, 16.0, 0.8, frame),
               LocatorResult("a", "wide", box, 16.0, 16.0, 0.5, frame),
               LocatorResult("b", "wide", (0.0, 0.0, 32.0, 32.0), 16.0, 16.0, 1.0, frame)]
    s = locator_summary(located)
    assert s["mask_shift"] == 3.0
    assert s["face_shift"] == {"a_left": -2.5, "a_right": 1.0}
    assert s["shift_error_mean"] == pytest.approx(1.25) and s["shift_error_max"] == 2.0 and s["inside_wide"] == 0.75
    assert s["inside_moved"] == pytest.approx(0.85) and s["inside_portrait"] == 1.0
    assert s["wide_is_whole_frame"] == ["b"]  # a widened mask that is the whole frame tests nothing


def test_share_inside_counts_the_face_pixels_in_a_box():
    ident = make_identities(3)[1]
    frames, _ = _rendered(ident, 0.0, seed=4, frames=3)
    patches = face_patches(frames, ident)
    assert np.allclose(share_inside(patches, (0, 0, SMALL, SMALL)), 1.0)
    pose = face_pose(frames, ident)
    left_half = share_inside(patches, (0, 0, float(np.mean(pose.cx)), SMALL))
    assert np.all((left_half > 0.4) & (left_half < 0.6)), left_half  # the face is about symmetric about its centre
    assert np.allclose(share_inside(patches, (0, 0, 2, 2)), 0.0)
    background = np.zeros((1, 8, 8, 3), np.uint8) + np.uint8(ident.background)
    assert np.isnan(share_inside(face_patches(background, ident), (0, 0, 8, 8))[0])
