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


def _config(unet, state: dict, kind: str) -> dict:
    c = unet.config
    outs, channels = _hint_channels(state, kind)
    conv_in = state.get("conv_in.weight", state.get("control_model.input_blocks.0.0.weight",
                                                     state.get("input_blocks.0.0.weight")))
    return dict(
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


def _undiff(state: dict, unet) -> dict:
    """A "diff" ControlNet (a `difference` key): its UNet-shaped weights are stored as differences from the base
    model, so the loaded UNet's own weights are added back, as the extension does."""
    from ..models.ldm_layout import UNET_PREFIX, unet_key

    config = dict(unet.config)
    base = {}
    for key, tensor in unet.state_dict().items():
        try:
            base[unet_key(key, config).removeprefix(UNET_PREFIX)] = tensor
        except KeyError:
            continue
    out = {}
    for key, tensor in state.items():
        bare = key.removeprefix("control_model.")
        if bare == "difference":
            continue
        if bare in base and base[bare].shape == tensor.shape:
            tensor = tensor + base[bare].to("cpu", tensor.dtype)
        out[key] = tensor
    return out


def build(state: dict, unet, name: str):
    """A ControlNetModel for `unet` with the weights in `state`."""
    from accelerate import init_empty_weights
    from diffusers import ControlNetModel

    kind = layout(state)
    if kind == "unknown":
        raise UserError(f"{name} is not a ControlNet this version reads (no ControlNet keys: input_hint_block / "
                        "zero_convs, or diffusers' controlnet_cond_embedding)")
    if "difference" in state or "control_model.difference" in state:
        state = _undiff(state, unet)
    config = _config(unet, state, kind)
    if kind == "ldm":
        from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

        state = convert_controlnet_checkpoint(state, config)
    with init_empty_weights():
        model = ControlNetModel.from_config(config)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0] if str(e) else ""
        raise UserError(f"{name} does not fit the loaded model's UNet ({first[:200]}); is it a ControlNet for "
                        f"this model family?") from e
    return model.eval().requires_grad_(False)


def load(path: Path, unet):
    """The ControlNet in `path` for `unet`, on the UNet's device and dtype; cached (LRU) per file and UNet shape."""
    path = Path(path)
    key = (path, path.stat().st_mtime_ns, id(unet), unet.dtype, str(unet.device))
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        model = build(read(path), unet, path.name).to(device=unet.device, dtype=unet.dtype)
        _cache[key] = model
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
        return model
