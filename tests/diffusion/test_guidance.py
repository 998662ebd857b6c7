"""Classifier-free guidance combinations."""
import jax.numpy as jnp
import numpy as np
import pytest

from emo_jax.diffusion import joint_guidance, separate_guidance


def _outputs():
    rng = np.random.default_rng(0)
    return tuple(jnp.asarray(rng.standard_normal((2, 3, 4, 4, 4)), jnp.float32) for _ in range(3))


def test_unit_scales_give_the_fully_conditioned_output():
    uncond, ref, full = _outputs()
    np.testing.assert_allclose(separate_guidance(uncond, ref, full, 1.0, 1.0), full, rtol=0, atol=1e-6)
    np.testing.assert_allclose(joint_guidance(uncond, full, 1.0), full, rtol=0, atol=1e-6)


def test_zero_scales_give_the_unconditioned_output():
    uncond, ref, full = _outputs()
    np.testing.assert_allclose(separate_guidance(uncond, ref, full, 0.0, 0.0), uncond, rtol=0, atol=1e-6)
    np.testing.assert_allclose(separate_guidance(uncond, ref, full, 1.0, 0.0), ref, rtol=0, atol=1e-6)


def test_separate_scales_known_values():
    uncond, ref, full = jnp.array([1.0]), jnp.array([2.0]), jnp.array([4.0])
    # 1 + 2 * (2 - 1) + 3 * (4 - 2) = 9
    np.testing.assert_allclose(separate_guidance(uncond, ref, full, 2.0, 3.0), [9.0])
    # 1 + 3.5 * (4 - 1) = 11.5
    np.testing.assert_allclose(joint_guidance(uncond, full, 3.5), [11.5])


def test_each_scale_moves_the_output():
    uncond, ref, full = _outputs()
    base = separate_guidance(uncond, ref, full, 2.0, 3.0)
    more_ref = separate_guidance(uncond, ref, full, 2.5, 3.0)
    more_audio = separate_guidance(uncond, ref, full, 2.0, 3.5)
    np.testing.assert_allclose(more_ref - base, 0.5 * (ref - uncond), rtol=0, atol=1e-5)
    np.testing.assert_allclose(more_audio - base, 0.5 * (full - ref), rtol=0, atol=1e-5)
    assert not np.allclose(joint_guidance(uncond, full, 2.0), joint_guidance(uncond, full, 3.0))


def test_equal_separate_scales_equal_joint_guidance():
    uncond, ref, full = _outputs()
    np.testing.assert_allclose(
        separate_guidance(uncond, ref, full, 2.5, 2.5), joint_guidance(uncond, full, 2.5), rtol=0, atol=1e-5
    )


def test_mismatched_shapes_are_rejected():
    uncond, ref, full = _outputs()
    with pytest.raises(ValueError, match="out_ref"):
        separate_guidance(uncond, ref[:1], full, 2.0, 3.0)
