"""Which architecture is a single-file checkpoint, and build its modules: sizes come from tensor shapes only.

Each family has a folder of diffusers config skeletons under configs/ (written by scripts/make_configs.py).
`detect` reads every size a tensor shape determines and overrides the skeleton with it; what shapes cannot
say keeps the family's convention. `build_components` converts the keys with diffusers' own LDM converters and
loads them into modules built without random init. Only SD1.x for now; a new family adds a configs folder,
its shape readers and a branch in `detect` (today that branch point is `_reject_other_families`).
"""
from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from . import ldm_layout
from .errors import UserError
from .ldm_layout import TEXT_PREFIX, UNET_PREFIX, VAE_PREFIX

if TYPE_CHECKING:  # diffusers/transformers are imported lazily: slow imports, and detect needs neither
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

CONFIGS_DIR = Path(__file__).resolve().parent / "configs"

# Older SD1 files saved the CLIP text model without transformers' `text_model.` level.
_TEXT_PREFIXES = (TEXT_PREFIX, "cond_stage_model.transformer.")

# Context dims of families we recognise but cannot build yet, to say what a file probably is.
_OTHER_CONTEXT_DIMS = {1024: "SD2.x", 2048: "SDXL", 1280: "SDXL refiner"}


class ArchitectureError(UserError, ValueError):
    """The state dict is not a supported Stable Diffusion checkpoint; the message says what is wrong."""


@dataclass(frozen=True)
class Architecture:
    name: str  # family id, e.g. "sd1"
    unet_config: dict
    vae_config: dict
    text_encoder_config: dict
    scheduler_config: dict  # betas for the sampler's alphas_cumprod
    config_dir: Path  # the family's skeleton folder; its tokenizer/ is loaded as is

    @property
    def tokenizer_dir(self) -> Path:
        return self.config_dir / "tokenizer"


@dataclass
class Components:
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    arch: Architecture


# ---------------------------------------------------------------------------------------------- configs

@functools.cache
def _skeleton(family: str) -> dict[str, dict]:
    def read(rel: str) -> dict:
        return json.loads((CONFIGS_DIR / family / rel).read_text(encoding="utf-8"))

    return {
        "unet": read("unet/config.json"),
        "vae": read("vae/config.json"),
        "text_encoder": read("text_encoder/config.json"),
        "scheduler": read("scheduler/scheduler_config.json"),
    }


def _up_type(down_type: str) -> str:
    return down_type.replace("Down", "Up")


def make_architecture(family: str = "sd1", *, unet: Mapping | None = None, vae: Mapping | None = None,
                      text_encoder: Mapping | None = None) -> Architecture:
    """The family's skeleton configs with `unet`/`vae`/`text_encoder` size overrides (diffusers config names).

    The one place configs are built: `detect` passes sizes read from shapes, tiny.py passes literal sizes.
    Sizes that follow from others are derived here, the rest of the SD1 conventions stay as in the skeleton:
    UNet heads = 8 (diffusers' misnamed `attention_head_dim: 8`), CLIP heads = hidden // 64 (at least 1),
    GroupNorm groups = 32, VAE scaling factor 0.18215, epsilon prediction.
    """
    base = copy.deepcopy(_skeleton(family))
    unet_cfg = {**base["unet"], **(unet or {})}
    if unet and "down_block_types" in unet and "up_block_types" not in unet:
        unet_cfg["up_block_types"] = [_up_type(t) for t in reversed(unet_cfg["down_block_types"])]
    vae_cfg = {**base["vae"], **(vae or {})}
    levels = len(vae_cfg["block_out_channels"])
    vae_cfg["down_block_types"] = ["DownEncoderBlock2D"] * levels
    vae_cfg["up_block_types"] = ["UpDecoderBlock2D"] * levels
    text_cfg = {**base["text_encoder"], **(text_encoder or {})}
    if text_encoder and "hidden_size" in text_encoder and "num_attention_heads" not in text_encoder:
        text_cfg["num_attention_heads"] = max(1, text_cfg["hidden_size"] // 64)
    return Architecture(family, unet_cfg, vae_cfg, text_cfg, base["scheduler"], CONFIGS_DIR / family)


# ---------------------------------------------------------------------------------------------- detect

def _shape(sd: Mapping, key: str, what: str) -> tuple[int, ...]:
    tensor = sd.get(key)
    if tensor is None:
        raise ArchitectureError(f"not a complete Stable Diffusion 1.x checkpoint: {what} tensor {key} is missing")
    return tuple(tensor.shape)


def _indices(keys, pattern: str) -> list[int]:
    """Sorted distinct integers captured by `pattern` (one group) at the start of any key."""
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in keys if (m := rx.match(k))})


def _contiguous(found: list[int], what: str) -> int:
    if not found or found != list(range(len(found))):
        raise ArchitectureError(f"inconsistent checkpoint: {what} numbered {found[:12]}, expected 0..n-1")
    return len(found)


def _unet_sizes(sd: Mapping) -> dict:
    keys = [k for k in sd if k.startswith(UNET_PREFIX)]
    p = re.escape(UNET_PREFIX)
    n_in = _contiguous(_indices(keys, p + r"input_blocks\.(\d+)\."), "UNet input_blocks")
    ops = _indices(keys, p + r"input_blocks\.(\d+)\.0\.op\.")
    levels = len(ops) + 1
    per_level, rest = divmod(n_in - 1 - len(ops), levels)
    expected_ops = [(level + 1) * (per_level + 1) for level in range(levels - 1)]
    if rest or per_level < 1 or ops != expected_ops:
        raise ArchitectureError(f"inconsistent UNet: {n_in} input blocks with downsamplers at {ops}")
    n_out = _contiguous(_indices(keys, p + r"output_blocks\.(\d+)\."), "UNet output_blocks")
    if n_out != levels * (per_level + 1):
        raise ArchitectureError(f"inconsistent UNet: {n_out} output blocks for {levels} levels of {per_level}")

    channels, down_types, depths, linear = [], [], set(), set()
    for level in range(levels):
        first = 1 + level * (per_level + 1)
        channels.append(_shape(sd, f"{UNET_PREFIX}input_blocks.{first}.0.out_layers.3.weight", "UNet")[0])
        attn = [f"{UNET_PREFIX}input_blocks.{first + j}.1." for j in range(per_level)]
        has = [a + "proj_in.weight" in sd for a in attn]
        if any(has) != all(has):
            raise ArchitectureError(f"inconsistent UNet: level {level} has attention in only some blocks")
        down_types.append("CrossAttnDownBlock2D" if has[0] else "DownBlock2D")
        if has[0]:
            linear.add(len(_shape(sd, attn[0] + "proj_in.weight", "UNet")) == 2)
            depths.add(len(_indices(keys, re.escape(attn[0]) + r"transformer_blocks\.(\d+)\.")))
    mid = f"{UNET_PREFIX}middle_block.1."
    context_dim = _shape(sd, mid + "transformer_blocks.0.attn2.to_k.weight", "UNet mid-block cross-attention")[1]
    linear.add(len(_shape(sd, mid + "proj_in.weight", "UNet")) == 2)
    depths.add(len(_indices(keys, re.escape(mid) + r"transformer_blocks\.(\d+)\.")))
    if len(depths) > 1 or len(linear) > 1:
        raise ArchitectureError(f"unsupported UNet: mixed transformer depths {sorted(depths)} or projections")
    in_shape = _shape(sd, UNET_PREFIX + "input_blocks.0.0.weight", "UNet")
    return {
        "in_channels": in_shape[1],
        "out_channels": _shape(sd, UNET_PREFIX + "out.2.weight", "UNet")[0],
        "block_out_channels": channels,
        "layers_per_block": per_level,
        "down_block_types": down_types,
        "transformer_layers_per_block": depths.pop(),
        "cross_attention_dim": context_dim,
        "use_linear_projection": linear.pop(),
    }


def _vae_sizes(sd: Mapping) -> dict:
    if not any(k.startswith(VAE_PREFIX) for k in sd):
        raise ArchitectureError("not a complete Stable Diffusion 1.x checkpoint: no VAE weights "
                                f"({VAE_PREFIX}*) found")
    keys = [k for k in sd if k.startswith(VAE_PREFIX)]
    enc = VAE_PREFIX + "encoder."
    levels = _contiguous(_indices(keys, re.escape(enc) + r"down\.(\d+)\."), "VAE encoder levels")
    per_level = _contiguous(_indices(keys, re.escape(enc) + r"down\.0\.block\.(\d+)\."), "VAE encoder blocks")
    latent = _shape(sd, VAE_PREFIX + "decoder.conv_in.weight", "VAE")[1]
    if _shape(sd, enc + "conv_out.weight", "VAE")[0] != 2 * latent:
        raise ArchitectureError(f"inconsistent VAE: encoder output is not 2 × {latent} latent channels")
    return {
        "in_channels": _shape(sd, enc + "conv_in.weight", "VAE")[1],
        "out_channels": _shape(sd, VAE_PREFIX + "decoder.conv_out.weight", "VAE")[0],
        "block_out_channels": [_shape(sd, f"{enc}down.{i}.block.0.conv2.weight", "VAE")[0] for i in range(levels)],
        "layers_per_block": per_level,
        "latent_channels": latent,
    }


def _text_prefix(sd: Mapping) -> str:
    for prefix in _TEXT_PREFIXES:
        if prefix + "embeddings.token_embedding.weight" in sd:
            return prefix
    raise ArchitectureError("not a complete Stable Diffusion 1.x checkpoint: no CLIP text encoder "
                            f"({TEXT_PREFIX}embeddings.token_embedding.weight) found")


def _text_sizes(sd: Mapping) -> dict:
    prefix = _text_prefix(sd)
    vocab, hidden = _shape(sd, prefix + "embeddings.token_embedding.weight", "text encoder")
    keys = [k for k in sd if k.startswith(prefix)]
    layers = _contiguous(_indices(keys, re.escape(prefix) + r"encoder\.layers\.(\d+)\."), "text encoder layers")
    return {
        "hidden_size": hidden,
        "vocab_size": vocab,
        "max_position_embeddings": _shape(sd, prefix + "embeddings.position_embedding.weight", "text encoder")[0],
        "num_hidden_layers": layers,
        "intermediate_size": _shape(sd, prefix + "encoder.layers.0.mlp.fc1.weight", "text encoder")[0],
    }


def _reject_other_families(sd: Mapping) -> None:
    if any(k.startswith("conditioner.embedders.") for k in sd):
        raise ArchitectureError("unsupported architecture: SDXL-style conditioner (conditioner.embedders.*) "
                                "is not supported yet")
    for key in sd:
        if key.startswith(UNET_PREFIX) and key.endswith("attn2.to_k.weight"):
            dim = sd[key].shape[-1]
            if dim in _OTHER_CONTEXT_DIMS:
                raise ArchitectureError(f"unsupported architecture: context dim {dim} "
                                        f"({_OTHER_CONTEXT_DIMS[dim]}?) is not supported yet")
            break
    if UNET_PREFIX + "label_emb.0.0.weight" in sd:
        raise ArchitectureError("unsupported architecture: class-conditioned UNet (label_emb) is not supported yet")


def detect(state_dict: Mapping[str, torch.Tensor]) -> Architecture:
    """The architecture of a single-file LDM-layout state dict, every size read from tensor shapes."""
    if not any(k.startswith(UNET_PREFIX) for k in state_dict):
        raise ArchitectureError(f"not a Stable Diffusion 1.x checkpoint: no UNet weights ({UNET_PREFIX}*) found")
    _reject_other_families(state_dict)
    unet = _unet_sizes(state_dict)
    text = _text_sizes(state_dict)
    if text["hidden_size"] != unet["cross_attention_dim"]:
        raise ArchitectureError(f"inconsistent checkpoint: text encoder width {text['hidden_size']} does not "
                                f"match the UNet's cross-attention dim {unet['cross_attention_dim']}")
    return make_architecture("sd1", unet=unet, vae=_vae_sizes(state_dict), text_encoder=text)


# ---------------------------------------------------------------------------------------------- build

def empty_modules(arch: Architecture):
    """(unet, vae, text_encoder) with parameters on the meta device: no memory, no random init.

    Buffers stay real (include_buffers=False) so non-persistent ones such as CLIP's position_ids are usable.
    """
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with init_empty_weights(include_buffers=False):
        unet = UNet2DConditionModel.from_config(arch.unet_config)
        vae = AutoencoderKL.from_config(arch.vae_config)
        text_encoder = CLIPTextModel(CLIPTextConfig.from_dict(arch.text_encoder_config))
    return unet, vae, text_encoder


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


def _text_encoder_weights(sd: Mapping) -> dict[str, torch.Tensor]:
    prefix = _text_prefix(sd)
    # position_ids is a constant (non-persistent) buffer in transformers; some files carry it, some do not.
    return {k[len(prefix):]: v for k, v in sd.items()
            if k.startswith(prefix) and not k.endswith("embeddings.position_ids")}


def _converted(convert, sd: Mapping, config: dict, what: str) -> dict[str, torch.Tensor]:
    try:
        out = convert(sd, config)
    except (KeyError, IndexError, AttributeError, TypeError) as e:
        raise ArchitectureError(f"cannot convert the {what} weights: {e!r}") from e
    return {k: v for k, v in out.items() if v is not None}  # the converters put None for absent halves


def _finish(module: torch.nn.Module, device, dtype) -> torch.nn.Module:
    # nn.Module.to, not diffusers' override: that one warns on every dtype cast (even with nothing to keep in
    # fp32) and only adds checks for quantized/offloaded models, which these never are.
    torch.nn.Module.to(module, device=device, dtype=dtype)
    module.eval()
    module.requires_grad_(False)
    return module


def build_components(state_dict: Mapping[str, torch.Tensor], arch: Architecture, device="cpu",
                     dtype: torch.dtype = torch.float32) -> Components:
    """UNet, VAE, text encoder and tokenizer for `arch`, holding exactly the checkpoint's weights.

    Tensors are assigned, not copied, where dtype and device already match. Keys outside the three models
    (model_ema.*, alphas_cumprod, …) are ignored.
    """
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint
    from diffusers.models.attention_processor import AttnProcessor2_0
    from transformers import CLIPTokenizer

    unet, vae, text_encoder = empty_modules(arch)
    unet_weights = _converted(convert_ldm_unet_checkpoint, state_dict, arch.unet_config, "UNet")
    load_weights(unet, unet_weights, "SD1.x UNet", lambda k: ldm_layout.unet_key(k, unet.config))
    del unet_weights
    vae_weights = _converted(convert_ldm_vae_checkpoint, state_dict, arch.vae_config, "VAE")
    load_weights(vae, vae_weights, "SD1.x VAE", lambda k: ldm_layout.vae_key(k, vae.config))
    del vae_weights
    load_weights(text_encoder, _text_encoder_weights(state_dict), "CLIP text encoder",
                 ldm_layout.text_encoder_key)

    # PyTorch SDPA: diffusers' default on torch 2 already, set explicitly so nothing else is silently used.
    unet.set_attn_processor(AttnProcessor2_0())
    vae.set_attn_processor(AttnProcessor2_0())
    for module in (unet, vae, text_encoder):
        _finish(module, device, dtype)
    # Loaded fresh per build (~0.1 s) so a caller may add tokens without touching other models' tokenizers.
    tokenizer = CLIPTokenizer.from_pretrained(str(arch.tokenizer_dir), local_files_only=True)
    return Components(unet, vae, text_encoder, tokenizer, arch)
