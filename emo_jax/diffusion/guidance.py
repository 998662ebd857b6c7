"""Classifier-free guidance (Ho & Salimans 2022) for EMO's two conditions: the reference image and the audio.

Both combinations are linear in the model outputs, so they apply unchanged to epsilon and to v predictions.

Separate scales (two-condition guidance, as InstructPix2Pix, Brooks et al. 2023, composes image and text):
    out = uncond + ref_scale * (ref - uncond) + audio_scale * (full - ref)
with uncond = no reference and no audio, ref = reference only, full = reference + audio. The reference term
pulls towards the identity, the audio term towards the lip and expression motion that the audio adds on top of
the identity; three model passes per step. With both scales 1 the sum telescopes to `full`; with equal scales s
it equals joint guidance with scale s.

Joint (one scale, two passes; what Hallo's released pipeline does, dropping all conditions at once):
    out = uncond + scale * (full - uncond)
"""
from __future__ import annotations

import jax


def _check_shapes(**outputs: jax.Array) -> None:
    shapes = {name: x.shape for name, x in outputs.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"guidance inputs must share one shape, got {shapes}")


def separate_guidance(
    out_uncond: jax.Array, out_ref: jax.Array, out_full: jax.Array, ref_scale: float, audio_scale: float
) -> jax.Array:
    """Guided model output with separate reference and audio scales (formula in the module docstring)."""
    _check_shapes(out_uncond=out_uncond, out_ref=out_ref, out_full=out_full)
    return out_uncond + ref_scale * (out_ref - out_uncond) + audio_scale * (out_full - out_ref)


def joint_guidance(out_uncond: jax.Array, out_full: jax.Array, scale: float) -> jax.Array:
    """Guided model output with one scale for all conditions together."""
    _check_shapes(out_uncond=out_uncond, out_full=out_full)
    return out_uncond + scale * (out_full - out_uncond)
