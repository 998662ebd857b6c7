"""E-FID's face reconstruction network in Flax against a PyTorch reference of Deep3DFaceRecon's ReconNetWrapper
(random weights and batch-norm statistics, saved as an epoch_20.pth-like checkpoint and read by the importer), the
importer's errors, and align_face's geometry."""
import cv2
import numpy as np
import pytest

from emo_jax.errors import CheckpointError
from emo_jax.eval.face_recon import (EXPRESSION, NUM_COEFFICIENTS, RESCALE, SIZE, FaceReconNet, align_face,
                                     coefficients, expression_coefficients, five_points_from_mesh,
                                     load_standard_points)
from emo_jax.interop.face_recon_import import face_recon_params, load_face_recon, read_net_recon

torch = pytest.importorskip("torch")
from tests.eval.torch_face_recon import ReconNet, randomize  # noqa: E402

# Made-up standard points for the geometry tests (the real ones are the user's .mat): eyes, nose, mouth corners.
STANDARD = np.array([[-0.31, 0.29, 0.10], [0.31, 0.29, 0.10], [0.0, 0.0, 0.55], [-0.24, -0.33, 0.15],
                     [0.24, -0.33, 0.15]])


@pytest.fixture(scope="module")
def networks(tmp_path_factory):
    reference = randomize(ReconNet(), seed=0)
    path = tmp_path_factory.mktemp("face_recon") / "epoch_20.pth"
    torch.save({"net_recon": reference.state_dict(), "opt_00": {"state": {}, "param_groups": [{"lr": 1e-4}]}},
               path)
    module, params = load_face_recon(str(path))
    return reference, params, str(path)


def two_images() -> np.ndarray:
    """Two 224x224 images in [0, 1] unlike enough to give clearly different coefficients: noise, and a colour ramp
    with a little noise."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0.0, 1.0, SIZE, dtype=np.float32)
    smooth = np.stack([ramp[:, None] * np.ones(SIZE), ramp[None, :] * np.ones((SIZE, 1)),
                       np.full((SIZE, SIZE), 0.3)], axis=-1)
    return np.stack([rng.random((SIZE, SIZE, 3)), 0.9 * smooth + 0.1 * rng.random((SIZE, SIZE, 3))]
                    ).astype(np.float32)


def relative_error(ours, theirs):
    return float(np.linalg.norm(ours - theirs) / np.linalg.norm(theirs))


def test_coefficients_match_the_reference(networks):
    reference, params, _ = networks
    images = two_images()
    with torch.no_grad():
        expected = reference(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
    got = np.asarray(coefficients(params, images))
    assert got.shape == (2, NUM_COEFFICIENTS)
    assert relative_error(got, expected) < 1e-4
    assert relative_error(got[0], got[1]) > 0.1  # the two images give different coefficients
    expression = np.asarray(expression_coefficients(params, images))
    np.testing.assert_array_equal(expression, got[:, 80:144])
    # The expression head is final_layers.1 (80 identity outputs come first).
    with torch.no_grad():
        pooled = reference.backbone(torch.from_numpy(images).permute(0, 3, 1, 2))
        head = reference.final_layers[1](pooled).flatten(1).numpy()
    assert relative_error(expression, head) < 1e-4
    assert (EXPRESSION.start, EXPRESSION.stop) == (80, 144)


def test_expression_coefficients_refuse_unaligned_images(networks):
    with pytest.raises(ValueError, match=r"aligned crops \[B, 224, 224, 3\]"):
        expression_coefficients(networks[1], np.zeros((1, 256, 256, 3), np.float32))


def test_a_bare_state_dict_loads_too(networks, tmp_path):
    reference, params, _ = networks
    path = tmp_path / "net_recon.pth"
    torch.save(reference.state_dict(), path)
    _, again = load_face_recon(str(path))
    np.testing.assert_array_equal(again["final_layers_1"]["kernel"], params["final_layers_1"]["kernel"])


def test_importer_errors_name_the_file_and_key(networks, tmp_path):
    _, _, path = networks
    state = read_net_recon(path)
    module = FaceReconNet()

    missing = {k: v for k, v in state.items() if k != "backbone.layer3.2.bn2.running_var"}
    with pytest.raises(CheckpointError, match=r"epoch_20\.pth: key 'backbone\.layer3\.2\.bn2\.running_var' missing"):
        face_recon_params(missing, module, path)

    wrong = dict(state, **{"final_layers.1.weight": np.zeros((80, 2048, 1, 1), np.float32)})
    with pytest.raises(CheckpointError, match=r"key 'final_layers\.1\.weight' has shape \(80, 2048, 1, 1\)"):
        face_recon_params(wrong, module, path)

    extra = dict(state, **{"backbone.fc.weight": np.zeros((257, 2048), np.float32)})
    with pytest.raises(CheckpointError, match=r"1 keys .* no place for: \['backbone\.fc\.weight'\]"):
        face_recon_params(extra, module, path)

    other = tmp_path / "other.pth"
    torch.save({"net_recog": {"w": torch.zeros(1)}, "epoch": {"n": torch.zeros(1)}}, other)
    with pytest.raises(CheckpointError, match=r"other\.pth.*no 'net_recon' state dict"):
        read_net_recon(str(other))
    with pytest.raises(CheckpointError, match=r"does not exist"):
        load_face_recon(str(tmp_path / "absent.pth"))


def test_load_standard_points_reduces_68_to_5(tmp_path):
    from scipy.io import savemat

    lm = np.random.default_rng(0).normal(size=(68, 3)).astype(np.float32)
    savemat(tmp_path / "similarity_Lm3D_all.mat", {"lm": lm})
    five = load_standard_points(str(tmp_path / "similarity_Lm3D_all.mat"))
    expected = np.stack([(lm[36] + lm[39]) / 2, (lm[42] + lm[45]) / 2, lm[30], lm[48], lm[54]])
    np.testing.assert_allclose(five, expected, rtol=1e-6)
    savemat(tmp_path / "wrong.mat", {"points": lm})
    with pytest.raises(ValueError, match=r"wrong\.mat.*'lm'"):
        load_standard_points(str(tmp_path / "wrong.mat"))


def test_five_points_from_mesh_order_and_pixel_centres():
    mesh = np.zeros((468, 3))
    mesh[:, 0], mesh[:, 1] = np.arange(468), 1000 + np.arange(468)
    five = five_points_from_mesh(mesh)
    expected_x = np.array([(33 + 133) / 2, (362 + 263) / 2, 4, 61, 291]) - 0.5
    np.testing.assert_allclose(five, np.stack([expected_x, expected_x + 1000], axis=1))


def dots_image(points_xy: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A dark frame with a smooth bright spot at each point (sigma 3 px)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    image = sum(np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 3.0**2)) for x, y in points_xy)
    return np.repeat((255 * np.clip(image, 0, 1)).astype(np.uint8)[..., None], 3, axis=-1)


def spot_centres(crop: np.ndarray, near_xy: np.ndarray) -> np.ndarray:
    """Intensity centroids of the crop's spots within 8 px of each expected position."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    weight = crop[..., 0].astype(np.float64)
    centres = []
    for x, y in near_xy:
        w = weight * (((xx - x) ** 2 + (yy - y) ** 2) < 8**2)
        centres.append([(w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()])
    return np.array(centres)


def test_align_face_puts_the_standard_points_at_102_times_their_size():
    """Points that are an exact frontal projection of the standard face (y up in the fit) land in the crop at
    112 + 102 (x, -y) of the standard points, wherever and however large the face is in the frame."""
    for scale, origin in ((180.0, (260.0, 230.0)), (95.0, (130.0, 300.0))):
        points = np.stack([origin[0] + scale * STANDARD[:, 0], origin[1] - scale * STANDARD[:, 1]], axis=1)
        crop = align_face(dots_image(points, (480, 400)), points, STANDARD)
        assert crop.shape == (SIZE, SIZE, 3) and crop.dtype == np.uint8
        expected = np.stack([SIZE / 2 + RESCALE * STANDARD[:, 0], SIZE / 2 - RESCALE * STANDARD[:, 1]], axis=1)
        np.testing.assert_allclose(spot_centres(crop, expected), expected, atol=1.0)


def face_like(shape: tuple[int, int]) -> np.ndarray:
    """A smooth synthetic face: blobs of different colours where eyes, nose and mouth are, on a gradient."""
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    image = np.stack([xx / shape[1], yy / shape[0], np.full(shape, 0.4)], axis=-1) * 0.5
    for (x, y), colour in zip(FACE_POINTS, np.eye(3)[[0, 0, 1, 2, 2]]):
        image += 0.5 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 12.0**2))[..., None] * colour
    return (255 * np.clip(image, 0, 1)).astype(np.uint8)


FACE_POINTS = np.array([[160.0, 170.0], [240.0, 168.0], [200.0, 215.0], [170.0, 262.0], [232.0, 260.0]])


def test_align_face_undoes_scale_and_translation():
    """A frame scaled by 1.4 and shifted, aligned from its correspondingly moved points, gives the crop the
    original gives (to interpolation and the integer window corner), and a crop from unmoved points does not."""
    frame = face_like((400, 400))
    matrix = np.array([[1.4, 0.0, -37.0], [0.0, 1.4, 21.0]])
    moved = cv2.warpAffine(frame, matrix, (560, 600), flags=cv2.INTER_CUBIC)
    moved_points = FACE_POINTS @ matrix[:, :2].T + matrix[:, 2]
    original = align_face(frame, FACE_POINTS, STANDARD).astype(np.float64)
    again = align_face(moved, moved_points, STANDARD).astype(np.float64)
    misaligned = align_face(moved, FACE_POINTS, STANDARD).astype(np.float64)
    assert np.abs(again - original).mean() < 0.5
    assert np.abs(misaligned - original).mean() > 10 * np.abs(again - original).mean()


def test_align_face_takes_float_frames_and_refuses_missing_points():
    frame = face_like((400, 400))
    np.testing.assert_array_equal(align_face(frame / 255.0, FACE_POINTS, STANDARD),
                                  align_face(frame, FACE_POINTS, STANDARD))
    with pytest.raises(ValueError, match="five finite points"):
        align_face(frame, np.full((5, 2), np.nan), STANDARD)
