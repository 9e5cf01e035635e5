"""Stable Diffusion 2.x: OpenCLIP ViT-H/14 (its penultimate layer through the final norm; A1111 ignores clip skip
there), linear projections and a head dimension of 64 in the UNet; ε (512) or v-prediction (768) models."""
from __future__ import annotations

from collections.abc import Mapping

from ..ldm_layout import OPENCLIP_PREFIX, UNET_PREFIX
from . import ModelFamily, TextTower, register
from .sd1 import AYS_SD15, SD_LATENT, TINY_TEXT_ENCODER, TINY_UNET

# ComfyUI's SD2 ε/v heuristic (supported_models.py SD20.model_type): the std of the first transformer's norm1 bias
# in the last output block is > 0.09 in the 768-v models and well below in the 512 ε ones. Its own comment says
# "not sure how well this will actually work"; a <checkpoint>.yaml saying `parameterization: "v"` overrides it.
V_STD_THRESHOLD = 0.09
# A diffusers SD2 text encoder has 23 layers: diffusers' converter drops OpenCLIP-H's 24th because SD2 conditions
# on the penultimate one, so there the last hidden state is already the right one (clip_skip 1).
_DIFFUSERS_TRUNCATED_LAYERS = 23
_TINY_V_BIAS_STD = 0.2  # above the threshold, where random init gives 0.02


class SD2(ModelFamily):
    def looks_v(self, state_dict: Mapping, unet_sizes: dict) -> bool:
        n_out = len(unet_sizes["block_out_channels"]) * (unet_sizes["layers_per_block"] + 1)
        tensor = state_dict.get(f"{UNET_PREFIX}output_blocks.{n_out - 1}.1.transformer_blocks.0.norm1.bias")
        if tensor is None or tensor.is_meta:  # no attention at full resolution, or shapes only: no evidence
            return False
        return float(tensor.float().std()) > V_STD_THRESHOLD

    @property
    def v_marked_by_weights(self) -> bool:
        return True

    def matches_folder(self, unet, text, text_2):
        return (unet.get("addition_embed_type") is None and unet.get("class_embed_type") is None
                and text is not None and text_2 is None and text.get("hidden_act") == "gelu")

    def folder_clip_skip(self, text):
        return 1 if text is not None and text["num_hidden_layers"] == _DIFFUSERS_TRUNCATED_LAYERS else None

    def tiny_extras(self, state_dict, prediction, random):
        extras = super().tiny_extras(state_dict, prediction, random)
        # SD2 files keep OpenCLIP's projection [width, embed_dim] though SD2 never uses the pooled embedding.
        width = state_dict[OPENCLIP_PREFIX + "token_embedding.weight"].shape[1]
        extras[OPENCLIP_PREFIX + "text_projection"] = random("text_projection", (width, width))
        return extras

    def mark_tiny_v(self, modules) -> None:
        """What a 768-v model looks like to looks_v: a wide norm1 bias in the last output block."""
        bias = modules.unet.up_blocks[-1].attentions[-1].transformer_blocks[0].norm1.bias
        bias.mul_(_TINY_V_BIAS_STD / float(bias.std()))


SD2_FAMILY = register(SD2(
    key="sd2", label="SD2",
    towers=(TextTower(OPENCLIP_PREFIX, "openclip", "OpenCLIP text encoder"), None),
    clip_skip=2, clip_final_norm=True, head_dim_64=True, latent=SD_LATENT, ays_sigmas=AYS_SD15,
    # SD2 differs from SD1 in the tower (OpenCLIP layout, gelu), linear projections and heads of 64.
    tiny_sizes={"unet": TINY_UNET, "text_encoder": TINY_TEXT_ENCODER},
    v_sample_size=96,  # only a default-resolution hint: SD2's v-models are the 768 px ones
))
