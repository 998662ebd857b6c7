"""Evaluation metrics for emo-eval (emo_jax/cli/eval.py, docs/eval.md): FID's Inception (inception.py) and FVD's
I3D (i3d.py), weights through emo_jax/interop/ (pinned in weights.py, fetched by fetch.py), batched extraction
sharded over the local devices (extract.py) into streaming feature statistics and the Fréchet distance
(frechet.py), per-frame FID (fid.py) and 16-frame-clip FVD (fvd.py); SyncNet (syncnet.py, scored per video by
lipsync.py); the face metrics, run on one decoding of each video by face_metrics.py: F-SIM (face_identity.py,
dlib's face descriptor), E-FID (face_recon.py, Deep3DFaceRecon's expression coefficients, from the user's
weights) and the landmark E-FID proxy (landmark_expression.py, not comparable with published E-FID)."""
