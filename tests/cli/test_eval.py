"""emo-eval end to end on tiny videos with random weights files written in the real files' layouts: both metrics
with their counts, the pairing, the 10-frame video FVD skips, a missing weights file named with its fetch command,
a FID file of another digest, and folders without videos or pairs as one-line errors. Then, on a cheap feature
function: two real processes give one process's JSON, the progress bar, and the process flags. Last, SyncNet
(random weights, drawn talking faces) against syncnet.py's functions on each video, its skips, and over two
processes. Then the face metrics (the real dlib files, random Deep3DFaceRecon weights, made-up standard points,
drawn faces at 10 fps) against face_identity.py, face_recon.py and landmark_expression.py computed directly, the
frames without a face, --reference-images, and saved statistics."""
import contextlib
import io
import json
import os
import pickle
import shutil
import sys

import cv2
import numpy as np
import pytest

from emo_jax.cli import eval as emo_eval
from emo_jax.errors import UsageError
from emo_jax.eval import weights
from emo_jax.interop.syncnet_import import load_syncnet
from emo_jax.video.io import write_video

torch = pytest.importorskip("torch")
from tests.eval.multiprocess import run_processes, tiny_load  # noqa: E402
from tests.helpers import root_logging_kept  # noqa: E402
from tests.eval.test_lipsync import direct_score, save_syncnet_weights, talking_video  # noqa: E402
from tests.eval.torch_i3d import i3d_jax_variables, random_i3d  # noqa: E402
from tests.eval.torch_inception import FIDInceptionV3, randomize  # noqa: E402

SHORT = "10 frames, shorter than FVD's 16-frame clips"


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    torch.save(randomize(FIDInceptionV3(), seed=3).state_dict(), folder / weights.FID_FILE)
    with open(folder / weights.I3D_FILE, "wb") as f:
        pickle.dump(i3d_jax_variables(random_i3d(seed=3)), f)
    return folder, {name: weights.sha256_of(str(folder / name)) for name in (weights.FID_FILE, weights.I3D_FILE)}


def video(path, frames, seed):
    """Moving noise: a random image shifted one pixel per frame."""
    image = np.random.default_rng(seed).integers(0, 256, (32, 64, 3), dtype=np.uint8)
    write_video(str(path), np.stack([np.roll(image, t, axis=1) for t in range(frames)]), fps=25)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    generated, reference = root / "generated", root / "reference"
    generated.mkdir(), reference.mkdir()
    for seed, (name, frames) in enumerate([("a", 16), ("b", 20), ("c", 10)]):
        video(generated / f"{name}.mp4", frames, seed)
        video(reference / f"{name}.mp4", frames, seed + 10)
    video(generated / "only_generated.mp4", 2, 20)
    video(reference / "only_reference.mp4", 2, 21)
    (generated / "notes.txt").write_text("not a video")
    return generated, reference


def run_eval(folders, weights_folder, out, *extra):
    generated, reference = folders
    return emo_eval.main(["--generated", str(generated), "--reference", str(reference), "--weights",
                          str(weights_folder), "--out", str(out), *extra])


def test_both_metrics_with_their_counts(folders, weight_files, tmp_path, monkeypatch, capsys):
    folder, digests = weight_files
    # The random files stand in for the pinned ones.
    monkeypatch.setattr(weights, "FID_SHA256_PREFIX", digests[weights.FID_FILE][:8])
    monkeypatch.setattr(weights, "I3D_SHA256", digests[weights.I3D_FILE])
    out = tmp_path / "eval.json"
    assert run_eval(folders, folder, out, "--fid-every", "16", "--fid-batch", "4", "--fvd-batch", "2",
                    "--devices", "1") == 0
    report = json.loads(out.read_text())
    assert report["videos"]["pairs"] == 3
    assert report["videos"]["unpaired"] == {"generated_only": ["only_generated"],
                                            "reference_only": ["only_reference"], "count": 2}
    assert report["videos"]["frames_read"] == {"generated": 46, "reference": 46}
    fid, fvd = report["metrics"]["FID"], report["metrics"]["FVD"]
    assert fid["status"] == fvd["status"] == "computed"
    assert fid["value"] > 0 and fvd["value"] > 0
    assert fid["frames"] == {"generated": 4, "reference": 4}  # frame 0 of a and c, 0 and 16 of b
    assert fid["videos"] == {"generated": 3, "reference": 3}
    assert fvd["clips"] == {"generated": 2, "reference": 2}  # a: frames 0-15, b: 0-15 (4 left over), c: none
    assert fvd["videos"] == {"generated": 2, "reference": 2}
    assert fvd["skipped"]["count"] == 2
    assert {(s["side"], s["video"].rsplit("/", 1)[-1], s["reason"]) for s in fvd["skipped"]["videos"]} == {
        ("generated", "c.mp4", SHORT), ("reference", "c.mp4", SHORT)}
    assert report["preprocessing"]["FID"]["every"] == 16 and report["preprocessing"]["FVD"]["stride"] == 16
    for name in ("F-SIM", "E-FID"):
        assert report["metrics"][name]["value"] is None and "not computed" in report["metrics"][name]["status"]
    proxy = report["metrics"][emo_eval.PROXY]
    assert proxy["comparable_with_paper"] is False and "not comparable" in proxy["note"]
    assert report["metrics"]["SyncNet"]["status"].startswith(f"not computed: {weights.SYNCNET_FILE} missing")
    out_text, err = capsys.readouterr()
    assert "| FID | SyncNet | F-SIM | FVD | E-FID |" in out_text
    assert f"| {fid['value']:.2f} | not computed | not computed | {fvd['value']:.2f} | not computed |" in out_text
    assert f"{emo_eval.PROXY}: not computed (not comparable with the paper's E-FID" in out_text
    assert f"c.mp4: {SHORT}" in err and "without a pair" in err


def test_a_missing_weights_file_is_not_computed_naming_it_and_the_fetch_command(folders, tmp_path, capsys):
    empty = tmp_path / "no_weights"
    empty.mkdir()
    out = tmp_path / "eval.json"
    assert run_eval(folders, empty, out) == 0
    metrics = json.loads(out.read_text())["metrics"]
    assert metrics["FID"]["value"] is None and metrics["FVD"]["value"] is None
    assert metrics["FID"]["status"].startswith(f"not computed: {weights.FID_FILE} missing in {empty}; fetch it with")
    assert metrics["FVD"]["status"] == (f"not computed: {weights.I3D_FILE} missing in {empty}; fetch it with "
                                        f"`python -m emo_jax.eval.fetch i3d --to {empty}`")
    assert metrics["SyncNet"] == {"value": None, "status": (
        f"not computed: syncnet_v2.model missing in {empty}; fetch it with `curl -L --create-dirs -o "
        f"{empty / 'syncnet_v2.model'} http://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model`")}
    dlib = f"{weights.DLIB_RECOGNITION_FILE}, {weights.DLIB_SHAPE_FILE}"
    assert metrics["F-SIM"] == {"value": None, "status": (
        f"not computed: {dlib} missing in {empty}; fetch them with `python -m emo_jax.eval.fetch dlib --to {empty}`")}
    assert metrics["E-FID"]["value"] is None and metrics["E-FID"]["status"].startswith(
        f"not computed: epoch_20.pth, similarity_Lm3D_all.mat missing in {empty} (user supplied); copy ")
    assert f"to {empty / 'similarity_Lm3D_all.mat'}" in metrics["E-FID"]["status"]
    out_text, err = capsys.readouterr()
    assert "| not computed | not computed | not computed | not computed | not computed |" in out_text
    assert f"FVD not computed: {weights.I3D_FILE} missing" in err
    assert f"SyncNet not computed: {weights.SYNCNET_FILE} missing" in err


def test_a_fid_weights_file_of_another_digest_is_one_error_line(folders, weight_files, tmp_path, capsys):
    folder, digests = weight_files
    assert run_eval(folders, folder, tmp_path / "eval.json") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"emo-eval: error: {folder / weights.FID_FILE}: sha256 {digests[weights.FID_FILE]}, expected "
                       f"one starting 6726825d (pytorch-fid's {weights.FID_FILE}); fetch the right file with "
                       f"`{weights.fid_fetch_command(str(folder))}`")
    assert not (tmp_path / "eval.json").exists()


@pytest.mark.parametrize("case, expected", [("empty", "generated folder '{g}' holds no videos"),
                                            ("unpaired", "no video name is in both"),
                                            ("missing", "generated folder '{g}' does not exist")])
def test_folders_without_videos_or_pairs_are_one_error_line(tmp_path, capsys, case, expected):
    generated, reference = tmp_path / "generated", tmp_path / "reference"
    reference.mkdir()
    video(reference / "x.mp4", 2, 0)
    if case != "missing":
        generated.mkdir()
    if case == "unpaired":
        video(generated / "y.mp4", 2, 1)
    assert run_eval((generated, reference), tmp_path, tmp_path / "eval.json") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("emo-eval: error: ")
    assert expected.format(g=generated) in err[0]
    assert not (tmp_path / "eval.json").exists()


def table_rows(stdout):
    return [line for line in stdout.splitlines() if line.startswith("|")]


def test_two_processes_write_the_json_of_one(tmp_path, monkeypatch, capsys):
    """Pairs split over two real processes (a and c on process 0, b and d on process 1), their statistics and counts
    merged: the numbers of one process, written and printed by process 0 alone. Both metrics run on a cheap feature
    function (tests/eval/multiprocess.py), as two full-size networks in two processes would take minutes."""
    generated, reference = tmp_path / "generated", tmp_path / "reference"
    generated.mkdir(), reference.mkdir()
    for seed, (name, frames) in enumerate([("a", 16), ("b", 10), ("c", 10), ("d", 20)]):
        video(generated / f"{name}.mp4", frames, seed)
        video(reference / f"{name}.mp4", frames, seed + 10)
    common = ["--generated", generated, "--reference", reference, "--weights", tmp_path, "--devices", 1,
              "--fid-batch", 4, "--fvd-batch", 2, "--fvd-stride", 2]
    monkeypatch.setattr(emo_eval, "_load", tiny_load)
    assert emo_eval.main([str(a) for a in common] + ["--out", str(tmp_path / "one.json")]) == 0
    one_process_rows = table_rows(capsys.readouterr().out)
    outs = [tmp_path / f"two_{i}.json" for i in range(2)]
    results = run_processes(lambda i, address: ["eval", *common, "--out", outs[i], "--coordinator", address,
                                                "--num-processes", 2, "--process-id", i])
    for status, _, err in results:
        assert status == 0, err[-3000:]
    assert not outs[1].exists()
    one, two = json.loads((tmp_path / "one.json").read_text()), json.loads(outs[0].read_text())
    assert (one.pop("processes"), one.pop("devices"), two.pop("processes"), two.pop("devices")) == (1, 1, 2, 2)
    for name in ("FID", "FVD"):
        assert two["metrics"][name]["value"] == pytest.approx(one["metrics"][name]["value"], rel=1e-9)
        two["metrics"][name]["value"] = one["metrics"][name]["value"]
    assert two == one
    assert [(s["side"], s["video"].rsplit("/", 1)[-1]) for s in one["metrics"]["FVD"]["skipped"]["videos"]] == [
        ("generated", "b.mp4"), ("reference", "b.mp4"), ("generated", "c.mp4"), ("reference", "c.mp4")]
    assert one["metrics"]["FID"]["frames"] == {"generated": 56, "reference": 56}
    assert table_rows(results[0][1]) == one_process_rows and not table_rows(results[1][1])
    assert "pair 1/4: a" in results[0][2] and "pair 3/4: c" in results[0][2] and "pair 2/4" not in results[0][2]
    assert "pair 2/4: b" in results[1][2] and "pair 4/4: d" in results[1][2] and "pair 1/4" not in results[1][2]


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_terminal_gets_a_progress_bar_over_the_pairs_instead_of_a_line_each(folders, tmp_path, monkeypatch):
    monkeypatch.setattr(emo_eval, "_load", tiny_load)
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert run_eval(folders, tmp_path, tmp_path / "eval.json", "--devices", "1") == 0
    err = sys.stderr.getvalue()
    assert "pairs: 100%" in err and "3/3" in err
    assert "pair 1/3" not in err


@pytest.mark.parametrize("flags, expected", [
    (["--coordinator", "localhost:1"], "--coordinator, --num-processes and --process-id go together; pass all three"),
    (["--coordinator", "localhost:1", "--num-processes", "2", "--process-id", "2"],
     "--process-id 2 is not one of the 2 processes: pass 0 to 1"),
    (["--coordinator", "localhost:1", "--num-processes", "0", "--process-id", "0"],
     "--num-processes must be at least 1, got 0")])
def test_process_flags_are_checked_before_joining(folders, tmp_path, capsys, flags, expected):
    assert run_eval(folders, tmp_path, tmp_path / "eval.json", *flags) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"emo-eval: error: {expected}"]


@pytest.mark.parametrize("other, expected", [
    ({"names": ["a", "b"], "metrics": ["FID", "FVD"]},
     "process 1 pairs 2 videos, process 0 3 (1 names differ, e.g. ['c']): give every process the same --generated "
     "and --reference folders"),
    ({"names": ["a", "b", "c"], "metrics": ["FVD"]},
     "process 1 computes ['FVD'], process 0 ['FID', 'FVD']: put the same weights files in --weights on every host")])
def test_processes_that_see_other_videos_or_weights_are_refused(monkeypatch, other, expected):
    """What every process would raise after the gather, here with process 1's record handed in."""
    mine = {"names": ["a", "b", "c"], "metrics": ["FID", "FVD"]}
    monkeypatch.setattr(emo_eval, "allgather_json", lambda value: [value, other])
    with pytest.raises(UsageError) as refused:
        emo_eval._check_same_inputs(mine["names"], dict.fromkeys(mine["metrics"]))
    assert str(refused.value) == expected


def test_saved_reference_statistics_give_the_same_numbers_without_the_reference_videos(tmp_path, monkeypatch, capsys):
    generated, reference = tmp_path / "generated", tmp_path / "reference"
    generated.mkdir(), reference.mkdir()
    for seed, (name, frames) in enumerate([("a", 16), ("b", 20), ("c", 18)]):
        video(generated / f"{name}.mp4", frames, seed)
        video(reference / f"{name}.mp4", frames, seed + 10)
    monkeypatch.setattr(emo_eval, "_load", tiny_load)
    common = ["--generated", str(generated), "--weights", str(tmp_path), "--devices", "1", "--fvd-stride", "2"]
    stats = tmp_path / "stats"
    assert emo_eval.main(common + ["--reference", str(reference), "--out", str(tmp_path / "paired.json"),
                                   "--save-stats", str(stats)]) == 0
    assert sorted(p.name for p in stats.iterdir()) == [
        "E-FID_landmark_proxy_generated.npz", "E-FID_landmark_proxy_reference.npz", "FID_generated.npz",
        "FID_reference.npz", "FVD_generated.npz", "FVD_reference.npz", "preprocessing.json"]
    assert emo_eval.main(common + ["--reference-stats", str(stats), "--out", str(tmp_path / "saved.json")]) == 0
    paired, saved = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("paired", "saved"))
    for name in ("FID", "FVD"):
        assert saved["metrics"][name]["value"] == paired["metrics"][name]["value"]
        assert saved["metrics"][name]["videos"] == paired["metrics"][name]["videos"]
    assert saved["reference"] is None and saved["reference_stats"] == str(stats)
    capsys.readouterr()
    # Statistics made with other settings are not compared with these.
    assert emo_eval.main(common[:-1] + ["4", "--reference-stats", str(stats), "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert "was computed with other settings (FVD stride 2 there, 4 here)" in err and "Traceback" not in err
    assert emo_eval.main(common + ["--out", str(tmp_path / "x.json")]) == 2
    assert "pass exactly one of --reference DIR" in capsys.readouterr().err
    (stats / "FVD_reference.npz").unlink()
    assert emo_eval.main(common + ["--reference-stats", str(stats), "--out", str(tmp_path / "y.json")]) == 0
    assert json.loads((tmp_path / "y.json").read_text())["metrics"]["FVD"]["status"] == (
        f"not computed: no saved reference statistics FVD_reference.npz in {stats}")


@pytest.fixture(scope="module")
def syncnet_run(tmp_path_factory):
    """(generated folder, weights folder, emo-eval's arguments, JSON, stdout, stderr) of one emo-eval process on one
    device over three talking videos, a silent one and a faceless one, with SyncNet's random weights (FID and FVD on
    the cheap feature function, as the two-process run below has them)."""
    root = tmp_path_factory.mktemp("syncnet_eval")
    generated, folder = root / "generated", root / "weights"
    generated.mkdir(), folder.mkdir()
    talking_video(generated / "a.mp4", 0.8, seed=0)
    talking_video(generated / "b.mp4", 0.6, seed=1)
    talking_video(generated / "c.mp4", 0.4, seed=2)
    talking_video(generated / "silent.mp4", 0.4, sound=False)
    talking_video(generated / "faceless.mp4", 0.4, face=False)
    save_syncnet_weights(folder / weights.SYNCNET_FILE)
    common = ["--generated", generated, "--reference", generated, "--weights", folder, "--devices", 1,
              "--syncnet-batch", 8]
    out, stdout, stderr = root / "one.json", io.StringIO(), io.StringIO()
    with (pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr),
          root_logging_kept()):
        patch.setattr(emo_eval, "_load", tiny_load)
        assert emo_eval.main([str(a) for a in common] + ["--out", str(out)]) == 0, stderr.getvalue()
    return generated, folder, common, json.loads(out.read_text()), stdout.getvalue(), stderr.getvalue()


def test_syncnet_scores_each_generated_video_as_syncnet_py_does(syncnet_run):
    generated, folder, _, report, stdout, _ = syncnet_run
    sync = report["metrics"]["SyncNet"]
    assert sync["status"] == "computed" and sync["videos"] == {"generated": 3}
    module, params = load_syncnet(str(folder / weights.SYNCNET_FILE))
    expected = [direct_score(str(generated / f"{name}.mp4"), module, params) for name in ("a", "b", "c")]
    assert [(r["video"], r["frames"], r["windows"]) for r in sync["per_video"]] == [
        (str(generated / "a.mp4"), 20, 15), (str(generated / "b.mp4"), 15, 10), (str(generated / "c.mp4"), 10, 5)]
    for record, result in zip(sync["per_video"], expected):
        assert record["offset"] == result.offset
        assert record["confidence"] == pytest.approx(result.confidence, abs=1e-5)
        assert record["min_dist"] == pytest.approx(result.min_dist, abs=1e-5)
    assert sync["value"] == pytest.approx(np.mean([r.confidence for r in expected]), abs=1e-5)
    assert sync["mean_min_dist"] == pytest.approx(np.mean([r.min_dist for r in expected]), abs=1e-5)
    assert sync["mean_abs_offset"] == np.mean([abs(r.offset) for r in expected])
    assert sync["value"] > 0.1 and expected[0].confidence != pytest.approx(expected[1].confidence, abs=1e-3)
    assert sync["weights_sha256"] == weights.sha256_of(str(folder / weights.SYNCNET_FILE))
    assert report["preprocessing"]["SyncNet"]["fps"] == 25 and report["preprocessing"]["SyncNet"]["batch"] == 8
    fid, fvd = (report["metrics"][name]["value"] for name in ("FID", "FVD"))
    cells = [f"{fid:.2f}" if fid is not None else "not computed", f"{sync['value']:.2f}", "not computed",
             f"{fvd:.2f}" if fvd is not None else "not computed", "not computed"]
    assert "| " + " | ".join(cells) + " |" in stdout


def test_videos_syncnet_cannot_score_are_counted_skips_with_their_reasons(syncnet_run):
    generated, _, _, report, _, stderr = syncnet_run
    skipped = report["metrics"]["SyncNet"]["skipped"]
    silent, faceless = str(generated / "silent.mp4"), str(generated / "faceless.mp4")
    assert skipped == {"count": 2, "videos": [
        {"video": faceless, "reason": "no face tracked in 10 of 10 frames at 25 fps (the first: frame 0); SyncNet "
                                      "scores only videos with a face in every frame"},
        {"video": silent, "reason": f"no audio to score: {silent!r} has no audio stream; pass a file with a sound "
                                    "track"}]}
    assert f"SyncNet skipped {faceless}: no face tracked" in stderr
    assert f"SyncNet skipped {silent}: no audio to score" in stderr


def test_two_processes_give_the_syncnet_numbers_of_one(syncnet_run, tmp_path):
    """a, c and silent on process 0, b and faceless on process 1: each process's results and skips gathered in pair
    order (not process by process), the JSON of the one-process run."""
    *_, common, one, _, _ = syncnet_run
    outs = [tmp_path / f"two_{i}.json" for i in range(2)]
    results = run_processes(lambda i, address: ["eval", *common, "--out", outs[i], "--coordinator", address,
                                                "--num-processes", 2, "--process-id", i])
    for status, _, err in results:
        assert status == 0, err[-3000:]
    two = json.loads(outs[0].read_text())
    assert (two.pop("processes"), two.pop("devices")) == (2, 2)
    one = {key: value for key, value in one.items() if key not in ("processes", "devices")}
    # The proxy compares each video with itself here: a distance of rounding size (~3e-7), whose merge order moves it
    # by ~1e-11.
    for name in ("FID", "FVD", emo_eval.PROXY):
        if one["metrics"][name]["value"] is not None:
            assert two["metrics"][name]["value"] == pytest.approx(one["metrics"][name]["value"], rel=1e-9, abs=1e-9)
            two["metrics"][name]["value"] = one["metrics"][name]["value"]
    assert two["metrics"]["SyncNet"] == one["metrics"]["SyncNet"]
    assert two == one


FACE_FPS = 10  # few frames: dlib and the ResNet-50 are slow on a CPU


def no_fid_fvd(args, devices):
    return {}, {"FID": "not computed: not in this test", "FVD": "not computed: not in this test"}


def faces_video(path, seconds: float, seed: int, faceless: range = range(0)) -> str:
    """talking_video's drawn face and tone, with the frames in `faceless` (at 30 fps) left blank."""
    from tests.data_pipeline.synthetic_videos import FPS, SR, draw_face, write_mp4

    rng = np.random.default_rng(seed)
    frames = np.full((round(seconds * FPS), 128, 128, 3), 90, np.uint8)
    for i, frame in enumerate(frames):
        if i not in faceless:
            draw_face(frame, 60 + 0.4 * i + 3 * seed, 62, 24 + seed)
            cv2.ellipse(frame, (round(60 + 0.4 * i + 3 * seed), 78), (9, int(rng.integers(1, 7))), 0, 0, 360,
                        (40, 10, 20), -1)
    return write_mp4(path, frames, np.zeros(round(seconds * SR), np.float32))


def save_face_recon_files(folder) -> None:
    """Random Deep3DFaceRecon weights as epoch_20.pth and made-up standard landmarks in the .mat's layout."""
    from scipy.io import savemat
    from tests.eval.test_face_recon import STANDARD
    from tests.eval.torch_face_recon import ReconNet, randomize as randomize_recon

    torch.save({"net_recon": randomize_recon(ReconNet(), seed=1).state_dict()}, folder / weights.FACE_RECON_FILE)
    lm = np.random.default_rng(0).normal(size=(68, 3))
    for (a, b), point in zip(((37, 40), (43, 46)), STANDARD[:2]):
        lm[a - 1] = point + [0.05, 0, 0]
        lm[b - 1] = point - [0.05, 0, 0]
    lm[30], lm[48], lm[54] = STANDARD[2:]
    savemat(folder / weights.STANDARD_POINTS_FILE, {"lm": lm})


@pytest.fixture(scope="module")
def face_run(tmp_path_factory):
    """(generated, reference and weights folders, JSON, stdout, stderr) of emo-eval with the real dlib files, random
    Deep3DFaceRecon weights and made-up standard points at 10 fps: three pairs of drawn faces, generated c with six
    of its 18 frames blank (two at 10 fps). Its statistics are saved in stats/ beside the folders."""
    root = tmp_path_factory.mktemp("face_eval")
    generated, reference, folder = root / "generated", root / "reference", root / "weights"
    for d in (generated, reference, folder):
        d.mkdir()
    for seed, name in enumerate("abc"):
        faces_video(generated / f"{name}.mp4", 0.6, seed, faceless=range(6, 12) if name == "c" else range(0))
        faces_video(reference / f"{name}.mp4", 0.6, seed + 3)
    for name in weights.DLIB_SHA256:  # the set-up's verified files, as tests/eval/test_face_identity.py copies them
        source = os.path.join(weights.DEFAULT_FOLDER, name)
        assert weights.sha256_of(source) == weights.DLIB_SHA256[name], (
            f"{source} differs: run set-up's `python -m emo_jax.eval.fetch dlib` first")
        shutil.copy(source, folder / name)
    save_face_recon_files(folder)
    out, stdout, stderr = root / "faces.json", io.StringIO(), io.StringIO()
    with (pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr),
          root_logging_kept()):
        patch.setattr(emo_eval, "_load", no_fid_fvd)
        argv = ["--generated", generated, "--reference", reference, "--weights", folder, "--devices", 1, "--fps",
                FACE_FPS, "--efid-batch", 4, "--out", out, "--save-stats", root / "stats"]
        assert emo_eval.main([str(a) for a in argv]) == 0, stderr.getvalue()
    return generated, reference, folder, json.loads(out.read_text()), stdout.getvalue(), stderr.getvalue()


def direct_faces(path, detector, mesh):
    """Frames at FACE_FPS, the largest BlazeFace box per frame (NaN where none) and Face Mesh's landmarks."""
    from emo_jax.faces.detect import detection_frame, largest
    from emo_jax.video.io import iter_frames

    frames = list(iter_frames(str(path), FACE_FPS))
    boxes = []
    for frame in frames:
        small, scale = detection_frame(frame, detector)
        found = detector(small)
        boxes.append(largest(found) / scale if len(found) else np.full(4, np.nan))
    return frames, mesh.track(frames, np.stack(boxes))[0]


def test_face_metrics_equal_the_modules_on_each_video(face_run):
    from emo_jax.eval import face_recon, landmark_expression
    from emo_jax.eval.face_identity import FaceDescriptor, f_sim
    from emo_jax.eval.frechet import frechet_distance_between
    from emo_jax.faces.detect import make_detector
    from emo_jax.faces.mesh import FaceMesh
    from emo_jax.interop.face_recon_import import load_face_recon

    generated, reference, folder, report, stdout, stderr = face_run
    metrics = report["metrics"]
    descriptor = FaceDescriptor(str(folder), "blazeface")
    detector, mesh = make_detector("blazeface"), FaceMesh()
    _, params = load_face_recon(str(folder / weights.FACE_RECON_FILE))
    standard = face_recon.load_standard_points(str(folder / weights.STANDARD_POINTS_FILE))
    efid = {side: face_recon.new_stats() for side in ("generated", "reference")}
    proxy = {side: landmark_expression.new_stats() for side in ("generated", "reference")}
    no_landmarks = {"generated": 0, "reference": 0}
    expected_fsim = []
    for name in "abc":
        sides = {side: direct_faces(d / f"{name}.mp4", detector, mesh)
                 for side, d in (("generated", generated), ("reference", reference))}
        expected_fsim.append(f_sim(sides["reference"][0][0], sides["generated"][0], descriptor))
        for side, (frames, points) in sides.items():
            found = np.flatnonzero(np.isfinite(points).all(axis=(1, 2)))
            no_landmarks[side] += len(frames) - len(found)
            crops = np.stack([face_recon.align_face(frames[t], face_recon.five_points_from_mesh(points[t]), standard)
                              for t in found])
            efid[side].add(np.asarray(face_recon.expression_coefficients(params, crops / np.float32(255))))
            landmark_expression.add_video(proxy[side], points)

    fsim = metrics["F-SIM"]
    assert fsim["status"] == "computed" and fsim["videos"] == {"generated": 3}
    for record, expected in zip(fsim["per_video"], expected_fsim):
        for key in ("frames", "faces_found", "no_face", "same_person"):
            assert record[key] == expected[key]
        for key in ("mean_cosine", "min_cosine", "mean_distance", "max_distance"):
            assert record[key] == pytest.approx(expected[key], abs=1e-5)
    assert [r["reference"] for r in fsim["per_video"]] == [f"the first frame of {reference / n}.mp4" for n in "abc"]
    scored = sum(e["faces_found"] for e in expected_fsim)
    assert fsim["frames"]["scored"] == scored and fsim["frames"]["generated"] == 18
    assert fsim["value"] == pytest.approx(sum(e["mean_cosine"] * e["faces_found"] for e in expected_fsim) / scored,
                                          abs=1e-5)
    assert fsim["mean_distance"] == pytest.approx(
        sum(e["mean_distance"] * e["faces_found"] for e in expected_fsim) / scored, abs=1e-5)
    assert fsim["weights_sha256"] == weights.DLIB_SHA256

    for name, stats in (("E-FID", efid), (emo_eval.PROXY, proxy)):
        entry = metrics[name]
        assert entry["status"] == "computed" and entry["videos"] == {"generated": 3, "reference": 3}
        assert entry["frames"] == {side: s.count for side, s in stats.items()}
        assert entry["frames_without_face"] == no_landmarks
        distance = frechet_distance_between(stats["generated"], stats["reference"])
        assert entry["value"] == pytest.approx(distance, rel=1e-5) and distance > 0
    assert metrics[emo_eval.PROXY]["comparable_with_paper"] is False
    assert metrics["E-FID"]["weights_sha256"][weights.FACE_RECON_FILE] == weights.sha256_of(
        str(folder / weights.FACE_RECON_FILE))
    cells = ["not computed", "not computed", f"{fsim['value']:.2f}", "not computed", f"{metrics['E-FID']['value']:.2f}"]
    assert "| " + " | ".join(cells) + " |" in stdout
    assert f"{emo_eval.PROXY}: {metrics[emo_eval.PROXY]['value']:.2f} (not comparable" in stdout


def test_frames_without_a_face_are_counted_not_scored(face_run):
    *_, report, _, _ = face_run
    metrics = report["metrics"]
    faceless = [r["no_face"] for r in metrics["F-SIM"]["per_video"]]
    assert faceless == [0, 0, 2] and metrics["F-SIM"]["frames"]["no_face"] == 2
    assert metrics["F-SIM"]["frames"]["scored"] == 16
    assert metrics["E-FID"]["frames_without_face"] == {"generated": 2, "reference": 0}
    assert metrics["E-FID"]["frames"] == {"generated": 16, "reference": 18}


def test_saved_face_statistics_and_reference_images(face_run, tmp_path):
    """F-SIM from portraits in --reference-images (the reference videos' first frames as PNG) equals F-SIM from the
    videos; under --reference-stats the proxy is the paired run's and F-SIM needs --reference-images."""
    from PIL import Image

    from emo_jax.video.io import iter_frames

    generated, reference, folder, report, _, _ = face_run
    dlib_only, portraits, stats = tmp_path / "weights", tmp_path / "portraits", tmp_path / "stats"
    dlib_only.mkdir(), portraits.mkdir()
    for name in weights.DLIB_SHA256:
        shutil.copy(folder / name, dlib_only / name)
    for name in "abc":
        Image.fromarray(next(iter_frames(str(reference / f"{name}.mp4"), FACE_FPS))).save(portraits / f"{name}.png")
    common = ["--generated", str(generated), "--weights", str(dlib_only), "--devices", "1", "--fps", str(FACE_FPS)]

    def run(*extra):
        out = tmp_path / "out.json"
        assert emo_eval.main(common + ["--out", str(out), *extra]) == 0
        return json.loads(out.read_text())["metrics"]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(emo_eval, "_load", no_fid_fvd)
        paired = run("--reference", str(reference), "--save-stats", str(stats))
        saved = run("--reference-stats", str(stats))
        with_portraits = run("--reference-stats", str(stats), "--reference-images", str(portraits))
    expected = report["metrics"]["F-SIM"]
    assert paired["F-SIM"]["value"] == pytest.approx(expected["value"], abs=1e-12)
    assert paired["E-FID"]["status"].startswith("not computed: epoch_20.pth, similarity_Lm3D_all.mat missing")
    assert saved["F-SIM"] == {"value": None, "status": (
        "not computed: under --reference-stats there are no reference videos to take the portrait from; pass "
        "--reference-images DIR (each portrait named as its generated video)")}
    assert saved[emo_eval.PROXY]["value"] == pytest.approx(paired[emo_eval.PROXY]["value"], rel=1e-12)
    assert saved[emo_eval.PROXY]["frames_without_face"] == paired[emo_eval.PROXY]["frames_without_face"]
    assert with_portraits["F-SIM"]["value"] == pytest.approx(expected["value"], abs=1e-12)
    assert [r["reference"] for r in with_portraits["F-SIM"]["per_video"]] == [str(portraits / f"{n}.png")
                                                                                 for n in "abc"]


def test_saved_e_fid_statistics_give_the_paired_numbers_and_need_the_same_files(face_run, tmp_path):
    """Against face_run's saved statistics E-FID and the proxy are its numbers; saved with other standard points,
    E-FID is not computed and the proxy still is."""
    from scipy.io import loadmat, savemat

    generated, reference, folder, report, _, _ = face_run
    stats = reference.parent / "stats"
    common = ["--generated", str(generated), "--reference-stats", str(stats), "--devices", "1", "--fps",
              str(FACE_FPS), "--efid-batch", "4", "--out", str(tmp_path / "out.json")]
    other = tmp_path / "other_weights"
    other.mkdir()
    shutil.copy(folder / weights.FACE_RECON_FILE, other)
    lm = loadmat(str(folder / weights.STANDARD_POINTS_FILE))["lm"]
    savemat(other / weights.STANDARD_POINTS_FILE, {"lm": lm * 1.01})  # other standard points
    runs = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(emo_eval, "_load", no_fid_fvd)
        for name, weights_folder in (("same", folder), ("other", other)):
            assert emo_eval.main(common + ["--weights", str(weights_folder)]) == 0
            runs[name] = json.loads((tmp_path / "out.json").read_text())["metrics"]
    for name in ("E-FID", emo_eval.PROXY):
        assert runs["same"][name]["value"] == pytest.approx(report["metrics"][name]["value"], rel=1e-12)
        assert runs["same"][name]["frames"] == report["metrics"][name]["frames"]
        assert runs["same"][name]["frames_without_face"] == report["metrics"][name]["frames_without_face"]
    assert runs["other"]["E-FID"]["value"] is None
    assert runs["other"]["E-FID"]["status"].startswith(f"not computed: the saved reference statistics in {stats} "
                                                       "were made with E-FID files of sha256")
    assert runs["other"][emo_eval.PROXY]["value"] == pytest.approx(report["metrics"][emo_eval.PROXY]["value"],
                                                                   rel=1e-12)
