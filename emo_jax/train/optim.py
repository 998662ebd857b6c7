"""The optimiser of a training stage: AdamW with warmup and clipping on the trainable parameters only."""
from __future__ import annotations

import jax
import ml_collections
import optax

TRAIN, FROZEN = "train", "frozen"


def learning_rate(config: ml_collections.ConfigDict) -> optax.Schedule:
    """Linear warmup from 0 to train.lr over train.warmup_steps optimiser updates, then constant (as Hallo)."""
    t = config.train
    if t.lr <= 0:
        raise ValueError(f"train.lr must be positive, got {t.lr}; set --config.train.lr")
    if t.warmup_steps <= 0:
        return optax.constant_schedule(t.lr)
    return optax.linear_schedule(0.0, t.lr, t.warmup_steps)


def make_optimizer(config: ml_collections.ConfigDict, mask) -> optax.GradientTransformation:
    """AdamW on the leaves where `mask` (a bool tree like the params) is True; the rest get zero updates.

    The frozen branch is optax.set_to_zero under multi_transform, so frozen parameters hold no Adam moments and
    no accumulated gradients: optax.masked stores an empty node in their place. Gradient accumulation
    (train.grad_accum micro-batches per update) sits inside the trainable branch for the same reason.
    """
    t = config.train
    if t.grad_accum < 1:
        raise ValueError(f"train.grad_accum must be >= 1, got {t.grad_accum}")
    if t.grad_clip < 0:
        raise ValueError(f"train.grad_clip must be >= 0 (0 disables clipping), got {t.grad_clip}")
    # inject_hyperparams keeps the current learning rate in the optimiser state, where the metrics read it.
    adamw = optax.inject_hyperparams(optax.adamw)(learning_rate=learning_rate(config), weight_decay=t.weight_decay)
    trainable = optax.chain(optax.clip_by_global_norm(t.grad_clip), adamw) if t.grad_clip > 0 else adamw
    if t.grad_accum > 1:
        trainable = optax.MultiSteps(trainable, t.grad_accum).gradient_transformation()
    labels = jax.tree.map(lambda m: TRAIN if m else FROZEN, mask)
    return optax.multi_transform({TRAIN: trainable, FROZEN: optax.set_to_zero()}, labels)


def current_lr(opt_state) -> jax.Array:
    """The learning rate of the last update, as inject_hyperparams recorded it."""
    return optax.tree_utils.tree_get(opt_state, "hyperparams")["learning_rate"]


def update_applied(opt_state) -> jax.Array | bool:
    """Whether the last update changed the parameters (False on a gradient-accumulation micro-step)."""
    mini_step = optax.tree_utils.tree_get(opt_state, "mini_step")
    return True if mini_step is None else mini_step == 0
