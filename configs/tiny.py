"""emo_512 shrunk so every stage runs in seconds on a laptop CPU (big_vision's runlocal idea)."""
import ml_collections

from configs import emo_512


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = emo_512.get_config(arg)
    m = c.model
    m.latent_size = 16
    m.clip_frames = 4
    m.motion_frames = 2
    u = m.unet
    u.block_out_channels = (32, 64)
    u.attention_levels = (True, True)
    u.layers_per_block = 1
    u.heads = 4
    u.norm_groups = 8
    u.cross_attention_dim = 32
    u.audio_dim = 32
    u.temporal_heads = 4
    u.temporal_max_len = 16
    u.speed_dim = 32
    u.remat = False
    u.remat_resnets = False
    u.dtype = "float32"
    m.audio.layers = 2
    m.audio.feature_dim = 16
    m.audio.tokens = 4
    m.audio.hidden = 32
    m.face_locator.channels = (8, 16)
    m.speed.tokens = 2
    m.speed.hidden = 32
    # A 4-layer conv stack with the real 320-sample hop, so features come at wav2vec2's 50 Hz.
    c.audio.encoder.update(dict(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, conv_dim=(16,) * 4,
        conv_stride=(5, 4, 4, 4), conv_kernel=(10, 4, 4, 4), num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4))
    c.audio.window_seconds = 10.0
    if c.vae is not None:
        c.vae.block_out_channels = (16, 32)
        c.vae.layers_per_block = 1
        c.vae.norm_groups = 8
    c.data.size = 32
    c.data.fps = 25
    c.data.reference_margin = 4
    c.train.batch_size = 4 if c.train.stage == 1 else 2
    c.train.steps = 100
    c.train.warmup_steps = 5
    c.train.log_every = 10
    c.train.checkpoint_every = 50
    c.train.keep_every = 0
    c.train.ema_decay = 0.99
    c.sample.steps = 4
    c.sample.clips_per_chunk = 2
    return c
