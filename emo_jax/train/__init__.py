"""Training: state, optimiser, loss step, checkpoints, metrics and the emo-train entry point."""
