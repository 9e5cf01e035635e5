"""A tiny random-weight SD1.x checkpoint in the real single-file layout, for tests and demos.

It goes through exactly the code path of a community checkpoint (detect → build_components), only small enough
for a 64×64 txt2img at 20 steps to take a fraction of a second on a 2-core CPU.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from .architecture import Architecture, empty_modules, make_architecture
from .ldm_layout import to_ldm_state_dict

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


def tiny_architecture() -> Architecture:
    return make_architecture("sd1", unet=TINY_UNET, vae=TINY_VAE, text_encoder=TINY_TEXT_ENCODER)


def _random(name: str, shape: torch.Size, g: torch.Generator) -> torch.Tensor:
    noise = torch.randn(shape, generator=g)
    if len(shape) >= 2:
        # Fan-in scaling keeps activations near unit variance through every layer, including the convs
        # diffusers initialises to zero (UNet conv_out), so the model's output is varied but finite.
        return noise / math.sqrt(shape.numel() // shape[0])
    if name.endswith("weight"):  # 1-D weights are norm scales
        return 1.0 + 0.1 * noise
    return 0.02 * noise


def tiny_modules(seed: int = 0):
    """(unet, vae, text_encoder) of the tiny architecture with random weights drawn from torch.Generator(seed).

    The global RNG is left untouched: modules are built on the meta device and every tensor comes from `seed`.
    """
    g = torch.Generator().manual_seed(seed)
    modules = empty_modules(tiny_architecture())
    for module in modules:
        # state_dict order is fixed by the config, so a seed always gives the same weights.
        weights = {k: _random(k, v.shape, g) for k, v in module.state_dict().items()}
        module.load_state_dict(weights, strict=True, assign=True)
        module.eval().requires_grad_(False)
    return modules


def make_tiny_checkpoint(path, seed: int = 0) -> Path:
    """Write a tiny SD1.x checkpoint to `path`: .safetensors, or .ckpt as {"state_dict": …}. Same seed, same file."""
    path = Path(path)
    if path.suffix not in (".safetensors", ".ckpt"):
        raise ValueError(f"tiny checkpoint must end in .safetensors or .ckpt, not {path.name!r}")
    state_dict = {k: v.contiguous() for k, v in to_ldm_state_dict(*tiny_modules(seed)).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file
        save_file(state_dict, str(path))
    else:
        torch.save({"state_dict": state_dict}, path)
    return path
