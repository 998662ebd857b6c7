"""Tiny random wav2vec2 and VAE folders written by transformers and diffusers, as emo-prepare reads them."""
import os

# Real hop (320 samples, 50 Hz) so the 30 fps resampling is the production one; 2 layers of width 16.
WAV2VEC = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
               conv_dim=(16, 16, 16, 16), conv_stride=(5, 4, 4, 4), conv_kernel=(10, 4, 4, 4),
               num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
# Two resolution levels: downsampling factor 2, so 64 px frames give 32 x 32 x 4 latents.
VAE = dict(block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8, latent_channels=4,
           down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)


def save_tiny_encoders(folder) -> tuple[str, str]:
    """Writes <folder>/wav2vec and <folder>/vae with save_pretrained; returns their paths."""
    import torch
    from diffusers import AutoencoderKL
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    wav2vec, vae = os.path.join(folder, "wav2vec"), os.path.join(folder, "vae")
    Wav2Vec2Model(Wav2Vec2Config(**WAV2VEC)).save_pretrained(wav2vec)
    AutoencoderKL(**VAE).save_pretrained(vae)
    return wav2vec, vae
