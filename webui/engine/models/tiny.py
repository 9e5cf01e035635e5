"""Tiny random-weight checkpoints of every supported family, in their real single-file layouts, for tests and demos.

They go through exactly the code path of a community checkpoint (detect → build_components), only small enough
for a 64×64 txt2img at 20 steps to take a fraction of a second on a 2-core CPU. Files carry what real ones
carry beyond module weights: OpenCLIP's logit_scale, SD2's (unused) text_projection, SDXL v-pred's `v_pred`.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from . import Architecture, empty_modules, make_architecture
from .build import Modules
from .families import get_family
from .ldm_layout import to_ldm_state_dict

# Four levels, not two: the VAE must downscale by 8 like every SD VAE, or image sizes come out wrong.
TINY_VAE = {"block_out_channels": [32, 32, 64, 64], "layers_per_block": 1, "latent_channels": 4}


def tiny_architecture(family: str = "sd1", inpainting: bool = False, prediction: str = "epsilon") -> Architecture:
    sizes = get_family(family).tiny_sizes
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
    if prediction == "v_prediction":
        get_family(family).mark_tiny_v(modules)
    return modules


def tiny_state_dict(seed: int = 0, family: str = "sd1", inpainting: bool = False,
                    prediction: str = "epsilon") -> dict[str, torch.Tensor]:
    """The single-file state dict make_tiny_checkpoint writes."""
    if prediction == "v_prediction" and not get_family(family).v_marked_by_weights:
        # No weight tells an SD1/refiner v-model apart; only a .yaml next to the file can (detect's yaml_text).
        raise ValueError(f"a tiny {family} v-prediction model would be indistinguishable from ε: write a .yaml "
                         'with `parameterization: "v"` next to an ε file instead')
    modules = tiny_modules(seed, family, inpainting, prediction)
    state_dict = {k: v.contiguous() for k, v in to_ldm_state_dict(*modules, family=family).items()}
    # Extras draw from their own generator so the module weights stay those of tiny_modules(seed).
    g = torch.Generator().manual_seed(seed + 1)
    state_dict.update(get_family(family).tiny_extras(state_dict, prediction,
                                                     lambda name, shape: _random(name, torch.Size(shape), g)))
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
