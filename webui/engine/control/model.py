"""A ControlNet file → diffusers' ControlNetModel sized for the loaded UNet. The layout is read from the keys,
never the name: the original LDM layout (with the `control_model.` prefix or without) goes through diffusers'
own converter; diffusers' layout loads as it is. A file that fits neither, or was made for another UNet, is a
UserError naming the file and why."""
from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import torch

from ..errors import UserError

_cache: OrderedDict = OrderedDict()
_lock = threading.Lock()
CACHE_SIZE = 2


def read(path: Path) -> dict:
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - an unreadable or unsafe file is the user's to fix
        raise UserError(f"cannot read ControlNet {path.name}: {type(e).__name__}: {str(e)[:200]}") from e
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise UserError(f"cannot read ControlNet {path.name}: it holds no tensors")
    return state


def layout(state: dict) -> str:
    keys = state.keys()
    if any(k.startswith("controlnet_cond_embedding.") for k in keys):
        return "diffusers"
    bare = {k.removeprefix("control_model.") for k in keys}
    if "input_hint_block.0.weight" in bare and any(k.startswith("zero_convs.") for k in bare):
        return "ldm"
    return "unknown"


def _hint_channels(state: dict, kind: str) -> tuple[tuple[int, ...], int]:
    """(conditioning_embedding_out_channels, conditioning channels) from the hint encoder's conv shapes."""
    if kind == "diffusers":
        first = state["controlnet_cond_embedding.conv_in.weight"]
        blocks = sorted({int(k.split(".")[2]) for k in state if k.startswith("controlnet_cond_embedding.blocks.")})
        outs = [first.shape[0]] + [state[f"controlnet_cond_embedding.blocks.{i}.weight"].shape[0]
                                   for i in blocks[1::2]]
        return tuple(outs), first.shape[1]
    prefix = "control_model." if any(k.startswith("control_model.") for k in state) else ""
    convs = sorted(int(k.split(".")[1]) for k in (k.removeprefix(prefix) for k in state)
                   if k.startswith("input_hint_block.") and k.endswith(".weight"))
    shapes = [state[f"{prefix}input_hint_block.{i}.weight"].shape for i in convs]
    outs = [shapes[0][0]] + [s[0] for s in shapes[2:-1:2]]
    return tuple(outs), shapes[0][1]


def _depths(state: dict, kind: str, c) -> dict:
    """Block types and transformer depths read from the keys, not copied from the UNet: SDXL's "mid" and
    "small" ControlNets have fewer transformer blocks per level (or none) than the UNet they drive."""
    import re

    levels = len(c.block_out_channels)
    n = c.layers_per_block
    depth: dict = {}  # level → transformer blocks (0: an attention with no blocks); absent: no attention
    mid = None
    if kind == "diffusers":
        level_of = re.compile(r"down_blocks\.(\d+)\.attentions\.\d+\.(?:transformer_blocks\.(\d+)\.)?")
        mid_of = re.compile(r"mid_block\.attentions\.0\.(?:transformer_blocks\.(\d+)\.)?")
    else:
        level_of = re.compile(r"(?:control_model\.)?input_blocks\.(\d+)\.1\.(?:transformer_blocks\.(\d+)\.)?")
        mid_of = re.compile(r"(?:control_model\.)?middle_block\.1\.(?:transformer_blocks\.(\d+)\.)?")
    for key in state:
        if m := level_of.match(key):
            level = int(m.group(1)) if kind == "diffusers" else (int(m.group(1)) - 1) // (n + 1)
            blocks = int(m.group(2)) + 1 if m.group(2) is not None else 0
            depth[level] = max(depth.get(level, 0), blocks)
        elif m := mid_of.match(key):
            mid = max(mid or 0, int(m.group(1)) + 1 if m.group(1) is not None else 0)
    if not depth:  # a layout without attention keys here: keep the UNet's
        return {}
    types = [("CrossAttnDownBlock2D" if level in depth else "DownBlock2D") for level in range(levels)]
    layers = [max(depth.get(level, 1), 1) if level in depth else 1 for level in range(levels)]
    # diffusers cannot hold an attention with zero blocks; such a level keeps one, and loading says so
    return dict(down_block_types=tuple(types), transformer_layers_per_block=layers,
                mid_block_type="UNetMidBlock2DCrossAttn" if mid is not None else "UNetMidBlock2D",
                **({"transformer_layers_per_block_mid": max(mid, 1)} if mid is not None else {}))


def _config(unet, state: dict, kind: str) -> dict:
    c = unet.config
    outs, channels = _hint_channels(state, kind)
    conv_in = state.get("conv_in.weight", state.get("control_model.input_blocks.0.0.weight",
                                                     state.get("input_blocks.0.0.weight")))
    config = dict(
        in_channels=conv_in.shape[1] if conv_in is not None else 4, flip_sin_to_cos=c.flip_sin_to_cos,
        freq_shift=c.freq_shift, down_block_types=c.down_block_types, only_cross_attention=c.only_cross_attention,
        block_out_channels=c.block_out_channels, layers_per_block=c.layers_per_block,
        downsample_padding=c.downsample_padding, mid_block_scale_factor=c.mid_block_scale_factor, act_fn=c.act_fn,
        norm_num_groups=c.norm_num_groups, norm_eps=c.norm_eps, cross_attention_dim=c.cross_attention_dim,
        attention_head_dim=c.attention_head_dim, num_attention_heads=c.num_attention_heads,
        use_linear_projection=c.use_linear_projection, class_embed_type=c.class_embed_type,
        num_class_embeds=c.num_class_embeds, upcast_attention=c.upcast_attention,
        resnet_time_scale_shift=c.resnet_time_scale_shift,
        projection_class_embeddings_input_dim=c.projection_class_embeddings_input_dim,
        mid_block_type=c.mid_block_type, addition_embed_type=c.addition_embed_type,
        addition_time_embed_dim=c.addition_time_embed_dim, encoder_hid_dim=c.encoder_hid_dim,
        encoder_hid_dim_type=c.encoder_hid_dim_type, transformer_layers_per_block=c.transformer_layers_per_block,
        conditioning_embedding_out_channels=outs, conditioning_channels=channels)
    config.update(_depths(state, kind, c))
    mid_layers = config.pop("transformer_layers_per_block_mid", None)
    if mid_layers is not None and mid_layers != config["transformer_layers_per_block"][-1]:
        raise UserError("a ControlNet whose middle block has another depth than its last level is not supported")
    return config


def _unet_encoder_weights(unet) -> dict:
    """The UNet's weights a ControlNet shares (time embedding, input and middle blocks, SDXL's label_emb), by
    their original LDM names without prefix."""
    from ..models.ldm_layout import UNET_PREFIX, unet_key

    config = dict(unet.config)
    base = {}
    for key, tensor in unet.state_dict().items():
        try:
            name = unet_key(key, config).removeprefix(UNET_PREFIX)
        except KeyError:
            continue
        if name.startswith(("time_embed.", "input_blocks.", "middle_block.", "label_emb.")):
            base[name] = tensor
    return base


def _from_control_lora(state: dict, unet) -> dict:
    """A Control-LoRA (Stability's `lora_controlnet` files): a ControlNet whose encoder is the loaded UNet's,
    with the file's full tensors (hint encoder, zero convs, norms, biases…) set over it and, for each layer
    with `X.up` / `X.down`, X.weight + up @ down (flattened to matrices, reshaped back), as ComfyUI builds it."""
    out = {k: v.to("cpu") for k, v in _unet_encoder_weights(unet).items()}
    for key, tensor in state.items():
        if key != "lora_controlnet" and not key.endswith((".up", ".down")):
            out[key] = tensor
    for key, up in state.items():
        if not key.endswith(".up"):
            continue
        layer = key[:-len(".up")]
        down = state.get(layer + ".down")
        weight = out.get(layer + ".weight")
        if down is None or weight is None:
            raise UserError(f"Control-LoRA layer {layer} has no {'down factor' if down is None else 'base weight'}")
        delta = up.flatten(1).float() @ down.flatten(1).float()
        if delta.numel() != weight.numel():
            raise UserError(f"Control-LoRA layer {layer}: up @ down is {tuple(delta.shape)}, the loaded model's "
                            f"weight {tuple(weight.shape)}; is it made for this model family?")
        out[layer + ".weight"] = (weight.float() + delta.reshape(weight.shape)).to(weight.dtype)
    return out


def _undiff(state: dict, unet) -> dict:
    """A "diff" ControlNet (a `difference` key): its UNet-shaped weights are stored as differences from the base
    model, so the loaded UNet's own weights are added back, as the extension does."""
    base = _unet_encoder_weights(unet)
    out = {}
    for key, tensor in state.items():
        bare = key.removeprefix("control_model.")
        if bare == "difference":
            continue
        if bare in base and base[bare].shape == tensor.shape:
            tensor = tensor + base[bare].to("cpu", tensor.dtype)
        out[key] = tensor
    return out


def _describe(sdxl: bool, width: int | None) -> str:
    if sdxl:
        return "SDXL"
    return {768: "SD1", 1024: "SD2"}.get(width, f"a model with {width}-wide text" if width else "another model")


def _check_family(state: dict, unet, name: str) -> None:
    """A ControlNet for another base family is named as such before any weight is loaded: SDXL's size
    embedding (`label_emb` / `add_embedding`) and the cross-attention's text width tell them apart."""
    sdxl = any(".label_emb." in f".{k}" or k.startswith("add_embedding.") for k in state)
    width = next((int(v.shape[1]) for k, v in state.items()
                  if k.endswith("attn2.to_k.weight") and getattr(v, "ndim", 0) == 2), None)
    unet_sdxl = unet.config.addition_embed_type == "text_time"
    unet_width = unet.config.cross_attention_dim
    unet_width = unet_width[0] if isinstance(unet_width, (list, tuple)) else unet_width
    if sdxl != unet_sdxl or (width is not None and width != unet_width):
        raise UserError(f"{name} is a ControlNet for {_describe(sdxl, width)}; the loaded model is "
                        f"{_describe(unet_sdxl, unet_width)}")


def build(state: dict, unet, name: str):
    """A ControlNetModel for `unet` with the weights in `state`."""
    from accelerate import init_empty_weights
    from diffusers import ControlNetModel

    kind = layout(state)
    if kind == "unknown":
        raise UserError(f"{name} is not a ControlNet this version reads (no ControlNet keys: input_hint_block / "
                        "zero_convs, or diffusers' controlnet_cond_embedding)")
    if "lora_controlnet" in state:
        state = _from_control_lora(state, unet)
    if "difference" in state or "control_model.difference" in state:
        state = _undiff(state, unet)
    _check_family(state, unet, name)
    config = _config(unet, state, kind)
    if kind == "ldm":
        from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

        converted = convert_controlnet_checkpoint(state, config)
        # diffusers' converter leaves out SDXL's size embedding; it keeps the UNet's names for it
        bare = {k.removeprefix("control_model."): v for k, v in state.items()}
        for ldm, ours in (("label_emb.0.0", "add_embedding.linear_1"), ("label_emb.0.2", "add_embedding.linear_2")):
            for part in ("weight", "bias"):
                if f"{ldm}.{part}" in bare:
                    converted.setdefault(f"{ours}.{part}", bare[f"{ldm}.{part}"])
        state = converted
    with init_empty_weights():
        model = ControlNetModel.from_config(config)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        first = lines[1] if len(lines) > 1 else (lines[0] if lines else "")
        raise UserError(f"{name} does not fit the loaded model's UNet ({first[:200]}); is it a ControlNet for "
                        f"this model family?") from e
    return model.eval().requires_grad_(False)


def build_any(state: dict, unet, name: str):
    """A ControlNet, or a T2I-Adapter when the keys are an adapter's (engine/control/adapter.py)."""
    from . import adapter

    if adapter.is_adapter(state):
        return adapter.build(state, name)
    return build(state, unet, name)


def load(path: Path, unet, cache_size: int = CACHE_SIZE):
    """The ControlNet (or T2I-Adapter) in `path` for `unet`, on the UNet's device and dtype; cached (LRU) per
    file and UNet shape."""
    path = Path(path)
    key = (path, path.stat().st_mtime_ns, id(unet), unet.dtype, str(unet.device))
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        model = build_any(read(path), unet, path.name).to(device=unet.device, dtype=unet.dtype)
        _cache[key] = model
        while len(_cache) > max(1, cache_size):
            _cache.popitem(last=False)
        return model
