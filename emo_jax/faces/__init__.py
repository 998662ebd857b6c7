"""Faces: MediaPipe's BlazeFace detector and Face Mesh on LiteRT (model files: models.py), the Haar fallback, face
tracking, head pose and rotation speed. Used by emo-prepare (labels), emo-generate (the portrait's box) and emo-eval
(SyncNet's track, F-SIM, E-FID); it imports nothing from emo_jax above emo_jax.errors."""
