"""Generation: long-form DDIM sampling with classifier-free guidance, and the emo-generate command."""
from emo_jax.sample.sampler import GUIDANCE_MODES, Sampler, SamplerSpec, chunk_program

__all__ = ["GUIDANCE_MODES", "Sampler", "SamplerSpec", "chunk_program"]
