"""Tiny random wav2vec2 models and checkpoints written by transformers, shared by the audio tests."""
import os

import torch

TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=48,
    conv_dim=(16, 16, 16),
    conv_kernel=(10, 3, 3),
    conv_stride=(5, 2, 2),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
)
LAYOUTS = {
    "base": dict(feat_extract_norm="group", do_stable_layer_norm=False),
    "large": dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True),
}


def make_torch_wav2vec2(layout: str, seed: int = 0, head: bool = False):
    """A random tiny transformers wav2vec2 in eval mode; `head` gives a Wav2Vec2ForCTC (keys prefixed 'wav2vec2.')."""
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC, Wav2Vec2Model

    torch.manual_seed(seed)
    config = Wav2Vec2Config(**TINY, **LAYOUTS[layout], vocab_size=7)
    model = (Wav2Vec2ForCTC if head else Wav2Vec2Model)(config).eval()
    # Fresh norms are identity maps; random affine parameters make the parity test see their layout too.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def save_as_bin(model, folder: str, old_weight_norm_names: bool) -> None:
    """config.json + pytorch_model.bin; optionally with the pre-parametrizations weight_g/weight_v key names."""
    os.makedirs(folder, exist_ok=True)
    model.config.save_pretrained(folder)
    sd = model.state_dict()
    if old_weight_norm_names:
        sd = {
            k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1", "weight_v"): v
            for k, v in sd.items()
        }
    torch.save(sd, os.path.join(folder, "pytorch_model.bin"))


def save_tiny(folder: str, layout: str = "base", seed: int = 0):
    """Writes a tiny random wav2vec2 with save_pretrained (model.safetensors) and returns the torch model."""
    model = make_torch_wav2vec2(layout, seed)
    model.save_pretrained(folder)
    return model


def flax_tiny_50hz(layout: str = "base", seed: int = 0, local: bool = False):
    """A random Flax wav2vec2 with the real 50 Hz frame rate (hop 320 samples), and its params.

    `local` makes every frame depend on its own samples only: the positional conv is zeroed and attention has
    one head with query = key = 30 * identity. Its inputs are layer-normed (unit scale, zero bias at init), so all
    have the same norm and a frame's score with itself exceeds every other by a wide margin.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    from emo_jax.audio.wav2vec2 import Wav2Vec2Config, Wav2Vec2Model

    fields = {**TINY, **LAYOUTS[layout], "conv_dim": (16, 16, 16, 16), "conv_kernel": (10, 4, 4, 4), "conv_stride": (5, 4, 4, 4)}
    if local:
        fields["num_attention_heads"] = 1
    config = Wav2Vec2Config(**fields)
    module = Wav2Vec2Model(config)
    # Filled with numpy from the shapes: compiling module.init costs ~10 s on a loaded 2-core machine.
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 4000), jnp.float32))

    def draw(path, leaf):
        name = path[-1].key
        if name == "scale":
            return np.ones(leaf.shape, np.float32)
        if name == "bias":
            return 0.1 * rng.standard_normal(leaf.shape).astype(np.float32)
        return (rng.standard_normal(leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]))).astype(np.float32)

    params = jax.tree_util.tree_map_with_path(draw, shapes)
    if local:
        enc = params["params"]["encoder"]
        enc["pos_conv_embed"]["conv"]["kernel"][:] = 0
        enc["pos_conv_embed"]["conv"]["bias"][:] = 0
        eye = 30.0 * np.eye(config.hidden_size, dtype=np.float32)
        for i in range(config.num_hidden_layers):
            for name in ("q_proj", "k_proj"):
                enc[f"layers_{i}"]["attention"][name] = {"kernel": eye, "bias": np.zeros(config.hidden_size, np.float32)}
    return module, params
