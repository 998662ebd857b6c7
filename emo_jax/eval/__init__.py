"""Evaluation metrics: the Fréchet distance with streaming feature statistics (frechet.py). FID's Inception
network, FVD and an emo-eval command are not built yet."""
