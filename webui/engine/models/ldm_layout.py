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
    SDXL's size/crop embedding: add_embedding.linear_1/2  label_emb.0.0 / label_emb.0.2
Text encoders, by family (ModelFamily.towers): OpenAI CLIP towers are stored as transformers' CLIPTextModel keys under a
    prefix; OpenCLIP towers (SD2's ViT-H, SDXL's bigG) in OpenCLIP's own layout (see _OPENCLIP), where one
    in_proj matrix holds q, k and v stacked, and text_projection is stored transposed (x @ P, not a Linear).
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.transformer.text_model."
OPENCLIP_PREFIX = "cond_stage_model.model."  # SD2
SDXL_CLIP_PREFIX = "conditioner.embedders.0.transformer.text_model."
SDXL_OPENCLIP_PREFIX = "conditioner.embedders.1.model."
REFINER_OPENCLIP_PREFIX = "conditioner.embedders.0.model."

_UNET_TOP = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
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


def controlnet_key(key: str, config: Mapping) -> str:
    """The original cldm key (no `control_model.` prefix) of a diffusers ControlNetModel state-dict key: the UNet
    encoder keeps the UNet's names; the hint encoder's convs are `input_hint_block.{0, 2, …}` (SiLUs between),
    the per-layer zero convs `zero_convs.N.0`, the middle one `middle_block_out.0`."""
    if key.startswith("controlnet_cond_embedding."):
        rest = key.removeprefix("controlnet_cond_embedding.")
        if rest.startswith("conv_in."):
            return "input_hint_block.0." + rest.removeprefix("conv_in.")
        if rest.startswith("conv_out."):
            blocks = 2 * (len(config.get("conditioning_embedding_out_channels", (16, 32, 96, 256))) - 1)
            return f"input_hint_block.{2 * (blocks + 1)}." + rest.removeprefix("conv_out.")
        j, tail = re.fullmatch(r"blocks\.(\d+)\.(.+)", rest).groups()
        return f"input_hint_block.{2 * (int(j) + 1)}.{tail}"
    if m := re.fullmatch(r"controlnet_down_blocks\.(\d+)\.(.+)", key):
        return f"zero_convs.{m.group(1)}.0.{m.group(2)}"
    if key.startswith("controlnet_mid_block."):
        return "middle_block_out.0." + key.removeprefix("controlnet_mid_block.")
    return unet_key(key, config).removeprefix(UNET_PREFIX)


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


def text_encoder_key(key: str, prefix: str = TEXT_PREFIX) -> str:
    """The LDM key of a transformers CLIPTextModel key (with or without the pre-5.6 `text_model.` prefix)."""
    return prefix + key.removeprefix("text_model.")


# transformers CLIPTextModel names (without `text_model.`) → OpenCLIP names, per layer and at the top.
_OPENCLIP_LAYER = {
    "self_attn.out_proj": "attn.out_proj",
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}
_OPENCLIP_TOP = {
    "embeddings.token_embedding.weight": "token_embedding.weight",
    "embeddings.position_embedding.weight": "positional_embedding",
    "final_layer_norm.weight": "ln_final.weight",
    "final_layer_norm.bias": "ln_final.bias",
    "text_projection.weight": "text_projection",
}
_HF_LAYER = re.compile(r"encoder\.layers\.(\d+)\.(.+)")
_QKV = re.compile(r"self_attn\.([qkv])_proj\.(weight|bias)")


def openclip_key(key: str, prefix: str = "") -> str:
    """The OpenCLIP key of a transformers CLIP text model key; q/k/v_proj all name the shared in_proj."""
    key = key.removeprefix("text_model.")
    if key in _OPENCLIP_TOP:
        return prefix + _OPENCLIP_TOP[key]
    m = _HF_LAYER.fullmatch(key)
    if not m:
        raise KeyError(f"no OpenCLIP name for text encoder key {key!r}")
    layer, rest = m.group(1), m.group(2)
    if q := _QKV.fullmatch(rest):
        return f"{prefix}transformer.resblocks.{layer}.attn.in_proj_{q.group(2)}"
    return f"{prefix}transformer.resblocks.{layer}.{_rename_first(rest, _OPENCLIP_LAYER)}"


def to_openclip(state_dict: Mapping[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """A transformers CLIP text model's tensors in OpenCLIP layout (q, k, v stacked into in_proj, in that order)."""
    out: dict[str, torch.Tensor] = {}
    stacks: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state_dict.items():
        if key.endswith("position_ids"):
            continue
        name = openclip_key(key, prefix)
        q = _QKV.search(key)
        if q:
            stacks.setdefault(name, {})[q.group(1)] = tensor
        elif name.endswith("text_projection"):
            out[name] = tensor.t()
        else:
            out[name] = tensor
    for name, parts in stacks.items():
        out[name] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return out


def from_openclip(state_dict: Mapping[str, torch.Tensor], prefix: str,
                  projection: bool = True) -> dict[str, torch.Tensor]:
    """The OpenCLIP tower under `prefix` as transformers CLIP keys (without `text_model.`); inverse of to_openclip.

    Tensors are views (q/k/v are row slices of in_proj), so values stay bit-identical. projection=False leaves
    out text_projection (SD2 files carry one that the plain CLIPTextModel SD2 uses has no slot for). OpenCLIP's
    logit_scale belongs to the image-text loss and is never taken.
    """
    top = {v: k for k, v in _OPENCLIP_TOP.items() if projection or v != "text_projection"}
    block = re.compile(re.escape(prefix) + r"transformer\.resblocks\.(\d+)\.(.+)")
    layer_names = {v: k for k, v in _OPENCLIP_LAYER.items()}
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix):]
        if rest in top:
            out[top[rest]] = tensor.t() if rest == "text_projection" else tensor
        elif m := block.fullmatch(key):
            layer, name = m.group(1), m.group(2)
            if name.startswith("attn.in_proj_"):
                kind = name.removeprefix("attn.in_proj_")
                for part, chunk in zip("qkv", tensor.chunk(3, dim=0)):
                    out[f"encoder.layers.{layer}.self_attn.{part}_proj.{kind}"] = chunk
            else:
                out[f"encoder.layers.{layer}.{_rename_first(name, layer_names)}"] = tensor
    return out


def _vae_tensor(ldm_key: str, tensor: torch.Tensor) -> torch.Tensor:
    # LDM's VAE attention uses 1×1 convolutions where diffusers uses Linear layers.
    is_attn = ".mid.attn_1." in ldm_key and ldm_key.endswith(("q.weight", "k.weight", "v.weight", "proj_out.weight"))
    return tensor.reshape(*tensor.shape, 1, 1) if is_attn and tensor.ndim == 2 else tensor


def text_tower_state_dict(module, prefix: str, layout: str) -> dict[str, torch.Tensor]:
    """One transformers CLIP text model's tensors as a single file stores them under `prefix`."""
    tensors = {k: v.detach() for k, v in module.state_dict().items() if not k.endswith("position_ids")}
    if layout == "openclip":
        return to_openclip(tensors, prefix)
    return {text_encoder_key(k, prefix): v for k, v in tensors.items()}


def to_ldm_state_dict(unet, vae, text_encoder, text_encoder_2=None, family: str = "sd1") -> dict[str, torch.Tensor]:
    """One single-file state dict of `family` from diffusers/transformers modules (tensors are detached views,
    except OpenCLIP's in_proj, which is a new q|k|v concatenation).

    Only module weights are written; constants a real file also carries (OpenCLIP's logit_scale, SD2's unused
    text_projection) are the caller's business (tiny.py adds them).
    """
    out: dict[str, torch.Tensor] = {}
    for key, tensor in unet.state_dict().items():
        out[unet_key(key, unet.config)] = tensor.detach()
    for key, tensor in vae.state_dict().items():
        name = vae_key(key, vae.config)
        out[name] = _vae_tensor(name, tensor.detach())
    from .families import get_family

    towers = get_family(family).towers
    for module, tower in zip((text_encoder, text_encoder_2), towers):
        if (module is None) != (tower is None):
            got = [type(m).__name__ for m in (text_encoder, text_encoder_2)]
            raise ValueError(f"{family} stores text towers {towers}, got modules {got}")
        if module is not None:
            out.update(text_tower_state_dict(module, tower.prefix, tower.layout))
    return out
