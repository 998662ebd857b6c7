"""The parameter-group table: every parameter in exactly one group, stage defaults, config-selected trainables."""
import pytest
from flax import traverse_util

from emo_jax.build import abstract_params
from emo_jax.config import load_config
from emo_jax.params import GROUPS, STAGE_TRAINABLE, group_of, module_of, trainable_mask, trainable_selection


@pytest.fixture(scope="module")
def stage3():
    return abstract_params(load_config("configs/tiny.py:stage3"))


def test_groups_split_the_tree_where_emo_adds_layers(stage3):
    flat = traverse_util.flatten_dict(stage3)
    groups = {module_of(p) for p in flat}
    assert groups == {g.name for g in GROUPS}
    motion = ("backbone", "up_blocks_1__motion_modules_0")
    assert module_of(motion + ("temporal_transformer", "proj_in", "kernel")) == "temporal"
    assert module_of(motion + ("speed_attn", "to_q", "kernel")) == "speed"  # speed layers inside motion modules
    assert module_of(("backbone", "down_blocks_0__attentions_0", "transformer_blocks_0", "audio_attn", "to_q",
                      "kernel")) == "audio_attention"
    assert module_of(("backbone", "down_blocks_0__attentions_0", "transformer_blocks_0", "attn1", "to_q",
                      "kernel")) == "backbone"
    assert module_of(("speed_encoder", "proj1", "kernel")) == "speed"
    # A module whose name only contains a group's word is not in that group (no substring matching).
    assert module_of(("backbone", "my_motion_modules_helper", "kernel")) == "backbone"
    with pytest.raises(ValueError, match="belongs to no parameter group"):
        group_of(("emotion_embedding", "kernel"))
    # SD1.5 fills exactly the spatial UNets; each group exports to its own file.
    assert {g.name for g in GROUPS if g.from_sd} == {"reference_net", "backbone"}
    assert len({g.export_file for g in GROUPS}) == len(GROUPS)


def test_stage_defaults_follow_the_paper():
    assert set(STAGE_TRAINABLE[1]) == {"reference_net", "backbone", "face_locator"}
    assert set(STAGE_TRAINABLE[2]) == set(STAGE_TRAINABLE[1]) | {"audio_proj", "audio_attention", "temporal"}
    assert set(STAGE_TRAINABLE[3]) == {"temporal", "speed"}  # audio layers fixed on purpose
    assert trainable_selection(3) == STAGE_TRAINABLE[3]
    assert trainable_selection(3, ("speed",)) == ("speed",)


def test_trainable_sets_by_group_name_and_path_regex(stage3):
    params = {k: v for k, v in stage3.items() if k != "vae"}
    flat = traverse_util.flatten_dict(params)

    def chosen(selection):
        mask = traverse_util.flatten_dict(trainable_mask(params, selection))
        return {p for p, on in mask.items() if on}

    assert chosen(("speed",)) == {p for p in flat if module_of(p) == "speed"}
    attn1 = chosen((r"backbone/.*/attn1/",))
    assert attn1 and all(p[0] == "backbone" and "attn1" in p for p in attn1)
    both = chosen(("face_locator", r"backbone/.*/attn1/"))
    assert both == attn1 | {p for p in flat if p[0] == "face_locator"}
    with pytest.raises(ValueError, match="'nothing_here' selects no parameter"):
        trainable_mask(params, ("nothing_here",))
    with pytest.raises(ValueError, match=r"neither a parameter group .* nor a valid regex"):
        trainable_mask(params, ("backbone/(",))
