"""The family variants the model tests run on, and readers for the tiny checkpoint files (model_fixtures.py makes
them)."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

P = "model.diffusion_model."
CASES = [  # (family, inpainting, prediction, display name)
    ("sd2", False, "epsilon", "SD2"),
    ("sd2", False, "v_prediction", "SD2 (v)"),
    ("sdxl", False, "epsilon", "SDXL"),
    ("sdxl", False, "v_prediction", "SDXL (v)"),
    ("sdxl_refiner", False, "epsilon", "SDXL refiner"),
    ("sd1", True, "epsilon", "SD1 inpainting"),
    ("sd2", True, "epsilon", "SD2 inpainting"),
    ("sdxl", True, "epsilon", "SDXL inpainting"),
]
IDS = [name for *_, name in CASES]


def read(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def state(files, family, inpainting=False, prediction="epsilon"):
    return load_file(files(family, inpainting, prediction))


def weights(module):
    return module.state_dict() if module is not None else {}


def save_diffusers_folder(c, folder, variant=None):
    """Components written as a diffusers model folder (diffusers' own pipelines and save_pretrained)."""
    from diffusers import (
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLImg2ImgPipeline,
        StableDiffusionXLPipeline,
    )

    scheduler = EulerDiscreteScheduler.from_config(c.arch.scheduler_config)
    if c.arch.family in ("sd1", "sd2"):
        pipe = StableDiffusionPipeline(c.vae, c.text_encoder, c.tokenizer, c.unet, scheduler, safety_checker=None,
                                       feature_extractor=None, requires_safety_checker=False)
    elif c.arch.family == "sdxl":
        pipe = StableDiffusionXLPipeline(c.vae, c.text_encoder, c.text_encoder_2, c.tokenizer, c.tokenizer_2,
                                         c.unet, scheduler)
    else:
        pipe = StableDiffusionXLImg2ImgPipeline(c.vae, None, c.text_encoder_2, None, c.tokenizer_2, c.unet, scheduler,
                                                requires_aesthetics_score=True)
    pipe.save_pretrained(folder, variant=variant)
    return folder
