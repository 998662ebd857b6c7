"""emo-jax: EMO (Emote Portrait Alive) audio-driven portrait video diffusion in JAX/Flax."""

__version__ = "0.1.0"
