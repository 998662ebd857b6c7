"""emo-eval's face analysis of one video (emo_jax/eval/face_metrics.py) without dlib or Deep3DFaceRecon weights: a
frame without a face has a NaN box and landmarks and a NaN row of coefficients while the others are the aligned
crops' (a stand-in network: the crops' mean colour), and the missing files' lines name them."""
import numpy as np

from emo_jax.eval import weights
from emo_jax.eval.face_recon import align_face, five_points_from_mesh
from emo_jax.interop.metric_networks import load_face_metrics
from tests.data_pipeline.synthetic_videos import draw_face

STANDARD = np.array([[-0.31, 0.29, 0.10], [0.31, 0.29, 0.10], [0.0, 0.0, 0.55], [-0.24, -0.33, 0.15],
                     [0.24, -0.33, 0.15]])


def frames() -> list[np.ndarray]:
    out = [np.full((128, 128, 3), 90, np.uint8) for _ in range(4)]
    for t in (0, 1, 3):  # frame 2 is blank
        draw_face(out[t], 60 + 2 * t, 62, 24)
    return out


def mean_colour(crops: np.ndarray) -> np.ndarray:
    return np.repeat(crops.reshape(len(crops), -1, 3).mean(axis=1), 22, axis=1)[:, :64]


def test_a_frame_without_a_face_is_nan_and_the_others_are_their_aligned_crops(tmp_path):
    analyser, missing = load_face_metrics(str(tmp_path))
    assert analyser is not None and analyser.descriptor is None and analyser.recon is None
    assert set(missing) == {"F-SIM", "E-FID"}
    analyser.recon, analyser.standard = mean_colour, STANDARD
    video = frames()
    found = analyser.analyse(video)
    assert found.frames == 4 and found.descriptors is None
    assert np.isnan(found.boxes[2]).all() and np.isfinite(found.boxes[[0, 1, 3]]).all()
    assert np.isnan(found.points[2]).all() and np.isfinite(found.points[[0, 1, 3]]).all()
    assert np.isnan(found.expression[2]).all()
    for t in (0, 1, 3):
        crop = align_face(video[t], five_points_from_mesh(found.points[t]), STANDARD)
        np.testing.assert_array_equal(found.expression[t], mean_colour(crop[None])[0])
    assert np.isfinite(found.expression[[0, 1, 3]]).all()


def test_missing_files_are_named_with_what_to_do(tmp_path):
    (tmp_path / weights.FACE_RECON_FILE).write_bytes(b"")
    (tmp_path / weights.DLIB_SHAPE_FILE).write_bytes(b"")
    _, missing = load_face_metrics(str(tmp_path))
    assert missing["F-SIM"] == (f"not computed: {weights.DLIB_RECOGNITION_FILE} missing in {tmp_path}; fetch it "
                                f"with `python -m emo_jax.eval.fetch dlib --to {tmp_path}`")
    assert missing["E-FID"] == (f"not computed: {weights.STANDARD_POINTS_FILE} missing in {tmp_path} (user "
                                f"supplied); copy Deep3DFaceRecon_pytorch's BFM/similarity_Lm3D_all.mat (in its "
                                f"repository) to {tmp_path / weights.STANDARD_POINTS_FILE}")
