"""SDXL base and refiner: OpenAI CLIP ViT-L (penultimate layer, not normalised) and/or OpenCLIP bigG (its
penultimate layer, and its projected pooled output), size/crop ids beside the pooled text, the 0.13025-scaled
SDXL VAE."""
from __future__ import annotations

import torch

from ..ldm_layout import REFINER_OPENCLIP_PREFIX, SDXL_CLIP_PREFIX, SDXL_OPENCLIP_PREFIX
from . import LatentFormat, ModelFamily, TextTower, register
from .sd1 import TINY_TEXT_ENCODER, TINY_UNET

SDXL_LATENT = LatentFormat(
    channels=4, scale_factor=0.13025,
    rgb_factors=((0.3651, 0.4232, 0.4341), (-0.2533, -0.0042, 0.1068), (0.1076, 0.1111, -0.0362),
                 (-0.3165, -0.2492, -0.2188)),
    rgb_bias=(0.1084, -0.0175, -0.0011), taesd="taesdxl")
# NVIDIA's Align Your Steps sigmas for SDXL (A1111: for every model with SDXL's conditioner, refiner included)
AYS_SDXL = (14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029)
# A1111's defaults for the refiner's aesthetic-score id: high for the prompt, low for the negative prompt
# (sd_models_xl.get_learned_conditioning; diffusers' defaults are the same).
REFINER_AESTHETIC_SCORE, REFINER_NEGATIVE_AESTHETIC_SCORE = 6.0, 2.5

# The OpenCLIP-bigG stand-in: wider than the CLIP-L one (64 vs 32) so the two towers cannot be confused.
TINY_TEXT_ENCODER_2 = {**TINY_TEXT_ENCODER, "hidden_size": 64, "projection_dim": 64}
# SDXL puts attention at the low-resolution levels only, with deeper transformers further down (1, 2, 10);
# the tiny one has none at full resolution and 2 transformer blocks below (and in the mid block).
_TINY_UNET = {**TINY_UNET, "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"]}
# Size embedding input: pooled width + 6 (base) or 5 (refiner) time ids × 256, as the real 2816 / 2560.
_POOLED = TINY_TEXT_ENCODER_2["projection_dim"]
_BIGG = "second text encoder (OpenCLIP bigG)"


class SDXL(ModelFamily):
    def looks_v(self, state_dict, unet_sizes):
        return "v_pred" in state_dict  # ComfyUI's marker in saved SDXL v-prediction files

    @property
    def v_marked_by_weights(self) -> bool:
        return True

    def matches_folder(self, unet, text, text_2):
        return unet.get("addition_embed_type") == "text_time" and text is not None and text_2 is not None

    def time_ids(self, height, width):
        # original size, crop top-left, target size (A1111: no crop)
        return torch.tensor([[height, width, 0, 0, height, width]], dtype=torch.float32)

    def prompt_encoder(self, components, embeddings):
        from ...prompts.conditioning import DualEncoder
        from ...prompts.encoder import PromptEncoder

        # TI for SDXL needs per-encoder halves of each embedding: not wired yet, so none are used
        first, second = (PromptEncoder(*self.slot_modules(components, slot),
                                       **self.encoder_options(components.arch, tower))
                         for slot, tower in enumerate(self.towers))
        return DualEncoder(first, second)

    def tiny_extras(self, state_dict, prediction, random):
        extras = super().tiny_extras(state_dict, prediction, random)
        if prediction == "v_prediction":
            extras["v_pred"] = torch.tensor([])
        return extras


class SDXLRefiner(ModelFamily):
    def matches_folder(self, unet, text, text_2):
        return unet.get("addition_embed_type") == "text_time" and text is None and text_2 is not None

    def time_ids(self, height, width):
        # original size, crop, aesthetic score: one row for the prompt, one for the negative prompt
        return torch.tensor([[height, width, 0, 0, REFINER_AESTHETIC_SCORE],
                             [height, width, 0, 0, REFINER_NEGATIVE_AESTHETIC_SCORE]], dtype=torch.float32)


SDXL_FAMILY = register(SDXL(
    key="sdxl", label="SDXL",
    towers=(TextTower(SDXL_CLIP_PREFIX, "clip", "CLIP text encoder"),
            TextTower(SDXL_OPENCLIP_PREFIX, "openclip", _BIGG, pooled=True)),
    clip_skip=2, clip_final_norm=False, head_dim_64=True, latent=SDXL_LATENT, ays_sigmas=AYS_SDXL,
    tiny_sizes={"unet": {**_TINY_UNET, "cross_attention_dim": 32 + 64, "transformer_layers_per_block": 2,
                         "projection_class_embeddings_input_dim": _POOLED + 6 * 256},
                "text_encoder": TINY_TEXT_ENCODER, "text_encoder_2": TINY_TEXT_ENCODER_2},
    n_time_ids=6, zero_empty_negative=True,
))

SDXL_REFINER_FAMILY = register(SDXLRefiner(
    key="sdxl_refiner", label="SDXL refiner",
    # The refiner's only tower, OpenCLIP bigG, sits in the second slot (diffusers' pipeline convention).
    towers=(None, TextTower(REFINER_OPENCLIP_PREFIX, "openclip", _BIGG, pooled=True)),
    clip_skip=2, clip_final_norm=False, head_dim_64=True, latent=SDXL_LATENT, ays_sigmas=AYS_SDXL,
    # The real refiner's depth is 4 at every attention level; 1 keeps the tiny one as fast as the others.
    tiny_sizes={"unet": {**_TINY_UNET, "cross_attention_dim": 64, "transformer_layers_per_block": 1,
                         "projection_class_embeddings_input_dim": _POOLED + 5 * 256},
                "text_encoder_2": TINY_TEXT_ENCODER_2},
    n_time_ids=5, zero_empty_negative=True,
))
