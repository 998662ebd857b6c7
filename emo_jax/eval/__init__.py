"""Evaluation metrics: FID's Inception network (inception.py, weights through emo_jax/interop/inception_import.py)
and the Fréchet distance with streaming feature statistics (frechet.py). FVD and an emo-eval command are not built
yet."""
