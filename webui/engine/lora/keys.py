"""Map LoRA module keys (kohya `lora_unet_…`, `lora_te_…`, …) to the model's own Linear/Conv2d modules.

The map is built by walking the live modules, so every entry names a module that exists: a key is either found
exactly or not at all (no string guessing at apply time).

Target names are `"<component>.<module path>"`, e.g. `"unet.down_blocks.0.attentions.0.proj_in"` or
`"text_encoder.encoder.layers.0.self_attn.q_proj"`: the keys of `named_modules(components)`.
"""
from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from ..models.ldm_layout import UNET_PREFIX, unet_key

PATCHABLE = (nn.Linear, nn.Conv2d, nn.LayerNorm, nn.GroupNorm)  # norms: LyCORIS w_norm/b_norm
TEXT_COMPONENTS = ("text_encoder", "text_encoder_2")


def named_modules(components: Mapping[str, nn.Module | None]) -> dict[str, nn.Module]:
    """Every patchable (Linear / Conv2d) module of the given components, as {"component.path": module}."""
    out: dict[str, nn.Module] = {}
    for comp, module in components.items():
        if module is None:
            continue
        for name, sub in module.named_modules():
            if name and isinstance(sub, PATCHABLE) and getattr(sub, "weight", None) is not None:
                out[f"{comp}.{name}"] = sub
    return out


def is_text_target(target: str) -> bool:
    """True when the target module belongs to a text encoder (gets the `te` multiplier, as A1111)."""
    return target.split(".", 1)[0] in TEXT_COMPONENTS


def _flat(path: str) -> str:
    return path.replace(".", "_")


def _text_core(name: str) -> str:
    """`encoder.layers.0.self_attn.q_proj`, whether transformers names it with or without `text_model.`."""
    return name.removeprefix("text_model.")


def build_key_map(components: Mapping[str, nn.Module | None]) -> dict[str, str]:
    """{lora module key: target name} for every patchable module of `components`.

    components: {"unet": UNet2DConditionModel, "text_encoder": CLIPTextModel, "text_encoder_2": … or None}.

    Registered key forms:
      UNet: `lora_unet_<diffusers path>` (kohya SD1.x), `lora_unet_<LDM path>` (kohya SDXL / LDM-trained),
            and the same with the `lycoris_` prefix; PEFT/diffusers `unet.<path>`.
      Text encoders: `lora_te_text_model_<path>` and `lora_te_<path>` (SD1/SD2, one tower);
            with two towers `lora_te1_…` / `lora_te2_…`; PEFT `text_encoder(_2).[text_model.]<path>`.
    """
    key_map: dict[str, str] = {}
    unet = components.get("unet")
    if unet is not None:
        config = getattr(unet, "config", None)
        for name, sub in unet.named_modules():
            if not (name and isinstance(sub, PATCHABLE)):
                continue
            target = f"unet.{name}"
            for prefix in ("lora_unet_", "lycoris_"):
                key_map.setdefault(prefix + _flat(name), target)
            key_map.setdefault(f"unet.{name}", target)
            if config is not None:
                try:
                    ldm = unet_key(name + ".weight", config)
                except (KeyError, TypeError):
                    ldm = None
                if ldm and ldm.startswith(UNET_PREFIX):
                    ldm_path = ldm[len(UNET_PREFIX):-len(".weight")]
                    key_map.setdefault("lora_unet_" + _flat(ldm_path), target)
    two_towers = components.get("text_encoder") is not None and components.get("text_encoder_2") is not None
    for comp, te_prefixes in (("text_encoder", ("lora_te1_",) if two_towers else ("lora_te_",)),
                              ("text_encoder_2", ("lora_te2_",))):
        module = components.get(comp)
        if module is None:
            continue
        if comp == "text_encoder_2" and components.get("text_encoder") is None:
            te_prefixes = ("lora_te2_", "lora_te_")  # a refiner: its single tower
        for name, sub in module.named_modules():
            if not (name and isinstance(sub, PATCHABLE)):
                continue
            target = f"{comp}.{name}"
            core = _text_core(name)
            for prefix in te_prefixes:
                key_map.setdefault(prefix + "text_model_" + _flat(core), target)
                key_map.setdefault(prefix + _flat(core), target)
            key_map.setdefault(f"{comp}.text_model.{core}", target)
            key_map.setdefault(f"{comp}.{core}", target)
    return key_map
