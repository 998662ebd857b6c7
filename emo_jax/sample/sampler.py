"""Long-form EMO sampling: DDIM with classifier-free guidance as a lax.scan, clips as a lax.scan, host-side chunks.

One compiled "chunk" program runs `clips_per_chunk` clips; the host calls it again and again, so the compiled
program and the device memory it needs are the same for one second of audio and for an hour. Each clip:
  1. motion features: the ReferenceNet on the previous clip's last n latents (first clip: the model's
     first_clip_motion), and the audio tokens, speed tokens and face-locator residual, once per clip;
  2. DDIM from fresh noise over (t, t_prev) pairs, each step one batched forward of the guidance passes
     (separate: uncond / reference-only / reference + audio = 3B; joint: uncond / full = 2B; none: full = B);
  3. its last n denoised latents become the next clip's motion frames.
The reference image's ReferenceNet features are computed once per video, outside the chunk program.

Every pass keeps the motion frames and the face mask: guidance contrasts the reference and the audio only,
and dropping the motion frames in the unconditional pass would break continuity between clips.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Any, Iterable, Iterator, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from emo_jax.audio.features import FeatureStream
from emo_jax.config import model_config
from emo_jax.diffusion import ddim_step, ddim_step_pairs, ddim_timesteps, make_schedule
from emo_jax.diffusion.guidance import joint_guidance, separate_guidance
from emo_jax.errors import ConfigError
from emo_jax.models.condition import Condition, ReferenceFeatures, frame_signal_specs
from emo_jax.models.emo import EMO, EMOConfig, face_mask_size

GUIDANCE_MODES = ("separate", "joint", "none")
# (reference kept, audio kept) per pass, in the order the guidance formulas take them.
_PASSES = {
    "separate": ((False, False), (True, False), (True, True)),
    "joint": ((False, False), (True, True)),
    "none": ((True, True),),
}


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
    """Everything that shapes the compiled chunk program (changing any of it recompiles)."""

    steps: int
    spacing: str
    guidance: str
    clips_per_chunk: int
    prediction_type: str = "epsilon"
    zero_terminal_snr: bool = False

    def __post_init__(self):
        if self.guidance not in GUIDANCE_MODES:
            raise ConfigError(f"sample.guidance must be one of {GUIDANCE_MODES}, not {self.guidance!r}")
        if self.steps < 1:
            raise ConfigError(f"sample.steps must be at least 1, got {self.steps}")
        if self.clips_per_chunk < 1:
            raise ConfigError(f"sample.clips_per_chunk must be at least 1, got {self.clips_per_chunk}")

    def schedule(self):
        """The noise schedule the model was trained on."""
        return make_schedule(prediction_type=self.prediction_type, rescale_zero_terminal_snr=self.zero_terminal_snr)

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> SamplerSpec:
        s, t = config.sample, config.train
        spacing = s.spacing if s.spacing != "auto" else "trailing" if t.zero_terminal_snr else "leading"
        return cls(steps=s.steps, spacing=spacing, guidance=s.guidance, clips_per_chunk=s.clips_per_chunk,
                   prediction_type=t.prediction_type, zero_terminal_snr=t.zero_terminal_snr)


def check_video_model(config: ml_collections.ConfigDict) -> EMOConfig:
    """The EMOConfig of a config that can generate video (audio and temporal layers), else a ConfigError."""
    if config.model.mode != "emo":
        raise ConfigError(f"config variant {config.get('variant')!r} is the plain SD UNet; generation needs an EMO "
                          "video model such as configs/emo_512.py:stage2 or :stage3")
    cfg = model_config(config)
    if not (cfg.unet.audio_attention and cfg.unet.temporal):
        raise ConfigError(f"config variant {config.get('variant')!r} has no audio/temporal layers; generation needs "
                          "a video model such as configs/emo_512.py:stage2 or :stage3")
    if config.model.clip_frames < cfg.motion_frames:
        raise ConfigError(f"model.clip_frames ({config.model.clip_frames}) must be at least model.motion_frames "
                          f"({cfg.motion_frames}): a clip's last n frames become the next clip's motion frames")
    return cfg


def _tile(x: jax.Array, times: int) -> jax.Array:
    """Repeats the whole batch `times` times along axis 0 (pass-major, as the keep flags are laid out)."""
    return jnp.concatenate([x] * times, axis=0) if times > 1 else x


def guided_output(model: EMO, params: Any, mode: str, x_1FHWC: jax.Array, t: jax.Array, cond: Condition,
                  scales_2: jax.Array) -> jax.Array:
    """One batched forward of all guidance passes, combined; float32 [1, F, h, w, C]."""
    passes = _PASSES[mode]
    p = len(passes)
    keep = np.asarray(passes)
    batched = jax.tree.map(lambda a: _tile(a, p), cond)
    if mode != "none":
        batched = batched.replace(ref_keep=jnp.asarray(keep[:, 0]), audio_keep=jnp.asarray(keep[:, 1]))
    out = model.apply({"params": params}, _tile(x_1FHWC, p), jnp.full((p,), t, jnp.int32), batched,
                      method=EMO.denoise).astype(jnp.float32)
    if mode == "separate":
        return separate_guidance(out[0:1], out[1:2], out[2:3], scales_2[0], scales_2[1])
    if mode == "joint":
        return joint_guidance(out[0:1], out[1:2], scales_2[0])
    return out


def motion_for_clip(model: EMO, params: Any, ref: ReferenceFeatures, previous_1NHWC: jax.Array,
                    is_first: jax.Array) -> dict:
    """Motion-module features for a clip: the first clip's stand-in, else the ReferenceNet on the previous latents."""
    return jax.lax.cond(
        is_first,
        lambda prev: model.apply({"params": params}, ref, None, method=EMO.motion_features),
        lambda prev: model.apply({"params": params}, ref, prev, method=EMO.motion_features),
        previous_1NHWC,
    )


def clip_condition(model: EMO, params: Any, ref: ReferenceFeatures, audio_FCLD: jax.Array,
                   signals_F: Mapping[str, jax.Array], face_mask_1HW1: jax.Array, previous_1NHWC: jax.Array,
                   is_first: jax.Array) -> Condition:
    """Everything one clip's denoising steps condition on, computed here once per clip: its motion features, and
    the audio tokens, per-frame signals' tokens (speed) and face-locator residual (EMO.clip_inputs), which change
    neither with the timestep nor with the guidance pass. signals_F: the clip's per-frame signals by name."""
    cond = Condition(ref_tokens=ref.tokens, motion=motion_for_clip(model, params, ref, previous_1NHWC, is_first),
                     audio=audio_FCLD[None], face_mask=face_mask_1HW1,
                     **{name: value[None] for name, value in signals_F.items()})
    inputs = model.apply({"params": params}, cond, 1, audio_FCLD.shape[0], method=EMO.clip_inputs)
    return cond.replace(clip_inputs=inputs)


def guided_ddim_step(model: EMO, spec: SamplerSpec, schedule, params: Any, x_1FHWC: jax.Array, t: jax.Array,
                     t_prev: jax.Array, cond: Condition, scales_2: jax.Array) -> jax.Array:
    """One DDIM step of a clip: all guidance passes in one forward, combined, then the update to t_prev."""
    out = guided_output(model, params, spec.guidance, x_1FHWC, t, cond, scales_2)
    return ddim_step(schedule, out, t, t_prev, x_1FHWC)


def make_denoise_clip(model: EMO, spec: SamplerSpec):
    """denoise_clip(params, noise, cond, scales) -> x0: the DDIM loop over one clip as a lax.scan."""
    schedule = spec.schedule()
    t_all, t_prev_all = ddim_step_pairs(ddim_timesteps(schedule, spec.steps, spec.spacing))

    def denoise_clip(params, noise_1FHWC, cond, scales_2):
        def step(x, pair):
            t, t_prev = pair
            return guided_ddim_step(model, spec, schedule, params, x, t, t_prev, cond, scales_2), None

        x, _ = jax.lax.scan(step, noise_1FHWC, (t_all, t_prev_all))
        return x

    return denoise_clip


def clip_noise(key: jax.Array, clip_index: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Initial noise of clip `clip_index`, keyed by its index so it does not depend on how clips are chunked."""
    return jax.random.normal(jax.random.fold_in(key, clip_index), shape, jnp.float32)


@functools.lru_cache(maxsize=8)
def chunk_program(cfg: EMOConfig, spec: SamplerSpec, latent_shape: tuple[int, int, int]):
    """The jitted chunk program for a model and sampler spec (cached, so every caller shares its compilations).

    run(params, ref, carry, audio_KFCLD, signals_KF, face_mask_1HW1, scales_2) -> (carry, latents_KFhwC), with
    carry = (last n latents [1, n, h, w, C], RNG key, index of the next clip) and signals_KF the per-frame signals
    by name, each [K, f, ...] ({} for a model that reads none).
    """
    model = EMO(cfg)
    denoise_clip = make_denoise_clip(model, spec)
    n = cfg.motion_frames

    def run(params, ref, carry, audio_KFCLD, signals_KF, face_mask_1HW1, scales_2):
        def clip(carry, per_clip):
            previous, key, index = carry
            audio_FCLD, signals_F = per_clip
            cond = clip_condition(model, params, ref, audio_FCLD, signals_F, face_mask_1HW1, previous, index == 0)
            noise = clip_noise(key, index, (1, audio_FCLD.shape[0]) + latent_shape)
            x0 = denoise_clip(params, noise, cond, scales_2)
            return (x0[:, -n:], key, index + 1), x0[0]

        return jax.lax.scan(clip, carry, (audio_KFCLD, signals_KF))

    return jax.jit(run)


@functools.lru_cache(maxsize=8)
def reference_program(cfg: EMOConfig):
    """Jitted ReferenceNet features of the reference latent [1, h, w, C] (run once per video)."""
    model = EMO(cfg)
    return jax.jit(lambda params, latent: model.apply({"params": params}, latent, method=EMO.reference_features))


class Sampler:
    """Generates the latents of a whole video, chunk by chunk, with one compiled program for any length."""

    def __init__(self, config: ml_collections.ConfigDict, params: Any, spec: SamplerSpec | None = None):
        self.cfg = check_video_model(config)
        self.spec = spec or SamplerSpec.from_config(config)
        # Host arrays (a restored checkpoint) move to the device once here, not again with every chunk call.
        self.params = jax.tree.map(lambda a: jax.device_put(a) if isinstance(a, np.ndarray) else a, params)
        self.clip_frames = config.model.clip_frames
        size = config.model.latent_size
        self.latent_shape = (size, size, self.cfg.unet.in_channels)
        self.mask_size = face_mask_size(self.cfg, size)
        self.program = chunk_program(self.cfg, self.spec, self.latent_shape)
        self.mesh = weights_mesh(self.params)
        self.last_call_args: tuple | None = None  # abstract arguments of the last chunk call (for memory planning)

    def num_clips(self, num_frames: int) -> int:
        return -(-num_frames // self.clip_frames)

    def reference(self, ref_latent_1HWC: np.ndarray) -> ReferenceFeatures:
        """ReferenceNet features of the reference latent; computed once and reused by every clip."""
        latent = jnp.asarray(ref_latent_1HWC, jnp.float32)
        with self.on_mesh():
            return reference_program(self.cfg)(self.params, latent)

    def on_mesh(self):
        """The context the programs run in: the weights' mesh set (jax.set_mesh) when they are sharded over
        several devices, as emo-train leaves them for its periodic evaluation. Pallas kernels (splash attention)
        need it: jax cannot partition a Mosaic kernel itself, so on a TPU slice they go under a shard_map over
        that mesh."""
        return jax.set_mesh(self.mesh) if self.mesh is not None else contextlib.nullcontext()

    def _chunks(self, blocks: Iterable[np.ndarray], total: int,
                signals_T: Mapping[str, np.ndarray]) -> Iterator[tuple[np.ndarray, dict, int]]:
        """(audio [K, f, ...], per-frame signals {name: [K, f, ...]}, real frames) per chunk; the last one padded:
        audio with zeros, signals with their last value (the speed encoder reads neighbours, so a jump would leak)."""
        f, k = self.clip_frames, self.spec.clips_per_chunk
        per_chunk = f * k
        start = 0
        for audio in _rechunk(blocks, per_chunk):
            real = len(audio)
            pad = per_chunk - real
            audio = np.concatenate([audio, np.zeros((pad,) + audio.shape[1:], audio.dtype)])
            signals = {}
            for name, values in signals_T.items():
                part = values[start:start + real]
                part = np.concatenate([part, np.repeat(part[-1:], pad, axis=0)])
                signals[name] = part.reshape((k, f) + part.shape[1:])
            yield audio.reshape((k, f) + audio.shape[1:]).astype(np.float32), signals, real
            start += real
        assert start == total, f"the audio features held {start} frames, not the {total} announced"

    def _check_signals(self, signals: Mapping[str, np.ndarray] | None, total: int) -> dict[str, np.ndarray]:
        """The per-frame signals as this model reads them (EMOConfig.frame_signals), each [total, ...] of its
        dtype; a ValueError naming what is missing, extra or misshapen."""
        signals = dict(signals or {})
        extra = sorted(set(signals) - set(self.cfg.frame_signals))
        if extra:
            raise ValueError(f"per-frame {extra} given but this model does not read them (it reads "
                             f"{list(self.cfg.frame_signals)}); for speed use a stage3 config, or drop them")
        out = {}
        for name, (shape, dtype) in frame_signal_specs(self.cfg.frame_signals, (total,)).items():
            value = None if signals.get(name) is None else np.asarray(signals[name], dtype)
            if value is None or value.shape != shape:
                got = "none" if value is None else f"shape {value.shape}"
                raise ValueError(f"this model reads per-frame {name}: pass {total} per-frame {name}s of shape "
                                 f"{shape[1:]} each, got {got}")
            out[name] = value
        return out

    def stream(self, ref: ReferenceFeatures, audio_TCLD: np.ndarray | FeatureStream, face_mask_HW: np.ndarray,
               seed: int, ref_scale: float, audio_scale: float,
               signals: Mapping[str, np.ndarray] | None = None, motion_latents: np.ndarray | None = None,
               clip_index: int | None = None) -> Iterator[np.ndarray]:
        """Yields float32 latents [frames, h, w, C] chunk by chunk; len(audio_TCLD) frames in all.

        audio_TCLD: per-frame audio features [T, 2m+1, L, D], an array or a FeatureStream of blocks read as the
        chunks need them; face_mask_HW: {0, 1} mask at the face locator's resolution; signals: the per-frame
        signals the model reads (EMOConfig.frame_signals) by name, each [T, ...]: {"speed": [T]} for a stage-3
        model, none for a stage-2 one.
        motion_latents [n, h, w, C]: continue a video instead of starting one. The first clip reads these latents of
        the frames just before the audio as its motion frames (the last n of an earlier call's output, or a real
        video's encoded frames) and is clip `clip_index` (default 1) of the video, which keys its noise: the
        second call of a video generated in two calls passes the first call's last n latents and its clip count,
        and gets what one call over the whole audio gives.
        """
        if isinstance(audio_TCLD, FeatureStream):
            total, blocks = len(audio_TCLD), iter(audio_TCLD)
        else:
            audio_TCLD = np.asarray(audio_TCLD)
            total, blocks = len(audio_TCLD), iter([audio_TCLD])
        if total == 0:
            raise ValueError("no audio frames to generate; the audio is shorter than one video frame")
        signals = self._check_signals(signals, total)
        if face_mask_HW.shape != (self.mask_size, self.mask_size):
            raise ValueError(f"face mask has shape {face_mask_HW.shape}, expected {(self.mask_size,) * 2}")
        if self.spec.guidance == "joint" and ref_scale != audio_scale:
            raise ValueError(f"joint guidance has one scale but ref_scale={ref_scale} and audio_scale={audio_scale}; "
                             "set them equal or use --config.sample.guidance separate")
        carry = self._start(motion_latents, clip_index, seed)
        mask = jnp.asarray(face_mask_HW, jnp.float32)[None, :, :, None]
        scales = jnp.asarray([ref_scale, audio_scale], jnp.float32)
        pending = None
        for audio, per_frame, real in self._chunks(blocks, total, signals):
            args = (self.params, ref, carry, audio, per_frame, mask, scales)
            self.last_call_args = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a)), args)
            with self.on_mesh():
                carry, latents = self.program(*args)
            # The device starts on this chunk while the host copies out (and the caller decodes) the previous one.
            if pending is not None:
                yield _host_frames(*pending)
            pending = (latents, real)
        yield _host_frames(*pending)

    def _start(self, motion_latents: np.ndarray | None, clip_index: int | None, seed: int) -> tuple:
        """The chunk program's first carry: (motion latents [1, n, h, w, C], RNG key, index of the first clip)."""
        n, key = self.cfg.motion_frames, jax.random.PRNGKey(seed)
        if motion_latents is None:
            if clip_index:
                raise ValueError(f"clip_index={clip_index} continues a video: pass its last {n} latents as "
                                 "motion_latents too")
            return jnp.zeros((1, n) + self.latent_shape, jnp.float32), key, jnp.int32(0)
        shape = (n,) + self.latent_shape
        if np.shape(motion_latents) != shape:
            raise ValueError(f"motion_latents have shape {np.shape(motion_latents)}; this model continues from the "
                             f"last {n} latents of a video, shape {shape} (model.motion_frames, latent size, channels)")
        index = 1 if clip_index is None else clip_index
        if index < 1:
            raise ValueError(f"clip_index={index} with motion_latents: clip 0 starts a video and reads no motion "
                             "latents; a continued video's first clip is 1 or later")
        return jnp.asarray(motion_latents, jnp.float32)[None], key, jnp.int32(index)

    def sample(self, *args, **kwargs) -> np.ndarray:
        """All latents [T, h, w, C] at once (arguments as for `stream`)."""
        return np.concatenate(list(self.stream(*args, **kwargs)))


def weights_mesh(params: Any) -> jax.sharding.Mesh | None:
    """The mesh of several devices the weights are sharded over (NamedSharding), else None."""
    meshes = {leaf.sharding.mesh for leaf in jax.tree.leaves(params)
              if isinstance(getattr(leaf, "sharding", None), jax.sharding.NamedSharding)}
    meshes = {mesh for mesh in meshes if mesh.size > 1}
    if len(meshes) > 1:
        raise ValueError(f"the weights are sharded over {len(meshes)} different meshes; put them on one")
    return meshes.pop() if meshes else None


def _rechunk(blocks: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """The rows of consecutive blocks regrouped `size` at a time (the last group shorter)."""
    pieces, held = [], 0
    for block in blocks:
        pieces.append(block)
        held += len(block)
        while held >= size:
            joined = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
            yield joined[:size]
            pieces, held = [joined[size:]], held - size
    if held:
        yield np.concatenate(pieces)


def _host_frames(latents_KFhwC: jax.Array, real: int) -> np.ndarray:
    latents = np.asarray(latents_KFhwC)
    return latents.reshape((-1,) + latents.shape[2:])[:real]
