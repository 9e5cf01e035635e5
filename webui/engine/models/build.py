"""Build an Architecture's modules and load a single-file checkpoint's weights into them, exactly.

UNet and VAE keys go through diffusers' own LDM converters; text towers through ldm_layout (OpenAI CLIP keys are
transformers' own, OpenCLIP towers are split/renamed by ldm_layout.from_openclip, the exact inverse of what
writes them). Modules are built on the meta device (no memory, no random init) and the tensors assigned.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import torch

from . import ldm_layout
from .architecture import Architecture, ArchitectureError

if TYPE_CHECKING:  # diffusers/transformers are imported lazily: slow imports, and detect needs neither
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer


@dataclass
class Components:
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel | None  # None for the SDXL refiner
    tokenizer: CLIPTokenizer | None
    arch: Architecture
    text_encoder_2: CLIPTextModelWithProjection | None = None  # SDXL's OpenCLIP-bigG (base and refiner)
    tokenizer_2: CLIPTokenizer | None = None  # pads with "!" (OpenCLIP's id 0)

    @property
    def text_encoders(self) -> list:
        """The towers present, in conditioning order (SDXL concatenates their hidden states in this order)."""
        return [t for t in (self.text_encoder, self.text_encoder_2) if t is not None]


class Modules(NamedTuple):
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel | None
    text_encoder_2: CLIPTextModelWithProjection | None


def empty_modules(arch: Architecture) -> Modules:
    """(unet, vae, text_encoder, text_encoder_2) with parameters on the meta device: no memory, no random init.

    Buffers stay real (include_buffers=False) so non-persistent ones such as CLIP's position_ids are usable.
    """
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    with init_empty_weights(include_buffers=False):
        unet = UNet2DConditionModel.from_config(arch.unet_config)
        vae = AutoencoderKL.from_config(arch.vae_config)
        text_encoder = text_encoder_2 = None
        if arch.text_encoder_config is not None:
            text_encoder = CLIPTextModel(CLIPTextConfig.from_dict(arch.text_encoder_config))
        if arch.text_encoder_2_config is not None:
            text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig.from_dict(arch.text_encoder_2_config))
    return Modules(unet, vae, text_encoder, text_encoder_2)


def load_weights(module: torch.nn.Module, weights: Mapping[str, torch.Tensor], what: str,
                 ldm_name: Callable[[str], str] = str) -> None:
    """Assign `weights` to a meta-initialised module; any missing, extra or mis-shaped tensor is an error."""
    expected = {k: v.shape for k, v in module.state_dict().items()}
    missing = [k for k in expected if k not in weights]
    extra = [k for k in weights if k not in expected]
    wrong = [k for k in expected if k in weights and tuple(weights[k].shape) != tuple(expected[k])]
    if missing or extra or wrong:
        def name(key: str) -> str:
            try:
                return ldm_name(key)
            except KeyError:
                return key
        problems = [f"missing {name(k)}" for k in missing] + [f"unexpected {name(k)}" for k in extra]
        problems += [f"wrong shape {name(k)}: {list(weights[k].shape)}, expected {list(expected[k])}" for k in wrong]
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ArchitectureError(f"checkpoint does not match the detected {what}: {'; '.join(problems[:5])}{more}")
    module.load_state_dict({k: v.contiguous() for k, v in weights.items()}, strict=True, assign=True)
    left = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if left:
        raise ArchitectureError(f"{what}: tensors left uninitialised: {left[:5]}")


def _module_keys(module, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # transformers >= 5.6 flattened CLIPTextModel (no `text_model.` level); CLIPTextModelWithProjection still
    # nests it. Converted keys come without the level; add it where this module has one.
    if not hasattr(module, "text_model"):
        return weights
    return {k if k == "text_projection.weight" else "text_model." + k: v for k, v in weights.items()}


def _tower_weights(sd: Mapping, module, prefix: str, layout: str) -> dict[str, torch.Tensor]:
    if layout == "openclip":
        # A plain CLIPTextModel (SD2) has no slot for the checkpoint's text_projection; SDXL's tower uses it.
        weights = ldm_layout.from_openclip(sd, prefix, projection=hasattr(module, "text_projection"))
    else:
        # position_ids is a constant (non-persistent) buffer in transformers; some files carry it, some do not.
        weights = {k[len(prefix):]: v for k, v in sd.items()
                   if k.startswith(prefix) and not k.endswith("embeddings.position_ids")}
    return _module_keys(module, weights)


def _tower_prefix(sd: Mapping, prefix: str, layout: str) -> str:
    if layout == "clip" and prefix + "embeddings.token_embedding.weight" not in sd:
        # Older files saved the CLIP text model without transformers' `text_model.` level.
        return prefix.removesuffix("text_model.")
    return prefix


def _converted(convert, sd: Mapping, config: dict, what: str) -> dict[str, torch.Tensor]:
    try:
        out = convert(sd, config)
    except (KeyError, IndexError, AttributeError, TypeError) as e:
        raise ArchitectureError(f"cannot convert the {what} weights: {e!r}") from e
    return {k: v for k, v in out.items() if v is not None}  # the converters put None for absent halves


def finish(module: torch.nn.Module, device, dtype) -> torch.nn.Module:
    # nn.Module.to, not diffusers' override: that one warns on every dtype cast (even with nothing to keep in
    # fp32) and only adds checks for quantized/offloaded models, which these never are.
    torch.nn.Module.to(module, device=device, dtype=dtype)
    module.eval()
    module.requires_grad_(False)
    return module


def finish_components(modules: Modules, arch: Architecture, device, dtype, vae_dtype=None) -> Components:
    """SDPA attention, device/dtype (the VAE's own when given: --no-half-vae must not pass the VAE's weights
    through fp16 on their way to fp32), eval mode; tokenizers from the architecture's folders."""
    from diffusers.models.attention_processor import AttnProcessor2_0
    from transformers import CLIPTokenizer

    # PyTorch SDPA: diffusers' default on torch 2 already, set explicitly so nothing else is silently used.
    modules.unet.set_attn_processor(AttnProcessor2_0())
    modules.vae.set_attn_processor(AttnProcessor2_0())
    for module in modules:
        if module is not None:
            finish(module, device, vae_dtype if module is modules.vae and vae_dtype is not None else dtype)
    # Loaded fresh per build (~0.1 s) so a caller may add tokens without touching other models' tokenizers.
    tokenizers = [CLIPTokenizer.from_pretrained(str(d), local_files_only=True) if d is not None else None
                  for d in (arch.tokenizer_dir, arch.tokenizer_2_dir)]
    return Components(modules.unet, modules.vae, modules.text_encoder, tokenizers[0], arch,
                      modules.text_encoder_2, tokenizers[1])


def build_components(state_dict: Mapping[str, torch.Tensor], arch: Architecture, device="cpu",
                     dtype: torch.dtype = torch.float32, vae_dtype: torch.dtype | None = None) -> Components:
    """UNet, VAE, text encoder(s) and tokenizer(s) for `arch`, holding exactly the checkpoint's weights.

    Tensors are assigned, not copied, where dtype and device already match. Keys outside the models
    (model_ema.*, alphas_cumprod, OpenCLIP's logit_scale, …) are ignored.
    """
    from diffusers.loaders.single_file_utils import (
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
    )

    modules = empty_modules(arch)
    unet, vae = modules.unet, modules.vae
    unet_weights = _converted(convert_ldm_unet_checkpoint, state_dict, arch.unet_config, "UNet")
    load_weights(unet, unet_weights, f"{arch.name} UNet", lambda k: ldm_layout.unet_key(k, unet.config))
    del unet_weights
    vae_weights = _converted(convert_ldm_vae_checkpoint, state_dict, arch.vae_config, "VAE")
    load_weights(vae, vae_weights, f"{arch.name} VAE", lambda k: ldm_layout.vae_key(k, vae.config))
    del vae_weights
    for module, tower in zip(modules[2:], arch.model_family.towers):
        if module is None:
            continue
        layout = tower.layout
        prefix = _tower_prefix(state_dict, tower.prefix, layout)
        if layout == "openclip":
            def ldm_name(k, prefix=prefix):
                return ldm_layout.openclip_key(k, prefix)
        else:
            def ldm_name(k, prefix=prefix):
                return ldm_layout.text_encoder_key(k, prefix)
        load_weights(module, _tower_weights(state_dict, module, prefix, layout), tower.label, ldm_name)
    return finish_components(modules, arch, device, dtype, vae_dtype)
