"""The metric networks of emo-eval and emo-train's periodic evaluation, loaded from the weights files in one folder
(names, digests and fetch commands in emo_jax/eval/weights.py) and wrapped as sharded feature extractors, and
emo-eval's SyncNet scorer and face-metric analyser."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Sequence

from emo_jax.errors import ConfigError
from emo_jax.eval import fid, fvd, weights
from emo_jax.eval.weights import (FID_FILE, I3D_FILE, SYNCNET_FILE, fid_fetch_command, i3d_fetch_command,
                                  syncnet_fetch_command)

if TYPE_CHECKING:
    from emo_jax.eval.face_metrics import FaceAnalyser
    from emo_jax.eval.lipsync import LipSyncScorer


def load_extractors(folder: str, fid_batch: int = 32, fvd_batch: int = 8,
                    devices: Sequence | None = None) -> tuple[dict, dict[str, str]]:
    """({'FID': frames -> Inception pool3 features, 'FVD': 16-frame clips -> I3D logits}, each a ShardedExtractor
    over `devices`, for the weights files present in `folder` (digests checked); {name: 'not computed: <file>
    missing in <folder>; fetch it with `<command>`'} for each file that is not there)."""
    # The digests are read from `weights` at each call (tests point them at random files).
    extractors, missing = {}, {}
    fid_path = os.path.join(folder, FID_FILE)
    if os.path.isfile(fid_path):
        from emo_jax.interop.inception_import import load_fid_inception  # imports torch: only when needed

        module, params = load_fid_inception(fid_path, sha256_prefix=weights.FID_SHA256_PREFIX)
        extractors["FID"] = fid.inception_extractor(module, params, fid_batch, devices)
    else:
        missing["FID"] = f"not computed: {FID_FILE} missing in {folder}; fetch it with `{fid_fetch_command(folder)}`"
    i3d_path = os.path.join(folder, I3D_FILE)
    if os.path.isfile(i3d_path):
        from emo_jax.interop.i3d_import import load_i3d

        module, params = load_i3d(i3d_path, sha256=weights.I3D_SHA256)
        extractors["FVD"] = fvd.i3d_extractor(module, params, fvd_batch, devices)
    else:
        missing["FVD"] = f"not computed: {I3D_FILE} missing in {folder}; fetch it with `{i3d_fetch_command(folder)}`"
    return extractors, missing


def load_lipsync(folder: str, batch: int = 20,
                 devices: Sequence | None = None) -> tuple[LipSyncScorer | None, str | None]:
    """(emo_jax.eval.lipsync.LipSyncScorer over `devices`, None) when `folder` holds syncnet_v2.model and the face
    detector can run; else (None, 'not computed: <why>; <what to do>')."""
    path = os.path.join(folder, SYNCNET_FILE)
    if not os.path.isfile(path):
        return None, (f"not computed: {SYNCNET_FILE} missing in {folder}; fetch it with "
                      f"`{syncnet_fetch_command(folder)}`")
    from emo_jax.faces.detect import make_detector
    from emo_jax.eval.lipsync import DETECTOR, LipSyncScorer
    from emo_jax.interop.syncnet_import import load_syncnet

    try:
        detector = make_detector(DETECTOR)
    except ConfigError as e:
        return None, f"not computed: its face tracker cannot run: {e}"
    module, params = load_syncnet(path)
    return LipSyncScorer(module, params, batch, devices, detector), None


def _missing(folder: str, names: Sequence[str]) -> list[str]:
    return [n for n in names if not os.path.isfile(os.path.join(folder, n))]


def load_face_metrics(folder: str, batch: int = 32, devices: Sequence | None = None
                      ) -> tuple[FaceAnalyser | None, dict[str, str]]:
    """(the analyser with what `folder` allows, None when the face models cannot run), {'F-SIM' / 'E-FID' /
    'E-FID (landmark proxy)': 'not computed: <why>; <what to do>'} for each face metric that cannot be computed."""
    from emo_jax.eval.face_metrics import DETECTOR, FaceAnalyser, recon_extractor
    from emo_jax.faces.detect import make_detector
    from emo_jax.faces.mesh import FaceMesh

    missing: dict[str, str] = {}
    try:
        detector, mesh = make_detector(DETECTOR), FaceMesh()
    except ConfigError as e:
        why = f"not computed: the face tracker cannot run: {e}"
        return None, {"F-SIM": why, "E-FID": why, "E-FID (landmark proxy)": why}
    descriptor = None
    dlib_files = _missing(folder, weights.DLIB_SHA256)
    if dlib_files:
        missing["F-SIM"] = (f"not computed: {', '.join(dlib_files)} missing in {folder}; fetch "
                            f"{'them' if len(dlib_files) > 1 else 'it'} with `{weights.dlib_fetch_command(folder)}`")
    else:
        from emo_jax.eval.face_identity import FaceDescriptor

        try:
            descriptor = FaceDescriptor(folder, DETECTOR)
        except ConfigError as e:
            missing["F-SIM"] = f"not computed: {e}"
    recon = standard = None
    recon_files = _missing(folder, [weights.FACE_RECON_FILE, weights.STANDARD_POINTS_FILE])
    if recon_files:
        missing["E-FID"] = (f"not computed: {', '.join(recon_files)} missing in {folder} (user supplied); "
                            f"{weights.face_recon_get_line(folder, recon_files)}")
    else:
        from emo_jax.eval.face_recon import load_standard_points
        from emo_jax.interop.face_recon_import import load_face_recon

        _, params = load_face_recon(os.path.join(folder, weights.FACE_RECON_FILE))
        recon = recon_extractor(params, batch, devices)
        standard = load_standard_points(os.path.join(folder, weights.STANDARD_POINTS_FILE))
    return FaceAnalyser(detector, mesh, descriptor, recon, standard), missing
