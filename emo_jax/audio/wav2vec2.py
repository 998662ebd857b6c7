"""Frozen wav2vec2 encoder in Flax linen, equal to transformers' Wav2Vec2Model in eval mode.

Covers the base layout (feat_extract_norm "group", post-norm encoder layers) and the large/lv60 layout
(feat_extract_norm "layer", pre-norm "stable layer norm" layers). Parameter tree, mirroring the PyTorch names:

    feature_extractor/conv_layers_{i}/conv        kernel [k_i, c_in, c_out], bias [c_out] if conv_bias
    feature_extractor/conv_layers_{i}/layer_norm  scale, bias [c_out]  (group: layer 0 only; layer: every conv)
    feature_projection/layer_norm                 scale, bias [conv_dim[-1]]
    feature_projection/projection                 kernel [conv_dim[-1], hidden], bias [hidden]
    encoder/pos_conv_embed/conv                   kernel [num_conv_pos_embeddings, hidden / groups, hidden], bias
                                                  (the effective weight g * v / |v|, weight norm folded at import)
    encoder/layer_norm                            scale, bias [hidden]
    encoder/layers_{i}/attention/{q,k,v,out}_proj kernel [hidden, hidden], bias [hidden]
    encoder/layers_{i}/layer_norm, final_layer_norm
    encoder/layers_{i}/feed_forward/intermediate_dense  kernel [hidden, intermediate]
    encoder/layers_{i}/feed_forward/output_dense        kernel [intermediate, hidden]

Dense kernels are [in, out] (PyTorch's Linear weight transposed); conv kernels are [width, in, out].
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from emo_jax.paths import require_file

_ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}
# PyTorch's nn.LayerNorm / nn.GroupNorm default, used by the feature-extractor norms (they ignore layer_norm_eps).
_CONV_NORM_EPS = 1e-5


@dataclasses.dataclass(frozen=True)
class Wav2Vec2Config:
    """The architecture fields of a Hugging Face wav2vec2 config.json; defaults are transformers' (base)."""

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5
    feat_extract_norm: str = "group"
    feat_extract_activation: str = "gelu"
    conv_dim: tuple[int, ...] = (512, 512, 512, 512, 512, 512, 512)
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_bias: bool = False
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    do_stable_layer_norm: bool = False

    def __post_init__(self):
        for name in ("conv_dim", "conv_stride", "conv_kernel"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        problems = []
        if not len(self.conv_dim) == len(self.conv_stride) == len(self.conv_kernel):
            problems.append("conv_dim, conv_stride and conv_kernel must have the same length")
        if self.feat_extract_norm not in ("group", "layer"):
            problems.append(f"feat_extract_norm is {self.feat_extract_norm!r}, expected 'group' or 'layer'")
        for name in ("hidden_act", "feat_extract_activation"):
            if getattr(self, name) not in _ACTIVATIONS:
                problems.append(f"{name} {getattr(self, name)!r} is not one of {sorted(_ACTIVATIONS)}")
        if self.hidden_size % self.num_attention_heads:
            problems.append(f"hidden_size {self.hidden_size} is not divisible by num_attention_heads")
        if self.hidden_size % self.num_conv_pos_embedding_groups:
            problems.append(f"hidden_size {self.hidden_size} is not divisible by num_conv_pos_embedding_groups")
        if problems:
            raise ValueError("invalid wav2vec2 config: " + "; ".join(problems))

    @property
    def hop_samples(self) -> int:
        """Samples between two encoder frames (320 for every released wav2vec2: 50 frames per second at 16 kHz)."""
        return math.prod(self.conv_stride)

    @property
    def receptive_field_samples(self) -> int:
        """Samples seen by one encoder frame of the conv stack (400 for the released models)."""
        field, jump = 1, 1
        for k, s in zip(self.conv_kernel, self.conv_stride):
            field += (k - 1) * jump
            jump *= s
        return field

    def num_frames(self, num_samples: int) -> int:
        """Encoder frames for `num_samples` input samples (0 if shorter than the receptive field)."""
        n = num_samples
        for k, s in zip(self.conv_kernel, self.conv_stride):
            n = (n - k) // s + 1 if n >= k else 0
        return n

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> "Wav2Vec2Config":
        """Picks the architecture fields; rejects non-wav2vec2 models and options this encoder does not build."""
        model_type = d.get("model_type", "wav2vec2")
        if model_type != "wav2vec2":
            raise ValueError(f"{source} describes a {model_type!r} model; this encoder reads wav2vec2 checkpoints only")
        if d.get("add_adapter") or d.get("adapter_attn_dim") is not None:
            raise ValueError(f"{source} uses wav2vec2 adapters (add_adapter / adapter_attn_dim), which are not built here")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def from_json(cls, path: str) -> "Wav2Vec2Config":
        """Reads a Hugging Face config.json (a file, or the folder holding it)."""
        if os.path.isdir(path):
            path = os.path.join(path, "config.json")
        require_file(path, "wav2vec2 config", "pass a Hugging Face folder with config.json")
        with open(path, encoding="utf-8") as f:
            try:
                d = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"wav2vec2 config {path!r} is not valid JSON: {e}") from e
        return cls.from_dict(d, source=path)


def _layer_norm(eps: float, name: str | None = None) -> nn.LayerNorm:
    # Two-pass variance, as PyTorch computes it; the fast E[x^2]-E[x]^2 form costs parity digits.
    return nn.LayerNorm(epsilon=eps, use_fast_variance=False, name=name)


class _ChannelNorm(nn.Module):
    """GroupNorm with one group per channel over time (wav2vec2 base's first conv), stats optionally given."""

    features: int

    @nn.compact
    def __call__(self, x_BTC: jax.Array, stats: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
        if stats is None:
            mean = x_BTC.mean(axis=1, keepdims=True)
            var = jnp.square(x_BTC - mean).mean(axis=1, keepdims=True)
        else:
            mean, var = stats
        scale = self.param("scale", nn.initializers.ones, (self.features,))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        return (x_BTC - mean) * jax.lax.rsqrt(var + _CONV_NORM_EPS) * scale + bias


class _ConvLayer(nn.Module):
    config: Wav2Vec2Config
    index: int

    def setup(self):
        c = self.config
        i = self.index
        self.conv = nn.Conv(c.conv_dim[i], (c.conv_kernel[i],), (c.conv_stride[i],), "VALID", use_bias=c.conv_bias)
        if c.feat_extract_norm == "layer":
            self.layer_norm = _layer_norm(_CONV_NORM_EPS)
        elif i == 0:
            self.layer_norm = _ChannelNorm(c.conv_dim[i])

    def __call__(self, x_BTC: jax.Array, stats: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
        x_BTC = self.conv(x_BTC)
        if self.config.feat_extract_norm == "layer":
            x_BTC = self.layer_norm(x_BTC)
        elif self.index == 0:
            x_BTC = self.layer_norm(x_BTC, stats)
        return _ACTIVATIONS[self.config.feat_extract_activation](x_BTC)


class _Attention(nn.Module):
    config: Wav2Vec2Config

    @nn.compact
    def __call__(self, x_BTD: jax.Array, key_mask_BT: jax.Array | None) -> jax.Array:
        c = self.config
        heads, head_dim = c.num_attention_heads, c.hidden_size // c.num_attention_heads
        split = lambda t: t.reshape(*t.shape[:2], heads, head_dim)
        q_BTHK = split(nn.Dense(c.hidden_size, name="q_proj")(x_BTD)) * head_dim**-0.5
        k_BSHK = split(nn.Dense(c.hidden_size, name="k_proj")(x_BTD))
        v_BSHK = split(nn.Dense(c.hidden_size, name="v_proj")(x_BTD))
        logits_BHTS = jnp.einsum("bthk,bshk->bhts", q_BTHK, k_BSHK)
        if key_mask_BT is not None:
            logits_BHTS = jnp.where(key_mask_BT[:, None, None, :], logits_BHTS, jnp.finfo(logits_BHTS.dtype).min)
        out_BTHK = jnp.einsum("bhts,bshk->bthk", jax.nn.softmax(logits_BHTS, axis=-1), v_BSHK)
        return nn.Dense(c.hidden_size, name="out_proj")(out_BTHK.reshape(x_BTD.shape))


class _FeedForward(nn.Module):
    config: Wav2Vec2Config

    @nn.compact
    def __call__(self, x_BTD: jax.Array) -> jax.Array:
        h = nn.Dense(self.config.intermediate_size, name="intermediate_dense")(x_BTD)
        return nn.Dense(self.config.hidden_size, name="output_dense")(_ACTIVATIONS[self.config.hidden_act](h))


class _EncoderLayer(nn.Module):
    config: Wav2Vec2Config

    @nn.compact
    def __call__(self, x_BTD: jax.Array, key_mask_BT: jax.Array | None) -> jax.Array:
        c = self.config
        attention = _Attention(c, name="attention")
        layer_norm = _layer_norm(c.layer_norm_eps, "layer_norm")
        feed_forward = _FeedForward(c, name="feed_forward")
        final_layer_norm = _layer_norm(c.layer_norm_eps, "final_layer_norm")
        if c.do_stable_layer_norm:
            x_BTD = x_BTD + attention(layer_norm(x_BTD), key_mask_BT)
            return x_BTD + feed_forward(final_layer_norm(x_BTD))
        x_BTD = layer_norm(x_BTD + attention(x_BTD, key_mask_BT))
        return final_layer_norm(x_BTD + feed_forward(x_BTD))


class _PosConv(nn.Module):
    config: Wav2Vec2Config

    @nn.compact
    def __call__(self, x_BTD: jax.Array) -> jax.Array:
        c = self.config
        k = c.num_conv_pos_embeddings
        y_BTD = nn.Conv(
            c.hidden_size, (k,), padding=[(k // 2, k // 2)], feature_group_count=c.num_conv_pos_embedding_groups,
            name="conv",
        )(x_BTD)
        if k % 2 == 0:
            # Symmetric padding of an even kernel yields one frame too many (fairseq's SamePad drops the last).
            y_BTD = y_BTD[:, :-1]
        return _ACTIVATIONS[c.feat_extract_activation](y_BTD)


class Wav2Vec2Output(NamedTuple):
    """The encoder's outputs, as transformers' Wav2Vec2Model(output_hidden_states=True) gives them."""

    last_hidden_state: jax.Array  # [B, T, hidden]
    hidden_states: tuple[jax.Array, ...]  # num_hidden_layers + 1 arrays [B, T, hidden]


class _Encoder(nn.Module):
    config: Wav2Vec2Config

    @nn.compact
    def __call__(self, x_BTD: jax.Array, key_mask_BT: jax.Array | None) -> Wav2Vec2Output:
        c = self.config
        pos_conv = _PosConv(c, name="pos_conv_embed")
        layer_norm = _layer_norm(c.layer_norm_eps, "layer_norm")
        if key_mask_BT is not None:
            # Padded frames must look like the conv's zero padding, as transformers does with an attention mask.
            x_BTD = jnp.where(key_mask_BT[..., None], x_BTD, 0.0)
        x_BTD = x_BTD + pos_conv(x_BTD)
        if not c.do_stable_layer_norm:
            x_BTD = layer_norm(x_BTD)
        hidden = [x_BTD]
        for i in range(c.num_hidden_layers):
            hidden.append(_EncoderLayer(c, name=f"layers_{i}")(hidden[-1], key_mask_BT))
        # The pre-norm stack ends with the encoder norm. transformers >= 5 applies it to last_hidden_state only
        # (hidden_states[-1] is the raw last layer); transformers 4 also put the normed state in hidden_states[-1].
        last = layer_norm(hidden[-1]) if c.do_stable_layer_norm else hidden[-1]
        return Wav2Vec2Output(last, tuple(hidden))


class _FeatureExtractor(nn.Module):
    config: Wav2Vec2Config

    def setup(self):
        self.conv_layers = [_ConvLayer(self.config, i) for i in range(len(self.config.conv_dim))]

    def __call__(self, x_BTC: jax.Array, conv0_stats: tuple[jax.Array, jax.Array] | None) -> jax.Array:
        for i, layer in enumerate(self.conv_layers):
            x_BTC = layer(x_BTC, conv0_stats if i == 0 else None)
        return x_BTC

    def first_conv(self, x_BTC: jax.Array) -> jax.Array:
        return self.conv_layers[0].conv(x_BTC)


class _FeatureProjection(nn.Module):
    config: Wav2Vec2Config

    @nn.compact
    def __call__(self, x_BTC: jax.Array) -> jax.Array:
        x_BTC = _layer_norm(self.config.layer_norm_eps, "layer_norm")(x_BTC)
        return nn.Dense(self.config.hidden_size, name="projection")(x_BTC)


class Wav2Vec2Model(nn.Module):
    """Raw 16 kHz samples [B, S] -> Wav2Vec2Output with frames T = config.num_frames(S).

    `valid_frames` marks frames at and after it as padding (masked from attention, zeroed before the positional
    conv). `conv0_stats` (mean, var), each [1, 1, conv_dim[0]], replace the first conv's per-channel statistics
    over time (group-norm layout only), so that a window of a long file is normalised as the whole file is.
    """

    config: Wav2Vec2Config

    def setup(self):
        self.feature_extractor = _FeatureExtractor(self.config)
        self.feature_projection = _FeatureProjection(self.config)
        self.encoder = _Encoder(self.config)

    def __call__(
        self,
        input_values_BS: jax.Array,
        valid_frames: jax.Array | int | None = None,
        conv0_stats: tuple[jax.Array, jax.Array] | None = None,
    ) -> Wav2Vec2Output:
        x_BTD = self.feature_projection(self.feature_extractor(input_values_BS[..., None], conv0_stats))
        key_mask_BT = None
        if valid_frames is not None:
            key_mask_BT = jnp.broadcast_to(jnp.arange(x_BTD.shape[1]) < valid_frames, x_BTD.shape[:2])
        return self.encoder(x_BTD, key_mask_BT)

    def first_conv(self, input_values_BS: jax.Array) -> jax.Array:
        """The first feature-extractor conv before its norm, [B, T0, conv_dim[0]]: what group norm normalises."""
        return self.feature_extractor.first_conv(input_values_BS[..., None])
