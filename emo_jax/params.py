"""The one table of parameter groups: which parameters form each group, whether SD1.5 has them, where they are
exported, and which training stages train them; plus counts and trainable masks built from it."""
from __future__ import annotations

import dataclasses
import re
from typing import Mapping, Sequence

import jax
import numpy as np
from flax import traverse_util

WEIGHTS = "diffusion_pytorch_model.safetensors"


@dataclasses.dataclass(frozen=True)
class ParamGroup:
    """A group of the EMO parameter tree.

    A parameter belongs to the first group (in GROUPS order) whose `layers` pattern fully matches one of its
    module names inside the backbone, else to the group listing its top-level module in `tops`.
    """

    name: str
    export_file: str  # relative to an emo-export folder
    stages: tuple[int, ...]  # training stages that train it unless config.train.trainable says otherwise
    tops: tuple[str, ...] = ()  # whole top-level modules of the tree
    layers: str = ""  # regex over module names inside the backbone (EMO's layers added to SD's UNet)
    from_sd: bool = False  # SD1.5's UNet has these weights (init.sd_path fills them)
    key_prefix: str = ""  # torch key prefix of its top-level modules (Hallo's names); UNet-internal keys have none


# EMO paper, section 3.3: stage 1 learns the image model; stage 2 adds the temporal and audio layers and trains
# everything; stage 3 trains only temporal + speed layers, keeping the audio layers fixed on purpose. Stage 0 is
# the plain SD UNet (the `sd` config variant). Speed layers sit inside the motion modules, so they come first.
GROUPS = (
    ParamGroup("vae", f"vae/{WEIGHTS}", stages=(), tops=("vae",)),
    ParamGroup("reference_net", f"reference_net/{WEIGHTS}", stages=(1, 2), tops=("reference_net",), from_sd=True),
    ParamGroup("speed", "speed.safetensors", stages=(3,), tops=("speed_encoder",), layers=r"speed_attn|speed_norm",
               key_prefix="speed_encoder."),
    ParamGroup("temporal", "motion_modules.safetensors", stages=(2, 3), layers=r".+__motion_modules_\d+"),
    ParamGroup("audio_attention", "audio_attention.safetensors", stages=(2,), layers=r"audio_attn|norm_audio"),
    ParamGroup("backbone", f"backbone_unet/{WEIGHTS}", stages=(0, 1, 2), tops=("backbone",), from_sd=True),
    ParamGroup("audio_proj", "audio_proj.safetensors", stages=(2,), tops=("audio_proj",), key_prefix="audioproj."),
    ParamGroup("face_locator", "face_locator.safetensors", stages=(1, 2), tops=("face_locator",),
               key_prefix="face_locator."),
)
BY_NAME = {g.name: g for g in GROUPS}
MODULES = tuple(g.name for g in GROUPS)
STAGE_TRAINABLE = {s: tuple(g.name for g in GROUPS if s in g.stages) for s in (0, 1, 2, 3)}
_LAYERS = [(g, re.compile(g.layers)) for g in GROUPS if g.layers]
_TOPS = {top: g for g in GROUPS for top in g.tops}


def group_of(path: tuple[str, ...]) -> ParamGroup:
    """The group of a parameter path of the EMO tree (top level reference_net, backbone, ...)."""
    if path[0] == "backbone":
        for group, pattern in _LAYERS:
            if any(pattern.fullmatch(name) for name in path[1:-1]):
                return group
    if path[0] in _TOPS:
        return _TOPS[path[0]]
    raise ValueError(f"parameter path {'/'.join(path)} belongs to no parameter group (emo_jax.params.GROUPS)")


def module_of(path: tuple[str, ...]) -> str:
    """The name of the group a parameter path belongs to."""
    return group_of(path).name


def count_by_module(params: Mapping) -> dict[str, int]:
    """Parameter counts per group (shapes suffice, so eval_shape outputs work)."""
    counts: dict[str, int] = {}
    for path, leaf in traverse_util.flatten_dict(params).items():
        name = module_of(path)
        counts[name] = counts.get(name, 0) + int(np.prod(leaf.shape))
    return counts


def trainable_selection(stage: int, trainable: Sequence[str] = ()) -> tuple[str, ...]:
    """What a stage trains: config.train.trainable when it names anything, else the stage's groups."""
    return tuple(trainable) or STAGE_TRAINABLE[stage]


def trainable_mask(params: Mapping, selection: Sequence[str]):
    """A pytree of bools like params: True where a parameter's group is named in `selection`, or where an entry
    that is not a group name matches its path ('backbone/up_blocks_1__attentions_0/...') as a regex."""
    flat = traverse_util.flatten_dict(params)
    paths = {p: "/".join(p) for p in flat}
    mask = dict.fromkeys(flat, False)
    for entry in selection:
        if entry in BY_NAME:
            hits = [p for p in flat if module_of(p) == entry]
        else:
            try:
                pattern = re.compile(entry)
            except re.error as e:
                raise ValueError(f"train.trainable entry {entry!r} is neither a parameter group {MODULES} nor a "
                                 f"valid regex ({e})") from e
            hits = [p for p, text in paths.items() if pattern.search(text)]
        if not hits:
            raise ValueError(f"train.trainable entry {entry!r} selects no parameter of this model; name a group "
                             f"of {MODULES} or a regex over paths such as 'backbone/.*attn1'")
        mask.update(dict.fromkeys(hits, True))
    return jax.tree.unflatten(jax.tree.structure(params), [mask[p] for p in flat])
