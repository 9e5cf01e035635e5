"""diffusers → original LDM single-file key names (the layout of community .safetensors/.ckpt files).

diffusers ships LDM → diffusers converters but not the way back; we need it to write test checkpoints in the
real layout and to name a checkpoint's own keys in error messages. Hand-written from the two module trees:

UNet (`model.diffusion_model.`), with n = layers_per_block:
    conv_in                       input_blocks.0.0
    down_blocks.l.resnets.j       input_blocks.{1 + l(n+1) + j}.0      (resnet sub-layers renamed, see _RESNET)
    down_blocks.l.attentions.j    input_blocks.{1 + l(n+1) + j}.1      (transformer internals keep their names)
    down_blocks.l.downsamplers.0  input_blocks.{(l+1)(n+1)}.0.op
    mid_block.resnets.0/1         middle_block.0 / middle_block.2,  mid_block.attentions.0  middle_block.1
    up_blocks.l.resnets.j         output_blocks.{l(n+1) + j}.0         (up blocks hold n+1 resnets, j ≤ n)
    up_blocks.l.attentions.j      output_blocks.{l(n+1) + j}.1
    up_blocks.l.upsamplers.0      output_blocks.{l(n+1) + n}.{2 if the level has attention else 1}.conv
VAE (`first_stage_model.`): encoder.down.i.block.j, decoder.up.{L-1-i} (LDM numbers decoder levels from the
    lowest resolution up), mid.block_1/attn_1/block_2, attention q/k/v/proj_out stored as 1×1 conv weights.
Text encoder (`cond_stage_model.transformer.text_model.`): transformers' CLIPTextModel keys, prefixed.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.transformer.text_model."

_UNET_TOP = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_VAE_TOP = {"conv_norm_out": "norm_out"}  # everything else at the top keeps its name
_VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}

_BLOCK = re.compile(r"(down|up)_blocks\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)\.(.+)")
_MID = re.compile(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)")


def _rename_first(rest: str, table: Mapping[str, str]) -> str:
    for old, new in table.items():
        if rest.startswith(old + "."):
            return new + rest[len(old):]
    return rest


def unet_key(key: str, config: Mapping) -> str:
    """The LDM key (with prefix) of a diffusers UNet2DConditionModel state-dict key."""
    top = _rename_first(key, _UNET_TOP)
    if top != key:
        return UNET_PREFIX + top
    n = config["layers_per_block"]
    if m := _MID.fullmatch(key):
        kind, j, rest = m.group(1), int(m.group(2)), m.group(3)
        index = 1 if kind == "attentions" else 2 * j
        return f"{UNET_PREFIX}middle_block.{index}.{_rename_first(rest, _RESNET) if kind == 'resnets' else rest}"
    m = _BLOCK.fullmatch(key)
    if not m:
        raise KeyError(f"no LDM name for UNet key {key!r}")
    side, level, kind, j, rest = m.group(1), int(m.group(2)), m.group(3), int(m.group(4)), m.group(5)
    if side == "down":
        if kind == "downsamplers":
            return f"{UNET_PREFIX}input_blocks.{(level + 1) * (n + 1)}.0.{rest.replace('conv.', 'op.', 1)}"
        block = f"input_blocks.{1 + level * (n + 1) + j}"
    else:
        if kind == "upsamplers":
            has_attn = "CrossAttn" in config["up_block_types"][level]
            return f"{UNET_PREFIX}output_blocks.{level * (n + 1) + n}.{2 if has_attn else 1}.{rest}"
        block = f"output_blocks.{level * (n + 1) + j}"
    if kind == "resnets":
        return f"{UNET_PREFIX}{block}.0.{_rename_first(rest, _RESNET)}"
    return f"{UNET_PREFIX}{block}.1.{rest}"


def vae_key(key: str, config: Mapping) -> str:
    """The LDM key (with prefix) of a diffusers AutoencoderKL state-dict key."""
    coder, _, rest = key.partition(".")
    if coder not in ("encoder", "decoder"):
        return VAE_PREFIX + key  # quant_conv, post_quant_conv
    if m := _MID.fullmatch(rest):
        kind, j, inner = m.group(1), int(m.group(2)), m.group(3)
        if kind == "attentions":
            return f"{VAE_PREFIX}{coder}.mid.attn_1.{_rename_first(inner, _VAE_ATTN)}"
        return f"{VAE_PREFIX}{coder}.mid.block_{j + 1}.{_rename_first(inner, _VAE_RESNET)}"
    if m := _BLOCK.fullmatch(rest):
        side, level, kind, j, inner = m.group(1), int(m.group(2)), m.group(3), int(m.group(4)), m.group(5)
        if side == "up":
            level = len(config["block_out_channels"]) - 1 - level
        name = "down" if side == "down" else "up"
        if kind in ("downsamplers", "upsamplers"):
            return f"{VAE_PREFIX}{coder}.{name}.{level}.{kind[:-2]}.{inner}"  # downsample / upsample
        return f"{VAE_PREFIX}{coder}.{name}.{level}.block.{j}.{_rename_first(inner, _VAE_RESNET)}"
    if rest.split(".")[0] in ("conv_in", "conv_out", "conv_norm_out"):
        return f"{VAE_PREFIX}{coder}.{_rename_first(rest, _VAE_TOP)}"
    raise KeyError(f"no LDM name for VAE key {key!r}")


def text_encoder_key(key: str) -> str:
    """The LDM key of a transformers CLIPTextModel key (with or without the pre-5.6 `text_model.` prefix)."""
    return TEXT_PREFIX + key.removeprefix("text_model.")


def _vae_tensor(ldm_key: str, tensor: torch.Tensor) -> torch.Tensor:
    # LDM's VAE attention uses 1×1 convolutions where diffusers uses Linear layers.
    is_attn = ".mid.attn_1." in ldm_key and ldm_key.endswith(("q.weight", "k.weight", "v.weight", "proj_out.weight"))
    return tensor.reshape(*tensor.shape, 1, 1) if is_attn and tensor.ndim == 2 else tensor


def to_ldm_state_dict(unet, vae, text_encoder) -> dict[str, torch.Tensor]:
    """One single-file SD1.x state dict from diffusers/transformers modules (tensors are detached views)."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in unet.state_dict().items():
        out[unet_key(key, unet.config)] = tensor.detach()
    for key, tensor in vae.state_dict().items():
        name = vae_key(key, vae.config)
        out[name] = _vae_tensor(name, tensor.detach())
    for key, tensor in text_encoder.state_dict().items():
        if key.endswith("position_ids"):
            continue  # a constant buffer, not a weight; loaders ignore it
        out[text_encoder_key(key)] = tensor.detach()
    return out
