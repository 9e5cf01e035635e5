"""Diffusers-format model folders (model_index.json + unet/ vae/ text_encoder*/ tokenizer*/ scheduler/).

A folder carries its own configs, so the family is read from them (which towers exist, the UNet's
addition_embed_type, the first tower's activation) instead of from tensor shapes; from_pretrained then checks
every weight's shape against those configs. Only safetensors weights are read, and never anything from a hub.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .build import Components, Modules, finish_components
from .architecture import (
    PREDICTION_TYPES,
    Architecture,
    ArchitectureError,
    finish_architecture,
)
from .detect import check_channels
from .families import family_for_folder


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArchitectureError(f"incomplete diffusers model folder: {what} ({path}) is missing") from None
    except (OSError, ValueError) as e:
        raise ArchitectureError(f"cannot read {path}: {e}") from e


def detect_folder(path) -> Architecture:
    """The architecture of a diffusers model folder (SD1, SD2, SDXL, SDXL refiner; plain or inpainting)."""
    folder = Path(path)
    if not (folder / "model_index.json").is_file():
        raise ArchitectureError(f"not a diffusers model folder: {folder} has no model_index.json")
    index = _read_json(folder / "model_index.json", "model_index.json")
    unet = _read_json(folder / "unet" / "config.json", "the UNet config")
    vae = _read_json(folder / "vae" / "config.json", "the VAE config")
    scheduler = _read_json(folder / "scheduler" / "scheduler_config.json", "the scheduler config")
    towers = []
    for slot in ("text_encoder", "text_encoder_2"):
        listed = (index.get(slot) or [None])[0] is not None
        towers.append(_read_json(folder / slot / "config.json", f"the {slot} config") if listed else None)
    text, text_2 = towers

    family = family_for_folder(unet, text, text_2)
    if family is None:
        raise ArchitectureError(f"unsupported diffusers model in {folder}: UNet addition_embed_type "
                                f"{unet.get('addition_embed_type')!r}, text encoders "
                                f"{[t is not None for t in towers]} match no known family")
    widths = [t["hidden_size"] for t in towers if t is not None]
    if sum(widths) != unet["cross_attention_dim"]:
        raise ArchitectureError(f"inconsistent model folder {folder}: text encoder width "
                                f"{' + '.join(map(str, widths))} does not match the UNet's cross-attention dim "
                                f"{unet['cross_attention_dim']}")
    check_channels({"in_channels": unet.get("in_channels", 4), "out_channels": unet.get("out_channels", 4)},
                    vae.get("latent_channels", 4))
    prediction = scheduler.get("prediction_type", "epsilon")
    if prediction not in PREDICTION_TYPES:
        raise ArchitectureError(f"unsupported prediction type {prediction!r} in {folder}/scheduler")
    return finish_architecture(family.key, unet, vae, text, text_2, scheduler, folder, prediction,
                               family.folder_clip_skip(text))


def _variant(sub: Path, stem: str) -> str | None:
    """None for `stem.safetensors` (or its sharded index), "fp16" where only the fp16 variant is present."""
    for variant, name in ((None, stem), ("fp16", stem + ".fp16")):
        if (sub / f"{name}.safetensors").is_file() or (sub / f"{name}.safetensors.index.json").is_file():
            return variant
    raise ArchitectureError(f"no safetensors weights in {sub} (expected {stem}.safetensors; .bin pickles are "
                            "not loaded)")


def _load(cls, folder: Path, sub: str, stem: str, dtype: torch.dtype, dtype_arg: str):
    kwargs = {"subfolder": sub, "local_files_only": True, "use_safetensors": True,
              "variant": _variant(folder / sub, stem), dtype_arg: dtype}
    try:
        return cls.from_pretrained(str(folder), **kwargs)
    except (OSError, ValueError, RuntimeError) as e:
        raise ArchitectureError(f"cannot load {sub}/ of {folder}: {e}") from e


def build_components_from_folder(path, device="cpu", dtype: torch.dtype = torch.float32,
                                 vae_dtype: torch.dtype | None = None) -> Components:
    """UNet, VAE, text encoder(s) and tokenizer(s) of a diffusers model folder, read locally (no hub)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    folder = Path(path)
    arch = detect_folder(folder)
    # diffusers names the dtype argument torch_dtype, transformers 5 dtype.
    unet = _load(UNet2DConditionModel, folder, "unet", "diffusion_pytorch_model", dtype, "torch_dtype")
    vae = _load(AutoencoderKL, folder, "vae", "diffusion_pytorch_model", vae_dtype or dtype, "torch_dtype")
    text = text_2 = None
    if arch.text_encoder_config is not None:
        text = _load(CLIPTextModel, folder, "text_encoder", "model", dtype, "dtype")
    if arch.text_encoder_2_config is not None:
        text_2 = _load(CLIPTextModelWithProjection, folder, "text_encoder_2", "model", dtype, "dtype")
    return finish_components(Modules(unet, vae, text, text_2), arch, device, dtype, vae_dtype)
