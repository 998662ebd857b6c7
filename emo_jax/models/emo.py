"""The EMO network: ReferenceNet + backbone UNet + audio projection + face locator + speed encoder."""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from emo_jax.models.condition import ClipInputs, Condition, ReferenceFeatures, UNetCondition, frame_signal_specs
from emo_jax.models.conditioning import AudioProjection, FaceLocator, SpeedEncoder
from emo_jax.models.unet import UNet
from emo_jax.models.unet_config import UNetConfig


@dataclasses.dataclass(frozen=True)
class AudioConditioning:
    """The audio path (`model.audio`): wav2vec2 features of 2 * context + 1 frames, projected to tokens."""

    context: int = 2  # m: frames of context on each side
    layers: int = 12  # wav2vec2 transformer layers whose hidden states are used
    feature_dim: int = 768
    tokens: int = 32
    hidden: int = 512


@dataclasses.dataclass(frozen=True)
class FaceLocatorConfig:
    """The face locator (`model.face_locator`): a conv net on the face-region mask."""

    enabled: bool = True
    channels: tuple[int, ...] = (16, 32, 64, 128)


@dataclasses.dataclass(frozen=True)
class SpeedConfig:
    """The speed encoding (`model.speed`): buckets with centres c_i and radii r_i, context frames, tokens."""

    centres: tuple[float, ...] = ()
    radii: tuple[float, ...] = ()
    context: int = 2
    tokens: int = 4
    hidden: int = 512
    unit: str = "degrees_per_frame"  # of the centres and radii, and of the speeds the model is given


@dataclasses.dataclass(frozen=True)
class EMOConfig:
    """Static model description: the `model` config section, field for field (emo_jax.config.model_config)."""

    unet: UNetConfig
    audio: AudioConditioning = AudioConditioning()
    face_locator: FaceLocatorConfig = FaceLocatorConfig()
    speed: SpeedConfig = SpeedConfig()
    mode: str = "emo"  # or "sd": the plain SD1.5 UNet (emo_jax.build)
    latent_size: int = 64
    clip_frames: int = 12  # f
    motion_frames: int = 4  # n
    first_clip_motion: str = "zeros"  # or "reference": what stands in for motion frames before the first clip

    def __post_init__(self):
        if self.first_clip_motion not in ("zeros", "reference"):
            raise ValueError(f"model.first_clip_motion must be 'zeros' or 'reference', not {self.first_clip_motion!r}")
        if self.unet.speed_attention and len(self.speed.centres) != len(self.speed.radii):
            raise ValueError("model.speed.centres and model.speed.radii need the same number of buckets")

    @property
    def frame_signals(self) -> tuple[str, ...]:
        """The per-frame signals (Condition's frame_signal fields) this model reads, so needs in every batch and at
        generation: the loader, batch spec, sampler and evaluation follow this list."""
        return ("speed",) if self.unet.speed_attention else ()

    @property
    def reference_unet(self) -> UNetConfig:
        """The ReferenceNet: the backbone's spatial structure with none of EMO's extra layers and no text."""
        return dataclasses.replace(self.unet, reference_mode=None, audio_attention=False, temporal=False,
                                   speed_attention=False, text_cross_attention=False)


class EMO(nn.Module):
    cfg: EMOConfig

    def setup(self):
        cfg, u = self.cfg, self.cfg.unet
        kw = dict(dtype=u.compute_dtype, param_dtype=u.weights_dtype)
        self.reference_net = UNet(cfg.reference_unet)
        self.backbone = UNet(u)
        if u.audio_attention:
            self.audio_proj = AudioProjection(cfg.audio.tokens, u.audio_dim, cfg.audio.hidden, **kw)
        if cfg.face_locator.enabled:
            self.face_locator = FaceLocator(u.block_out_channels[0], cfg.face_locator.channels, **kw)
        if u.speed_attention:
            self.speed_encoder = SpeedEncoder(cfg.speed.centres, cfg.speed.radii, cfg.speed.context,
                                              cfg.speed.tokens, u.speed_dim, cfg.speed.hidden, **kw)

    def reference_features(self, latents_NHWC) -> ReferenceFeatures:
        """The ReferenceNet at timestep 0, its features keyed by the backbone module that reads them."""
        t = jnp.zeros((latents_NHWC.shape[0],), jnp.float32)
        return self.reference_net(latents_NHWC, t, features_only=True)

    def motion_features(self, ref: ReferenceFeatures, motion_latents_BNHWC=None, motion_keep_B=None) -> dict:
        """The motion modules' extra frames [B * n, H, W, C] per module: the ReferenceNet features of the previous
        clip's last n latents (before the first clip: zeros or the reference, as model.first_clip_motion says)."""
        n = self.cfg.motion_frames
        b = next(iter(ref.motion.values())).shape[0]
        if motion_latents_BNHWC is None:
            if self.cfg.first_clip_motion == "zeros":
                return {k: jnp.zeros((b * n,) + m.shape[1:], m.dtype) for k, m in ref.motion.items()}
            return {k: jnp.repeat(m, n, axis=0) for k, m in ref.motion.items()}
        if motion_latents_BNHWC.shape[1] != n:
            raise ValueError(f"got {motion_latents_BNHWC.shape[1]} motion frames, the config says "
                             f"model.motion_frames={n}")
        feats = self.reference_features(motion_latents_BNHWC.reshape((-1,) + motion_latents_BNHWC.shape[2:])).motion
        if motion_keep_B is not None:
            keep = jnp.repeat(motion_keep_B, n)[:, None, None, None]
            feats = {k: f * keep.astype(f.dtype) for k, f in feats.items()}
        return feats

    def clip_inputs(self, cond: Condition, batch: int, frames: int) -> ClipInputs:
        """Audio tokens, speed tokens and the face-locator residual per frame: everything of a clip's conditioning
        that does not change between denoising steps or guidance passes."""
        cfg, u = self.cfg, self.cfg.unet
        out = ClipInputs()
        if u.audio_attention:
            if cond.audio is None:
                raise ValueError("this model has audio-attention; pass per-frame audio features [B, F, 2m+1, L, D]")
            expected = (batch, frames, 2 * cfg.audio.context + 1, cfg.audio.layers, cfg.audio.feature_dim)
            if tuple(cond.audio.shape) != expected:
                raise ValueError(f"audio features have shape {tuple(cond.audio.shape)}, expected {expected} "
                                 "(batch, frames of the clip, context window, wav2vec layers, feature size)")
            out = out.replace(audio=self.audio_proj(cond.audio.reshape((batch * frames,) + cond.audio.shape[2:])))
        if u.speed_attention:
            if cond.speed is None or cond.speed.shape != (batch, frames):
                raise ValueError(f"this model has speed layers; pass per-frame head speeds of shape {(batch, frames)}")
            out = out.replace(speed=self.speed_encoder(cond.speed))
        if cfg.face_locator.enabled:
            if cond.face_mask is None:
                raise ValueError("this model has a face locator; pass the face mask [B, H, W, 1] at the latent size "
                                 "times 2^(len(face_locator.channels) - 1)")
            out = out.replace(face_residual=jnp.repeat(self.face_locator(cond.face_mask), frames, axis=0))
        return out

    def denoise(self, x_BFHWC, t_B, cond: Condition):
        """Noise (or v) prediction for a clip [B, F, h, w, 4] under `cond` (ReferenceNet features precomputed; the
        clip's audio, speed and face-mask work too where cond.clip_inputs holds it)."""
        b, f = x_BFHWC.shape[:2]
        inputs = cond.clip_inputs if cond.clip_inputs is not None else self.clip_inputs(cond, b, f)
        per_frame = lambda a: None if a is None else jnp.repeat(a, f, axis=0)  # noqa: E731
        unet_cond = UNetCondition(ref_tokens={k: per_frame(r) for k, r in cond.ref_tokens.items()},
                                  ref_keep=per_frame(cond.ref_keep), motion=cond.motion, num_frames=f,
                                  audio=inputs.audio, speed=inputs.speed)
        if inputs.audio is not None:
            unet_cond = unet_cond.replace(audio_keep=per_frame(cond.audio_keep))
        t_N = jnp.repeat(jnp.asarray(t_B), f)
        out = self.backbone(x_BFHWC.reshape((b * f,) + x_BFHWC.shape[2:]), t_N, unet_cond,
                            conv_in_residual=inputs.face_residual)
        return out.reshape(x_BFHWC.shape[:2] + out.shape[1:])

    def __call__(self, x_BFHWC, t_B, ref_latent_BHWC, motion_latents_BNHWC=None, motion_keep=None, **conditions):
        """Training forward: ReferenceNet on the reference (and motion frames), then the backbone.

        conditions: Condition's fields by name, per clip: audio [B, F, 2m+1, L, D], face_mask [B, H, W, 1],
        ref_keep / audio_keep [B] bool, and the per-frame signals the model reads (speed [B, F], ...).
        motion_keep [B] bool: False zeroes that clip's motion-frame features (motion dropout).
        """
        if x_BFHWC.shape[0] != ref_latent_BHWC.shape[0]:
            raise ValueError(f"{x_BFHWC.shape[0]} clips but {ref_latent_BHWC.shape[0]} reference latents")
        unknown = sorted(set(conditions) - _CONDITION_INPUTS)
        if unknown:
            raise ValueError(f"EMO got unknown conditions {unknown}; it takes {sorted(_CONDITION_INPUTS)} (the "
                             "fields of emo_jax.models.condition.Condition)")
        ref = self.reference_features(ref_latent_BHWC)
        motion = self.motion_features(ref, motion_latents_BNHWC, motion_keep) if self.cfg.unet.temporal else None
        return self.denoise(x_BFHWC, t_B, Condition(ref_tokens=ref.tokens, motion=motion, **conditions))


# Condition fields a caller passes to EMO.__call__ (the reference and motion features it computes itself).
_CONDITION_INPUTS = {f.name for f in dataclasses.fields(Condition)} - {"ref_tokens", "motion", "clip_inputs"}


def face_mask_size(cfg: EMOConfig, latent_size: int) -> int:
    """Side of the face mask the face locator reads: the latent size times the locator's downsampling."""
    return latent_size * 2 ** (len(cfg.face_locator.channels) - 1)


def example_inputs(cfg: EMOConfig, batch: int, frames: int, latent_size: int) -> dict:
    """Zero inputs of the right shapes for init / eval_shape."""
    u = cfg.unet
    inputs = {
        "x_BFHWC": jnp.zeros((batch, frames, latent_size, latent_size, u.in_channels)),
        "t_B": jnp.zeros((batch,), jnp.int32),
        "ref_latent_BHWC": jnp.zeros((batch, latent_size, latent_size, u.in_channels)),
    }
    if u.temporal:
        inputs["motion_latents_BNHWC"] = jnp.zeros((batch, cfg.motion_frames, latent_size, latent_size, u.in_channels))
    if u.audio_attention:
        inputs["audio"] = jnp.zeros((batch, frames, 2 * cfg.audio.context + 1, cfg.audio.layers, cfg.audio.feature_dim))
    if cfg.face_locator.enabled:
        px = face_mask_size(cfg, latent_size)
        inputs["face_mask"] = jnp.zeros((batch, px, px, 1))
    for name, (shape, dtype) in frame_signal_specs(cfg.frame_signals, (batch, frames)).items():
        inputs[name] = jnp.zeros(shape, dtype)
    return inputs
