"""Stable Diffusion 1.x: OpenAI CLIP ViT-L/14 text encoder (last layer, normalised), a UNet with 8 heads at every
level, the 0.18215-scaled SD VAE."""
from __future__ import annotations

from ..ldm_layout import TEXT_PREFIX
from . import LatentFormat, ModelFamily, TextTower, register

SD_LATENT = LatentFormat(
    channels=4, scale_factor=0.18215,
    rgb_factors=((0.3512, 0.2297, 0.3227), (0.3250, 0.4974, 0.2350), (-0.2829, 0.1762, 0.2721),
                 (-0.2120, -0.2616, -0.7177)))
# NVIDIA's Align Your Steps sigmas for SD1.5 (A1111 uses them for every non-SDXL model)
AYS_SD15 = (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029)

TINY_UNET = {
    "block_out_channels": [32, 64],
    "layers_per_block": 1,
    # Cross-attention at the full-resolution level only: the low level then exercises the plain
    # Down/UpBlock2D layout (and its `.1.conv` upsampler key), like SD1.5's lowest level.
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "cross_attention_dim": 32,
}
TINY_TEXT_ENCODER = {"hidden_size": 32, "num_hidden_layers": 2, "intermediate_size": 37, "vocab_size": 49408,
                     "max_position_embeddings": 77}


class SD1(ModelFamily):
    def matches_folder(self, unet, text, text_2):
        # OpenCLIP towers use exact gelu, OpenAI CLIP quick_gelu: the one config difference that changes outputs
        return (unet.get("addition_embed_type") is None and unet.get("class_embed_type") is None
                and text is not None and text_2 is None and text.get("hidden_act") != "gelu")


SD1_FAMILY = register(SD1(
    key="sd1", label="SD1",
    towers=(TextTower(TEXT_PREFIX, "clip", "CLIP text encoder"), None),
    clip_skip=1, clip_final_norm=True, head_dim_64=False, latent=SD_LATENT, ays_sigmas=AYS_SD15,
    tiny_sizes={"unet": TINY_UNET, "text_encoder": TINY_TEXT_ENCODER},
))
