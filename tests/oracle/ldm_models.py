"""Tiny SD1.x / SD2.x models built with Stability's original classes (ldm.models.diffusion.ddpm.LatentDiffusion,
its UNetModel, AutoencoderKL, FrozenCLIPEmbedder / FrozenOpenCLIPEmbedder), saved in the single-file layout
their state_dict() gives (exactly what model sites publish), for the engine to load like a community checkpoint.

Sizes are small, but the conventions shapes do not state are the families' own: the SD1 UNet has 8 heads, the
SD2 UNet a head dimension of 64 (with linear projections in its transformers), CLIP/OpenCLIP a head dimension of
64. The configs mirror v1-inference.yaml / v2-inference(-v).yaml with smaller widths and depths."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import torch

from .originals import load_ldm

CONFIGS = Path(__file__).resolve().parents[2] / "webui" / "engine" / "models" / "configs"
TEXT_WIDTH = 64  # CLIP head dim 64 → one head
VAE = {"target": "ldm.models.autoencoder.AutoencoderKL",
       "params": {"embed_dim": 4, "lossconfig": {"target": "torch.nn.Identity"},
                  "ddconfig": {"double_z": True, "z_channels": 4, "resolution": 64, "in_channels": 3, "out_ch": 3,
                               "ch": 32, "ch_mult": [1, 1, 2, 2], "num_res_blocks": 1, "attn_resolutions": [],
                               "dropout": 0.0}}}
UNET_SD1 = {"image_size": 8, "in_channels": 4, "out_channels": 4, "model_channels": 32, "attention_resolutions": [1],
            "num_res_blocks": 1, "channel_mult": [1, 2], "num_heads": 8, "use_spatial_transformer": True,
            "transformer_depth": 1, "context_dim": TEXT_WIDTH, "use_checkpoint": False, "legacy": False}
UNET_SD2 = {"image_size": 8, "in_channels": 4, "out_channels": 4, "model_channels": 64, "attention_resolutions": [1],
            "num_res_blocks": 1, "channel_mult": [1, 2], "num_head_channels": 64, "use_spatial_transformer": True,
            "use_linear_in_transformer": True, "transformer_depth": 1, "context_dim": TEXT_WIDTH,
            "use_checkpoint": False, "legacy": False}
OPEN_CLIP_ARCH = "gouache-oracle-tiny"
OPEN_CLIP_CONFIG = {"embed_dim": TEXT_WIDTH,
                    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
                    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": TEXT_WIDTH, "heads": 1,
                                 "layers": 3}}


def _randomize(module: torch.nn.Module, seed: int):
    """Every tensor random (ldm zero-initialises its output convs, which would make the UNet output 0): matrices
    scaled by fan-in so activations stay O(1), norm scales near 1, biases small."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if p.dim() >= 2:
                p.copy_(noise / math.sqrt(p[0].numel()))
            elif name.endswith("weight"):
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(0.02 * noise)


def _clip_dir(folder: Path) -> Path:
    """A local 'version' folder for FrozenCLIPEmbedder: a tiny CLIPTextModel + the CLIP-L tokenizer files."""
    from transformers import CLIPTextConfig, CLIPTextModel

    target = folder / "clip"
    shutil.copytree(CONFIGS / "sd1" / "tokenizer", target, dirs_exist_ok=True)
    config = CLIPTextConfig(hidden_size=TEXT_WIDTH, intermediate_size=4 * TEXT_WIDTH, num_hidden_layers=3,
                            num_attention_heads=1, vocab_size=49408, max_position_embeddings=77,
                            hidden_act="quick_gelu", projection_dim=TEXT_WIDTH, bos_token_id=49406,
                            eos_token_id=49407, pad_token_id=1)
    CLIPTextModel(config).save_pretrained(target)
    return target


def _published_key(key: str) -> str:
    """Real SD1 files were saved with transformers 4, whose CLIPTextModel wrapped a `text_model`; transformers 5
    has no such level. Keys are written as the published files have them."""
    prefix = "cond_stage_model.transformer."
    if key.startswith(prefix) and not key.startswith(prefix + "text_model."):
        return prefix + "text_model." + key[len(prefix):]
    return key


def build(kind: str, folder: Path, seed: int = 0):
    """(LatentDiffusion in eval mode, path of its single-file .safetensors). kind: sd1 | sd2 | sd2-v.
    sd2-v gets A1111's sidecar `<name>.yaml` saying `parameterization: "v"`."""
    from safetensors.torch import save_file

    ldm = load_ldm()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    params = {"linear_start": 0.00085, "linear_end": 0.0120, "num_timesteps_cond": 1, "timesteps": 1000,
              "first_stage_key": "jpg", "cond_stage_key": "txt", "image_size": 8, "channels": 4,
              "cond_stage_trainable": False, "conditioning_key": "crossattn", "scale_factor": 0.18215,
              "use_ema": False, "first_stage_config": VAE}
    if kind == "sd1":
        params["unet_config"] = {"target": "ldm.modules.diffusionmodules.openaimodel.UNetModel",
                                 "params": UNET_SD1}
        params["cond_stage_config"] = {"target": "ldm.modules.encoders.modules.FrozenCLIPEmbedder",
                                       "params": {"version": str(_clip_dir(folder)), "device": "cpu"}}
        model = ldm.LatentDiffusion(**params)
    elif kind in ("sd2", "sd2-v"):
        params["parameterization"] = "v" if kind == "sd2-v" else "eps"
        params["unet_config"] = {"target": "ldm.modules.diffusionmodules.openaimodel.UNetModel",
                                 "params": UNET_SD2}
        params["cond_stage_config"] = {"target": "ldm.modules.encoders.modules.FrozenOpenCLIPEmbedder",
                                       "params": {"arch": OPEN_CLIP_ARCH, "version": "", "device": "cpu",
                                                  "freeze": True, "layer": "penultimate"}}
        open_clip = ldm.open_clip
        config_file = folder / f"{OPEN_CLIP_ARCH}.json"
        config_file.write_text(json.dumps(OPEN_CLIP_CONFIG))
        open_clip.add_model_config(config_file)
        original = open_clip.create_model_and_transforms

        def create_without_transforms(arch, device=None, pretrained=None, **kwargs):
            # the image transforms need torchvision; the text tower, all SD2 keeps, does not
            return open_clip.create_model(arch, device=device, pretrained=pretrained or ""), None, None

        open_clip.create_model_and_transforms = create_without_transforms
        try:
            model = ldm.LatentDiffusion(**params)
        finally:
            open_clip.create_model_and_transforms = original
    else:
        raise ValueError(kind)
    model.eval().requires_grad_(False)
    for i, part in enumerate((model.model, model.first_stage_model, model.cond_stage_model)):
        _randomize(part, seed * 10 + i)
    path = folder / f"{kind}.safetensors"
    state_dict = {_published_key(k): v.contiguous() for k, v in model.state_dict().items()}
    save_file(state_dict, str(path))
    if kind == "sd2-v":
        path.with_suffix(".yaml").write_text('model:\n  params:\n    parameterization: "v"\n')
    return model, path
