"""emo-eval end to end on tiny videos with random weights files written in the real files' layouts: both metrics
with their counts, the pairing, the 10-frame video FVD skips, a missing weights file named with its fetch command,
a FID file of another digest, and folders without videos or pairs as one-line errors."""
import json
import pickle

import numpy as np
import pytest

from emo_jax.cli import eval as emo_eval
from emo_jax.eval import weights
from emo_jax.video.io import write_video

torch = pytest.importorskip("torch")
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
    for name in ("SyncNet", "F-SIM", "E-FID"):
        assert report["metrics"][name]["value"] is None and "not built" in report["metrics"][name]["status"]
    out_text, err = capsys.readouterr()
    assert "| FID | SyncNet | F-SIM | FVD | E-FID |" in out_text
    assert f"| {fid['value']:.2f} | not built | not built | {fvd['value']:.2f} | not built |" in out_text
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
    out_text, err = capsys.readouterr()
    assert "| not computed | not built | not built | not computed | not built |" in out_text
    assert f"FVD not computed: {weights.I3D_FILE} missing" in err


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
