"""T2I-Adapters: a state dict → diffusers' T2IAdapter, and its feature maps for a hint.

Layouts are told apart by their keys, never the file name:

* TencentARC's original full adapter (`conv_in.weight`, flat `body.K.block1/block2/in_conv` with K = level ×
  num_res_blocks + block): SD1/SD2 when conv_in takes 64 or 192 channels (pixel-unshuffle by 8 of a 1- or
  3-channel hint), SDXL (diffusers' `full_adapter_xl`) when it takes 256 or 768 (unshuffle by 16);
* the original light adapter (`body.N.in_conv`, `body.N.body.M.block1/block2`, `body.N.out_conv`);
* either of those with every key prefixed `adapter.`;
* diffusers' own T2IAdapter layout (`adapter.conv_in`, `adapter.body.N.resnets.M.block1`, `adapter.body.N.in_conv`,
  light: `adapter.body.N.in_conv/out_conv`);
* the style adapter (`style_embedding`, `ln_pre`, `transformer_layes.…`), recognised but refused: it turns CLIP
  vision tokens into extra prompt tokens, and this version loads no CLIP vision model.

The original full adapter also exists with strided-convolution downsampling (`body.N.down_opt.op`), skip
convolutions (`body.N.skep`) or 3×3 second convolutions; no published adapter uses those (TencentARC's releases are
`sk=True, use_conv=False, ksize=1`), diffusers' T2IAdapter cannot hold them, and they are refused with the reason.

How sd-webui-controlnet (Mikubill, scripts/hook.py, adapter.py, controlnet.py) applies an adapter, for whoever
wires `features()` into the sampler:

* The hint is the preprocessed control image as a float tensor in [0, 1] at the generation size. An adapter whose
  conv_in takes 64 (SD) or 256 (SDXL) channels is fed only the hint's first channel (`hint[:, 0:1]`); every other
  adapter (light ones included, which have no conv_in) gets all three. `features()` does the same, by the adapter's
  in_channels.
* The adapter runs once per generation (PlugableAdapter caches its output and hands out copies every step), not
  once per step: the features do not depend on the latent or the timestep.
* The four feature maps are added into the UNet's encoder (LDM input_blocks) and so also into the skip
  connections saved from there: SD1/SD2 after input blocks 2, 5, 8, 11 (the end of each level, before its
  downsampler); SDXL after input blocks 3, 5, 8 (the first one right after level 0's downsampler) and the fourth
  after the middle block. diffusers' UNet2DConditionModel does the same with `down_intrablock_additional_residuals`
  (models/unets/unet_2d_condition.py): a cross-attention down block adds the next feature after its last
  resnet/attention and before its downsampler; a block without cross-attention (SDXL's first) adds it in place to
  the block's output, after the downsampler, which also changes the saved skip; after the mid block one more is
  added only if its shape equals the mid block's output (SDXL). The UNet `pop(0)`s from that list, so pass a fresh
  `list(...)` on every UNet call; when a size does not match, the extension resizes (nearest) where diffusers fails.
* Weighting: every feature is multiplied by the unit's weight. Control mode "Balanced" gives both halves of the CFG
  batch the features. "My prompt is more important" and "ControlNet is more important" both turn on soft
  injection, which for T2I-Adapters scales the four features by weight × (0.25, 0.62, 0.825, 1.0)
  (`SOFT_INJECTION_SCALES`; ControlNets get weight × 0.825 ** (12 - i) instead), and hires-fix passes force it for
  canny/mlsd preprocessors. "ControlNet is more important" additionally multiplies the features by the cond mark,
  so only the conditional half of the batch gets them and the unconditional half gets none. Advanced weighting,
  when given, replaces these scales (zipped with the four features, so only its first four numbers count).
  Guidance start/end and the effective-region mask apply to adapters as to ControlNets; several adapter units are
  summed feature by feature before the UNet adds them.
"""
from __future__ import annotations

import re

import torch

from ..errors import UserError

STYLE_REFUSAL = "style T2I-Adapters need a CLIP vision model, which this version does not load"
# sd-webui-controlnet's soft-injection scales for an adapter's four features (times the unit's weight).
SOFT_INJECTION_SCALES = (0.25, 0.62, 0.825, 1.0)
LEVELS = 4  # an original full adapter's levels; the SD and SDXL UNets take four feature maps
_PREFIX = "adapter."

_FULL_BLOCK = re.compile(r"body\.(\d+)\.block1\.weight")
_LIGHT_BLOCK = re.compile(r"body\.(\d+)\.body\.(\d+)\.block1\.weight")
_LIGHT_IN = re.compile(r"body\.(\d+)\.in_conv\.weight")
_LIGHT_OUT = re.compile(r"body\.(\d+)\.out_conv\.weight")
_DIFFUSERS_BLOCK = re.compile(r"body\.(\d+)\.resnets\.(\d+)\.block1\.weight")
_FULL_KEY = re.compile(r"body\.(\d+)\.(in_conv|block1|block2)\.(weight|bias)")
_LIGHT_KEY = re.compile(r"body\.(\d+)\.(?:(in_conv|out_conv)|body\.(\d+)\.(block1|block2))\.(weight|bias)")


class _Misfit(ValueError):
    """A state dict that looks like an adapter but cannot become diffusers' T2IAdapter; the text is the reason."""


def _unwrap(state: dict) -> dict:
    for outer in ("state_dict", "adapter"):
        inner = state.get(outer) if isinstance(state, dict) else None
        if isinstance(inner, dict):
            return inner
    return state


def _strip(state: dict) -> dict:
    """Keys without the optional `adapter.` prefix (the original layouts' and diffusers' alike)."""
    return {(k[len(_PREFIX):] if isinstance(k, str) and k.startswith(_PREFIX) else k): v for k, v in state.items()}


def _layout(keys) -> str | None:
    keys = [k for k in keys if isinstance(k, str)]
    key_set = set(keys)
    if "style_embedding" in key_set and ("ln_pre.weight" in key_set or any(k.startswith("transformer_layes.")
                                                                          for k in keys)):
        return "style"
    if any(_DIFFUSERS_BLOCK.fullmatch(k) for k in keys):
        return "diffusers"
    if "conv_in.weight" in key_set and any(_FULL_BLOCK.fullmatch(k) for k in keys):
        return "full"
    if (any(_LIGHT_BLOCK.fullmatch(k) for k in keys) and any(_LIGHT_IN.fullmatch(k) for k in keys)
            and any(_LIGHT_OUT.fullmatch(k) for k in keys)):
        return "light"
    return None


def is_adapter(state: dict) -> bool:
    """Whether `state` is a T2I-Adapter (any layout above, the style adapter included), from its keys alone."""
    if not isinstance(state, dict):
        return False
    return _layout(_strip(_unwrap(state)).keys()) is not None


def _numbers(pattern: re.Pattern, keys, group: int = 1) -> list[int]:
    return sorted({int(m.group(group)) for k in keys if (m := pattern.fullmatch(k))})


def _consecutive(numbers: list[int], what: str) -> int:
    if not numbers or numbers != list(range(len(numbers))):
        raise _Misfit(f"its {what} are not numbered 0, 1, 2, … ({numbers[:8]})")
    return len(numbers)


def _unshuffle(cin: int, light: bool) -> tuple[str, int, int]:
    """(adapter_type, in_channels, downscale_factor) from conv_in's input channels: the hint's 1 or 3 channels
    pixel-unshuffled by 8 (SD) or by 16 (SDXL)."""
    if not light and cin in (256, 768):
        return "full_adapter_xl", cin // 256, 16
    if cin in (64, 192):
        return ("light_adapter" if light else "full_adapter"), cin // 64, 8
    raise _Misfit(f"its first convolution takes {cin} channels, not a 1- or 3-channel hint unshuffled by 8 "
                  f"(64 or 192){'' if light else ' or by 16 (256 or 768)'}")


def _from_full(sd: dict) -> tuple[dict, dict]:
    if any(".down_opt." in k for k in sd):
        raise _Misfit("it downsamples with strided convolutions (body.N.down_opt.op); diffusers' T2IAdapter "
                      "only average-pools")
    if any(".skep." in k for k in sd):
        raise _Misfit("its blocks have skip convolutions (body.N.skep), which diffusers' T2IAdapter lacks")
    other = [k for k in sd if k not in ("conv_in.weight", "conv_in.bias") and not _FULL_KEY.fullmatch(k)]
    if other:
        raise _Misfit(f"it has keys a full adapter has not: {', '.join(other[:3])}")
    blocks = _consecutive(_numbers(_FULL_BLOCK, sd), "body blocks")
    if blocks % LEVELS:
        raise _Misfit(f"its {blocks} body blocks do not split into {LEVELS} levels")
    nrb = blocks // LEVELS
    inside = [k for k in sd if (m := _FULL_KEY.fullmatch(k)) and m.group(2) == "in_conv" and int(m.group(1)) % nrb]
    if inside:
        raise _Misfit(f"it changes width inside a level ({inside[0]}), not at a level's first block")
    ksize = sd["body.0.block2.weight"].shape[-1] if "body.0.block2.weight" in sd else 1
    if ksize != 1:
        raise _Misfit(f"its blocks' second convolutions are {ksize}×{ksize}; diffusers' T2IAdapter has 1×1 only")
    adapter_type, in_channels, factor = _unshuffle(sd["conv_in.weight"].shape[1], light=False)
    channels = [int(sd[f"body.{level * nrb}.block1.weight"].shape[0]) for level in range(LEVELS)]
    mapped = {}
    for key, value in sd.items():
        m = _FULL_KEY.fullmatch(key)
        if m is None:  # conv_in
            mapped[_PREFIX + key] = (key, value)
            continue
        index, part, kind = int(m.group(1)), m.group(2), m.group(3)
        level, block = divmod(index, nrb)
        new = (f"body.{level}.in_conv.{kind}" if part == "in_conv" else f"body.{level}.resnets.{block}.{part}.{kind}")
        mapped[_PREFIX + new] = (key, value)
    config = dict(in_channels=in_channels, channels=channels, num_res_blocks=nrb, downscale_factor=factor,
                  adapter_type=adapter_type)
    return config, mapped


def _from_light(sd: dict) -> tuple[dict, dict]:
    other = [k for k in sd if not _LIGHT_KEY.fullmatch(k)]
    if other:
        raise _Misfit(f"it has keys a light adapter has not: {', '.join(other[:3])}")
    levels = _consecutive(_numbers(_LIGHT_OUT, sd), "levels")
    nrb = _consecutive(_numbers(_LIGHT_BLOCK, [k for k in sd if k.startswith("body.0.")], group=2), "res blocks")
    if levels < 2:
        raise _Misfit("it has a single level")
    widths = [int(sd[f"body.{i}.out_conv.weight"].shape[0]) for i in range(levels)]
    if widths[-1] != widths[-2]:
        raise _Misfit(f"its last two levels differ in width ({widths}); diffusers' light adapter repeats the last")
    if "body.0.in_conv.weight" not in sd:
        raise _Misfit("its first level has no in_conv")
    adapter_type, in_channels, factor = _unshuffle(sd["body.0.in_conv.weight"].shape[1], light=True)
    mapped = {}
    for key, value in sd.items():
        m = _LIGHT_KEY.fullmatch(key)
        level, conv, block, part, kind = m.groups()
        new = f"body.{level}.{conv}.{kind}" if conv else f"body.{level}.resnets.{block}.{part}.{kind}"
        mapped[_PREFIX + new] = (key, value)
    config = dict(in_channels=in_channels, channels=widths[:-1], num_res_blocks=nrb, downscale_factor=factor,
                  adapter_type=adapter_type)
    return config, mapped


def _from_diffusers(sd: dict) -> tuple[dict, dict]:
    levels = _consecutive(_numbers(_DIFFUSERS_BLOCK, sd), "body levels")
    nrb = _consecutive(_numbers(_DIFFUSERS_BLOCK, [k for k in sd if k.startswith("body.0.")], group=2),
                       "res blocks")
    if "conv_in.weight" in sd:
        adapter_type, in_channels, factor = _unshuffle(sd["conv_in.weight"].shape[1], light=False)
        channels = [int(sd[f"body.{i}.resnets.0.block1.weight"].shape[0]) for i in range(levels)]
    else:
        if "body.0.in_conv.weight" not in sd or levels < 2:
            raise _Misfit("it has neither conv_in (full adapter) nor a light adapter's body.N.in_conv/out_conv")
        adapter_type, in_channels, factor = _unshuffle(sd["body.0.in_conv.weight"].shape[1], light=True)
        if any(f"body.{i}.out_conv.weight" not in sd for i in range(levels)):
            raise _Misfit("its light blocks lack out_conv")
        channels = [int(sd[f"body.{i}.out_conv.weight"].shape[0]) for i in range(levels - 1)]
    config = dict(in_channels=in_channels, channels=channels, num_res_blocks=nrb, downscale_factor=factor,
                  adapter_type=adapter_type)
    return config, {_PREFIX + k: (k, v) for k, v in sd.items()}


def _describe(keys: list[str], limit: int = 3) -> str:
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def build(state: dict, name: str):
    """The adapter in `state` (any layout `is_adapter` knows) as diffusers' T2IAdapter, in eval mode without
    gradients, on the CPU in the file's floating dtype. UserError naming `name` when the file is a style adapter,
    or fits no adapter diffusers can hold, with the reason."""
    from diffusers import T2IAdapter

    sd = _strip(_unwrap(state)) if isinstance(state, dict) else {}
    layout = _layout(sd.keys())
    if layout is None:
        raise UserError(f"{name} is not a T2I-Adapter this version reads (no adapter keys: conv_in with "
                        f"body.N.block1, body.N.in_conv with body.N.body.M.block1 and body.N.out_conv, or diffusers' "
                        f"adapter.body.N.resnets.M)")
    if layout == "style":
        raise UserError(f"{name}: {STYLE_REFUSAL}")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise UserError(f"{name} is not a T2I-Adapter this version reads: it holds things other than named tensors")
    try:
        config, mapped = {"full": _from_full, "light": _from_light, "diffusers": _from_diffusers}[layout](sd)
    except _Misfit as e:
        raise UserError(f"{name} is not a T2I-Adapter this version reads: {e}") from None

    floats = [v.dtype for v in sd.values() if v.is_floating_point()]
    dtype = max(set(floats), key=floats.count) if floats else torch.float32
    with torch.device("meta"):
        model = T2IAdapter(**config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(mapped))
    unexpected = sorted(original for new, (original, _) in mapped.items() if new not in expected)
    wrong = sorted(f"{original} {tuple(value.shape)} (expected {tuple(expected[new].shape)})"
                   for new, (original, value) in mapped.items()
                   if new in expected and value.shape != expected[new].shape)
    if missing or unexpected or wrong:
        reasons = []
        if missing:
            reasons.append(f"missing {_describe(missing)}")
        if unexpected:
            reasons.append(f"unexpected {_describe(unexpected)}")
        if wrong:
            reasons.append(f"wrong shape {_describe(wrong)}")
        raise UserError(f"{name} does not fit a T2I-Adapter ({config['adapter_type']}, channels "
                        f"{config['channels']}, {config['num_res_blocks']} res blocks): {'; '.join(reasons)}")
    weights = {new: value.to(dtype).contiguous() for new, (_, value) in mapped.items()}
    model.load_state_dict(weights, strict=True, assign=True)
    return model.eval().requires_grad_(False)


def features(adapter, hint: torch.Tensor) -> list[torch.Tensor]:
    """The adapter's feature maps for a hint batch (B, 3 or 1, H, W) of floats in [0, 1] at the image size,
    ordered for UNet2DConditionModel's `down_intrablock_additional_residuals` (pass `list(...)` of them anew on
    every UNet call: the UNet pops them). Their batch is the hint's: repeat them for the CFG batch.

    A 3-channel hint given to a 1-channel adapter keeps only its first channel (as sd-webui-controlnet feeds it); a
    1-channel hint given to a 3-channel adapter is repeated. A size that is not a multiple of the adapter's
    unshuffle factor (8, SDXL 16) is resized (nearest) up to the next multiple, which gives the same feature sizes
    as the UNet's own downsampling of a latent of that image. Runs without gradients on the adapter's device and
    dtype; the result keeps that device and dtype."""
    if hint.ndim == 3:
        hint = hint[None]
    if hint.ndim != 4:
        raise ValueError(f"a T2I-Adapter hint is (B, C, H, W), got shape {tuple(hint.shape)}")
    param = next(adapter.parameters())
    hint = hint.to(device=param.device, dtype=param.dtype)
    wanted = int(adapter.config.in_channels)
    if hint.shape[1] != wanted:
        if wanted == 1:
            hint = hint[:, 0:1]
        elif hint.shape[1] == 1:
            hint = hint.expand(-1, wanted, -1, -1)
        else:
            raise ValueError(f"this T2I-Adapter takes {wanted}-channel hints, got {hint.shape[1]} channels")
    factor = int(adapter.config.downscale_factor)
    h, w = hint.shape[-2:]
    size = (-(-h // factor) * factor, -(-w // factor) * factor)
    if size != (h, w):
        hint = torch.nn.functional.interpolate(hint, size=size, mode="nearest")
    with torch.no_grad():
        return list(adapter(hint))
