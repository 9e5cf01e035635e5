"""Tiny random-weight checkpoints of every supported family, in their real single-file layouts, for tests and demos.

They go through exactly the code path of a community checkpoint (detect → build_components), only small enough
for a 64×64 txt2img at 20 steps to take a fraction of a second on a 2-core CPU. Files carry what real ones
carry beyond module weights: OpenCLIP's logit_scale, SD2's (unused) text_projection, SDXL v-pred's `v_pred`.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from .arch_build import Modules
from .architecture import Architecture, empty_modules, make_architecture
from .ldm_layout import TEXT_TOWERS, to_ldm_state_dict

TINY_UNET = {
    "block_out_channels": [32, 64],
    "layers_per_block": 1,
    # Cross-attention at the full-resolution level only: the low level then exercises the plain
    # Down/UpBlock2D layout (and its `.1.conv` upsampler key), like SD1.5's lowest level.
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "cross_attention_dim": 32,
}
# Four levels, not two: the VAE must downscale by 8 like every SD VAE, or image sizes come out wrong.
TINY_VAE = {"block_out_channels": [32, 32, 64, 64], "layers_per_block": 1, "latent_channels": 4}
TINY_TEXT_ENCODER = {"hidden_size": 32, "num_hidden_layers": 2, "intermediate_size": 37, "vocab_size": 49408,
                     "max_position_embeddings": 77}
# The OpenCLIP-bigG stand-in: wider than the CLIP-L one (64 vs 32) so the two towers cannot be confused.
TINY_TEXT_ENCODER_2 = {**TINY_TEXT_ENCODER, "hidden_size": 64, "projection_dim": 64}
# SDXL puts attention at the low-resolution levels only, with deeper transformers further down (1, 2, 10);
# the tiny one has none at full resolution and 2 transformer blocks below (and in the mid block).
_SDXL_UNET = {**TINY_UNET, "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"]}
# Size embedding input: pooled width + 6 (base) or 5 (refiner) time ids × 256, as the real 2816 / 2560.
_POOLED = TINY_TEXT_ENCODER_2["projection_dim"]

TINY = {
    "sd1": {"unet": TINY_UNET, "text_encoder": TINY_TEXT_ENCODER},
    # SD2 differs from SD1 in the tower (OpenCLIP layout, gelu), linear projections and heads of 64.
    "sd2": {"unet": TINY_UNET, "text_encoder": TINY_TEXT_ENCODER},
    "sdxl": {"unet": {**_SDXL_UNET, "cross_attention_dim": 32 + 64, "transformer_layers_per_block": 2,
                      "projection_class_embeddings_input_dim": _POOLED + 6 * 256},
             "text_encoder": TINY_TEXT_ENCODER, "text_encoder_2": TINY_TEXT_ENCODER_2},
    # The real refiner's depth is 4 at every attention level; 1 keeps the tiny one as fast as the others.
    "sdxl_refiner": {"unet": {**_SDXL_UNET, "cross_attention_dim": 64, "transformer_layers_per_block": 1,
                              "projection_class_embeddings_input_dim": _POOLED + 5 * 256},
                     "text_encoder_2": TINY_TEXT_ENCODER_2},
}
_V_BIAS_STD = 0.2  # above ComfyUI's 0.09 threshold (arch_detect), where random init gives 0.02


def tiny_architecture(family: str = "sd1", inpainting: bool = False, prediction: str = "epsilon") -> Architecture:
    sizes = TINY[family]
    unet = {**sizes["unet"], "in_channels": 9} if inpainting else sizes["unet"]
    return make_architecture(family, unet=unet, vae=TINY_VAE, text_encoder=sizes.get("text_encoder"),
                             text_encoder_2=sizes.get("text_encoder_2"), prediction_type=prediction)


def _random(name: str, shape: torch.Size, g: torch.Generator) -> torch.Tensor:
    noise = torch.randn(shape, generator=g)
    if len(shape) >= 2:
        # Fan-in scaling keeps activations near unit variance through every layer, including the convs
        # diffusers initialises to zero (UNet conv_out), so the model's output is varied but finite.
        return noise / math.sqrt(shape.numel() // shape[0])
    if name.endswith("weight"):  # 1-D weights are norm scales
        return 1.0 + 0.1 * noise
    return 0.02 * noise


def tiny_modules(seed: int = 0, family: str = "sd1", inpainting: bool = False,
                 prediction: str = "epsilon") -> Modules:
    """(unet, vae, text_encoder, text_encoder_2) of a tiny architecture, random weights from torch.Generator(seed).

    The global RNG is left untouched: modules are built on the meta device and every tensor comes from `seed`.
    """
    g = torch.Generator().manual_seed(seed)
    modules = empty_modules(tiny_architecture(family, inpainting, prediction))
    for module in modules:
        if module is None:
            continue
        # state_dict order is fixed by the config, so a seed always gives the same weights.
        weights = {k: _random(k, v.shape, g) for k, v in module.state_dict().items()}
        module.load_state_dict(weights, strict=True, assign=True)
        module.eval().requires_grad_(False)
    if prediction == "v_prediction" and family == "sd2":
        # What a 768-v model looks like to the ComfyUI heuristic: a wide norm1 bias in the last output block.
        bias = modules.unet.up_blocks[-1].attentions[-1].transformer_blocks[0].norm1.bias
        bias.mul_(_V_BIAS_STD / float(bias.std()))
    return modules


def _extras(family: str, prediction: str, state_dict: dict, g: torch.Generator) -> dict[str, torch.Tensor]:
    """Non-module tensors real files of the family carry."""
    extras = {}
    for tower in TEXT_TOWERS[family]:
        if tower and tower[1] == "openclip":
            extras[tower[0] + "logit_scale"] = torch.tensor(math.log(100.0))  # trained CLIP's clamp value
    if family == "sd2":
        # SD2 files keep OpenCLIP's projection [width, embed_dim] though SD2 never uses the pooled embedding.
        width = state_dict[TEXT_TOWERS["sd2"][0][0] + "token_embedding.weight"].shape[1]
        extras[TEXT_TOWERS["sd2"][0][0] + "text_projection"] = _random("text_projection", torch.Size((width, width)), g)
    if family == "sdxl" and prediction == "v_prediction":
        extras["v_pred"] = torch.tensor([])  # ComfyUI's marker in saved SDXL v-prediction files
    return extras


def tiny_state_dict(seed: int = 0, family: str = "sd1", inpainting: bool = False,
                    prediction: str = "epsilon") -> dict[str, torch.Tensor]:
    """The single-file state dict make_tiny_checkpoint writes."""
    if prediction == "v_prediction" and family not in ("sd2", "sdxl"):
        # No weight tells an SD1/refiner v-model apart; only a .yaml next to the file can (detect's yaml_text).
        raise ValueError(f"a tiny {family} v-prediction model would be indistinguishable from ε: write a .yaml "
                         'with `parameterization: "v"` next to an ε file instead')
    modules = tiny_modules(seed, family, inpainting, prediction)
    state_dict = {k: v.contiguous() for k, v in to_ldm_state_dict(*modules, family=family).items()}
    # Extras draw from their own generator so the module weights stay those of tiny_modules(seed).
    state_dict.update(_extras(family, prediction, state_dict, torch.Generator().manual_seed(seed + 1)))
    return state_dict


def make_tiny_checkpoint(path, seed: int = 0, family: str = "sd1", inpainting: bool = False,
                         prediction: str = "epsilon") -> Path:
    """Write a tiny checkpoint of `family` to `path`: .safetensors, or .ckpt as {"state_dict": …}.

    Same arguments, same file. `prediction` is "epsilon" or "v_prediction" (SD2: told by the weights'
    statistics, SDXL: by a `v_pred` key, as the real files).
    """
    path = Path(path)
    if path.suffix not in (".safetensors", ".ckpt"):
        raise ValueError(f"tiny checkpoint must end in .safetensors or .ckpt, not {path.name!r}")
    state_dict = tiny_state_dict(seed, family, inpainting, prediction)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file
        save_file(state_dict, str(path))
    else:
        torch.save({"state_dict": state_dict}, path)
    return path
