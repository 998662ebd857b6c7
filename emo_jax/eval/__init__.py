"""Evaluation metrics for emo-eval (emo_jax/cli/eval.py, docs/eval.md): FID's Inception (inception.py) and FVD's
I3D (i3d.py), weights through emo_jax/interop/ (pinned in weights.py, fetched by fetch.py), batched extraction
sharded over the local devices (extract.py) into streaming feature statistics and the Fréchet distance
(frechet.py), per-frame FID (fid.py) and 16-frame-clip FVD (fvd.py). SyncNet, F-SIM and E-FID are not built."""
