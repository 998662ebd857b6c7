"""E-FID's face reconstruction network (Deep3DFaceRecon, Deng et al. 2019, as sicxu/Deep3DFaceRecon_pytorch ships
it) in Flax, NHWC, and its 5-point face alignment in numpy.

E-FID (EMO's Table 1) is the Fréchet distance between the 3DMM expression coefficients of generated and real
frames. The network is torchvision's ResNet-50 (bottleneck v1.5: the stride in the 3x3 convolution; batch norm in
inference mode, eps 1e-5) without its fc layer, followed by seven 1x1 convolutions with bias on the 2048-wide
average-pooled features (`final_layers`), whose outputs are concatenated into 257 coefficients: identity 80,
expression 64, texture 80, angles 3, lighting (gamma) 27, translation 2 (x, y) + 1 (z). The expression
coefficients are 80:144. The input is a 224x224 RGB crop in [0, 1] (uint8 / 255, no mean or std), cut by
align_face. The weights are the user's (the repository's `epoch_20.pth`, key `net_recon`), loaded by
emo_jax/interop/face_recon_import.py.

Alignment follows the repository's align_img. Five points (eye centres, nose tip, mouth corners, image-left
first) are fitted to the same five points of a standard 3D face by least squares under a weak-perspective
projection (8 unknowns: two rows of a 2x3 matrix and a 2D translation); the scale s is the mean norm of the two
rows and t is where the standard face's origin projects. The image is resized by 102 / s (PIL bicubic, sizes
truncated to integers) and a 224x224 window is cut whose centre is t (the window's corner truncated to integers;
outside the image is black). The fit runs with y pointing up (y' = H - 1 - y), as the repository's readers do.
Only scale and translation are undone: an in-plane rotation stays in the crop (the network reads it as the
angle coefficients).

The standard points are not in the repository's code: they come from its BFM/similarity_Lm3D_all.mat (68 3D
landmarks under `lm`), which the user supplies beside the weights; load_standard_points reduces them to the five
(the mean of 1-based iBUG landmarks 37 and 40, of 43 and 46, then 31, 49 and 55), as the repository's
load_lm3d does. Five points from Face Mesh: five_points_from_mesh.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from emo_jax.eval.frechet import FeatureStats
from emo_jax.eval.inception import FrozenBatchNorm
from emo_jax.paths import require_file

SIZE = 224
RESCALE = 102.0  # align_img's rescale_factor: the standard face's size in the crop
# (name, width) of the seven heads, in the order their outputs are concatenated.
HEADS = (("id", 80), ("exp", 64), ("tex", 80), ("angle", 3), ("gamma", 27), ("trans_xy", 2), ("trans_z", 1))
NUM_COEFFICIENTS = sum(width for _, width in HEADS)
EXPRESSION = slice(80, 144)
FEATURE = "deep3d_expression"
# A small difference in features is what E-FID tells apart; keep float32 convolutions exact (no TF32 / bf16 passes).
PRECISION = jax.lax.Precision.HIGHEST
BN_EPS = 1e-5
STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # ResNet-50: (width, blocks, stride) per layer
# 1-based iBUG-68 landmarks the five points are made of: eye corners (averaged), nose tip, mouth corners.
_IBUG_EYES = ((37, 40), (43, 46))
_IBUG_NOSE, _IBUG_MOUTH = 31, (49, 55)
# Face Mesh's points for the same: eye corners (33/133 image-left eye, 362/263 image-right), nose tip, mouth corners.
MESH_EYES = ((33, 133), (362, 263))
MESH_NOSE, MESH_MOUTH = 4, (61, 291)


class Bottleneck(nn.Module):
    """torchvision's Bottleneck (v1.5): 1x1, 3x3 with the stride, 1x1 to 4x the width; projection shortcut
    (`downsample_0` conv, `downsample_1` batch norm) where the shape changes."""

    width: int
    stride: int = 1
    precision: Any = PRECISION

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = functools.partial(nn.Conv, use_bias=False, precision=self.precision)
        bn = functools.partial(FrozenBatchNorm, eps=BN_EPS)
        out = jax.nn.relu(bn(name="bn1")(conv(self.width, (1, 1), name="conv1")(x)))
        out = conv(self.width, (3, 3), strides=self.stride, padding=((1, 1), (1, 1)), name="conv2")(out)
        out = jax.nn.relu(bn(name="bn2")(out))
        out = bn(name="bn3")(conv(4 * self.width, (1, 1), name="conv3")(out))
        if self.stride != 1 or x.shape[-1] != 4 * self.width:
            x = bn(name="downsample_1")(conv(4 * self.width, (1, 1), strides=self.stride, name="downsample_0")(x))
        return jax.nn.relu(out + x)


class ResNet50(nn.Module):
    """torchvision's ResNet-50 up to the global average pool: images [N, H, W, 3] -> [N, 2048]."""

    precision: Any = PRECISION

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.Conv(64, (7, 7), strides=2, padding=((3, 3), (3, 3)), use_bias=False, precision=self.precision,
                    name="conv1")(x)
        x = jax.nn.relu(FrozenBatchNorm(eps=BN_EPS, name="bn1")(x))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for stage, (width, blocks, stride) in enumerate(STAGES, start=1):
            for i in range(blocks):
                x = Bottleneck(width, stride if i == 0 else 1, self.precision, name=f"layer{stage}_{i}")(x)
        return jnp.mean(x, axis=(1, 2))


class FaceReconNet(nn.Module):
    """Aligned 224x224 crops [N, 224, 224, 3] in [0, 1] -> 3DMM coefficients [N, 257] (float32)."""

    precision: Any = PRECISION

    @nn.compact
    def __call__(self, images_NHWC: jax.Array) -> jax.Array:
        pooled = ResNet50(self.precision, name="backbone")(images_NHWC.astype(jnp.float32))
        return jnp.concatenate([nn.Dense(width, precision=self.precision, name=f"final_layers_{i}")(pooled)
                                for i, (_, width) in enumerate(HEADS)], axis=-1)


@jax.jit
def coefficients(params: Any, images_BHW3: jax.Array) -> jax.Array:
    """All 257 coefficients [B, 257] of aligned crops [B, 224, 224, 3] in [0, 1]."""
    return FaceReconNet().apply({"params": params}, images_BHW3)


def expression_coefficients(params: Any, images_BHW3: jax.Array) -> jax.Array:
    """The 64 expression coefficients [B, 64] of aligned crops [B, 224, 224, 3] in [0, 1] (E-FID's feature)."""
    if images_BHW3.ndim != 4 or images_BHW3.shape[1:] != (SIZE, SIZE, 3):
        raise ValueError(f"Deep3DFaceRecon takes aligned crops [B, {SIZE}, {SIZE}, 3] (align_face's output / 255); "
                         f"got shape {tuple(images_BHW3.shape)}")
    return coefficients(params, images_BHW3)[:, EXPRESSION]


def new_stats() -> FeatureStats:
    """Empty statistics of E-FID's feature (emo_jax/eval/frechet.py computes the distance)."""
    return FeatureStats(FEATURE, EXPRESSION.stop - EXPRESSION.start)


def load_standard_points(path: str) -> np.ndarray:
    """The standard face's five 3D points [5, 3] from Deep3DFaceRecon's BFM/similarity_Lm3D_all.mat."""
    from scipy.io import loadmat

    require_file(path, "standard landmarks file", "pass Deep3DFaceRecon_pytorch's BFM/similarity_Lm3D_all.mat")
    try:
        lm = np.asarray(loadmat(path)["lm"], np.float64)
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"cannot read 68 standard 3D landmarks ('lm') from {path!r}: {e}; pass Deep3DFaceRecon_"
                         "pytorch's BFM/similarity_Lm3D_all.mat") from e
    if lm.shape != (68, 3):
        raise ValueError(f"{path!r}: 'lm' has shape {lm.shape}, not (68, 3); pass Deep3DFaceRecon_pytorch's "
                         "BFM/similarity_Lm3D_all.mat")
    eyes = [(lm[a - 1] + lm[b - 1]) / 2 for a, b in _IBUG_EYES]
    return np.stack([*eyes, lm[_IBUG_NOSE - 1], lm[_IBUG_MOUTH[0] - 1], lm[_IBUG_MOUTH[1] - 1]])


def five_points_from_mesh(points_468x3: np.ndarray) -> np.ndarray:
    """align_face's five points [5, 2] from Face Mesh landmarks [468, 3] (emo_jax/faces/mesh.py).

    Eye points are the midpoints of the eye corners, as the standard points are made from iBUG's corners; the nose
    is Face Mesh's tip (4, the usual match for iBUG 31) and the mouth corners are the outer lip's (61, 291). Face
    Mesh puts pixel i's centre at i + 0.5; align_face puts it at i, hence the half-pixel shift.

    Measured on the repository's ten example images against the five points it ships for them (its detector's):
    a mean distance of 4-7% of the eye distance per point (nose 1 instead of 4: 9%), which moves the crop by
    ~2-3 px and scales it by ~2%.
    """
    p = np.asarray(points_468x3, np.float64)[:, :2]
    eyes = [(p[a] + p[b]) / 2 for a, b in MESH_EYES]
    return np.stack([*eyes, p[MESH_NOSE], p[MESH_MOUTH[0]], p[MESH_MOUTH[1]]]) - 0.5


def fit_scale_translation(points_5x2: np.ndarray, standard_5x3: np.ndarray) -> tuple[np.ndarray, float]:
    """(t [2], s) of the least-squares weak-perspective fit points ~ P X + t, P a free 2x3 matrix and s the mean
    norm of its rows (align_img's POS). The x and y rows are independent least-squares problems."""
    design = np.concatenate([standard_5x3, np.ones((len(standard_5x3), 1))], axis=1)
    solution = np.linalg.lstsq(design, points_5x2, rcond=None)[0]  # [4, 2]: P^T over t
    return solution[3], float(np.linalg.norm(solution[:3], axis=0).mean())


def align_face(rgb_HW3: np.ndarray, five_points_xy: np.ndarray, standard_5x3: np.ndarray) -> np.ndarray:
    """The 224x224 uint8 crop Deep3DFaceRecon sees, cut from an RGB frame (uint8, or float in [0, 1]) by five
    points [5, 2] (x right, y down, pixel centres on integers; image-left eye, image-right eye, nose tip,
    image-left and image-right mouth corners) and the standard points (load_standard_points)."""
    from PIL import Image

    rgb = np.asarray(rgb_HW3)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"align_face takes an RGB frame [H, W, 3]; got shape {rgb.shape}")
    if rgb.dtype != np.uint8:
        rgb = np.round(np.clip(rgb.astype(np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)
    points = np.asarray(five_points_xy, np.float64)
    if points.shape != (5, 2) or not np.isfinite(points).all():
        raise ValueError(f"align_face needs five finite points [5, 2]; got {points.shape} (a frame without a face?)")
    h0, w0 = rgb.shape[:2]
    t, s = fit_scale_translation(np.stack([points[:, 0], h0 - 1 - points[:, 1]], axis=1), standard_5x3)
    scale = RESCALE / s
    w, h = int(w0 * scale), int(h0 * scale)
    left = int(w / 2 - SIZE / 2 + (t[0] - w0 / 2) * scale)
    up = int(h / 2 - SIZE / 2 + (h0 / 2 - t[1]) * scale)
    resized = Image.fromarray(rgb).resize((w, h), resample=Image.Resampling.BICUBIC)
    return np.asarray(resized.crop((left, up, left + SIZE, up + SIZE)))
