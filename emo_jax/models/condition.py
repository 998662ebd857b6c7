"""The named conditioning structures: what the ReferenceNet hands the backbone, what a clip is denoised under,
and what the UNet's layers read. Features are keyed by the backbone module that reads them, so a block that is
swapped or missing is an error, never a silent misalignment."""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import flax.struct
import jax

Array = jax.Array


def frame_signal(shape: tuple[int, ...], dtype: str):
    """A Condition field for a per-frame signal: one value of `shape` and `dtype` per video frame, [B, F, *shape] in
    a clip. The loader slices it from the record field of the same name, the batch spec, the train step, the
    sampler and the evaluation pass it on by that name; the model's EMOConfig.frame_signals says which it reads."""
    return flax.struct.field(default=None, metadata={"frame_signal": (tuple(shape), dtype)})


@flax.struct.dataclass
class ReferenceFeatures:
    """ReferenceNet features, keyed by the backbone module that reads them.

    tokens: transformer name ('down_blocks_0__attentions_0') -> its block's self-attention input [N, L, C].
    motion: motion-module name ('down_blocks_0__motion_modules_0') -> the hidden states where that module
    sits [N, H, W, C].
    """

    tokens: dict[str, Array]
    motion: dict[str, Array]


@flax.struct.dataclass
class ClipInputs:
    """The backbone's per-frame conditioning that depends on neither the timestep nor the guidance pass, computed
    once per clip (EMO.clip_inputs) instead of at every denoising step: audio tokens [N, K, D], speed tokens
    [N, K, D] and the face locator's conv_in residual [N, H, W, C], N = B * num_frames rows."""

    audio: Optional[Array] = None
    speed: Optional[Array] = None
    face_residual: Optional[Array] = None


@flax.struct.dataclass
class Condition:
    """What a clip of B videos x F frames is denoised under (EMO.denoise); absent conditions are None.

    ref_tokens: ReferenceFeatures.tokens of the reference [B, L, C]; motion: motion-module features of the motion
    frames [B * n, H, W, C] (EMO.motion_features); audio: per-frame wav2vec2 features [B, F, 2m+1, L, D];
    face_mask: [B, H, W, 1]; ref_keep / audio_keep: [B] bool, False where classifier-free guidance drops that
    condition. clip_inputs: the per-clip work on audio, speed and face mask done already (the sampler's clips);
    None: EMO.denoise does it. Then the per-frame signals (frame_signal fields, see frame_signals()):
    speed: head speed per frame [B, F] in model.speed.unit.
    """

    ref_tokens: dict[str, Array]
    motion: Optional[dict[str, Array]] = None
    audio: Optional[Array] = None
    face_mask: Optional[Array] = None
    speed: Optional[Array] = frame_signal((), "float32")
    ref_keep: Optional[Array] = None
    audio_keep: Optional[Array] = None
    clip_inputs: Optional[ClipInputs] = None


def frame_signals() -> dict[str, tuple[tuple[int, ...], str]]:
    """Condition's per-frame signals: name -> (shape of one frame's value, dtype)."""
    return {f.name: f.metadata["frame_signal"] for f in dataclasses.fields(Condition) if "frame_signal" in f.metadata}


def frame_signal_specs(names: Sequence[str], leading: tuple[int, ...]) -> dict[str, tuple[tuple[int, ...], str]]:
    """name -> (shape, dtype) of the named per-frame signals with `leading` dimensions before one frame's value:
    the one lookup the batch spec, init shapes, the sampler and the planner share (EMOConfig.frame_signals)."""
    declared = frame_signals()
    unknown = sorted(set(names) - set(declared))
    if unknown:
        raise ValueError(f"{unknown} are not per-frame signals of Condition (those are {sorted(declared)}); "
                         "declare them with frame_signal(...) in emo_jax/models/condition.py")
    return {name: (tuple(leading) + declared[name][0], declared[name][1]) for name in names}


@flax.struct.dataclass
class UNetCondition:
    """What the UNet's layers read, per frame (N = B * num_frames rows); absent conditions are None.

    text [N, S, D] (sd mode); ref_tokens: transformer name -> [N, L, C]; ref_keep, audio_keep [N] bool;
    audio [N, K, D] tokens; motion: motion-module name -> [B * n, H, W, C]; speed [N, K, D] tokens.
    """

    text: Optional[Array] = None
    ref_tokens: Optional[dict[str, Array]] = None
    ref_keep: Optional[Array] = None
    audio: Optional[Array] = None
    audio_keep: Optional[Array] = None
    motion: Optional[dict[str, Array]] = None
    speed: Optional[Array] = None
    num_frames: int = flax.struct.field(pytree_node=False, default=1)


def check_keys(what: str, given: dict | None, used: list[str]) -> None:
    """Every feature the UNet looked up exists and every feature given was used, else a ValueError naming them."""
    if given is None:
        return
    missing, leftover = sorted(set(used) - set(given)), sorted(set(given) - set(used))
    if missing or leftover:
        raise ValueError(f"{what} do not match this UNet's modules: missing {missing}, not read {leftover}; were "
                         "they made by a ReferenceNet of the same config?")
