"""What the UNet gets from a job's ControlNet units: each unit's map fitted to the job (and to the hires pass's
size), its ControlNet run on the same latents, timesteps and text as the UNet, the residuals weighted per layer
by its control mode, the negative prompt's rows left out for "ControlNet is more important", several units
summed. Registered on the job as a residual patch (engine/patches.py): nothing in the UNet is replaced."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..patches import ControlCall, JobPatches
from . import files, model as control_model, preprocess
from .units import ControlUnit


@dataclass
class PreparedUnit:
    unit: ControlUnit
    controlnet: object
    title: str
    hint: Image.Image  # the detected map at the job's size
    path: Path | None = None
    mask: Image.Image | None = None  # inpaint units: white where the picture is to be filled, at the job's size
    _tensors: dict = field(default_factory=dict)

    def tensor(self, width: int, height: int, device, dtype) -> torch.Tensor:
        """The map as the ControlNet takes it: RGB in [0, 1]; an inpaint unit's masked pixels are −1, as the
        inpaint ControlNet was trained."""
        key = (width, height)
        if key not in self._tensors:
            picture = self.hint if self.hint.size == key else self.hint.resize(key, Image.Resampling.LANCZOS)
            pixels = np.asarray(picture.convert("RGB"), dtype=np.float32) / 255.0
            if self.mask is not None:
                masked = np.asarray(self.mask.convert("L").resize(key, Image.Resampling.NEAREST)) > 127
                pixels = pixels.copy()
                pixels[masked] = -1.0
            self._tensors[key] = torch.from_numpy(pixels).permute(2, 0, 1)[None]
        return self._tensors[key].to(device=device, dtype=dtype)


def detected_map(unit: ControlUnit, width: int, height: int, seed: int = 0, annotators_dir=None) -> Image.Image:
    """The unit's map as the job uses it: preprocessed (pixel-perfect resolution if asked), fitted to size."""
    from ..errors import UserError

    if unit.image is None:
        raise UserError("a ControlNet unit is enabled without an image")
    resolution = unit.processor_res
    if unit.pixel_perfect:
        resolution = preprocess.pixel_perfect_resolution(unit.image, width, height, unit.resize_mode)
    detected = preprocess.run(unit.module, unit.image, resolution, unit.threshold_a, unit.threshold_b, seed,
                              annotators_dir)
    return preprocess.fit(detected, width, height, unit.resize_mode)


def unit_mask(unit: ControlUnit, width: int, height: int) -> Image.Image | None:
    """An inpaint unit's mask at the job's size (its own, else the picture's transparency); None for others."""
    from ..errors import UserError

    if unit.module not in preprocess.MASKED:
        return None
    mask = unit.mask
    if mask is None and unit.image is not None and unit.image.mode in ("RGBA", "LA"):
        mask = Image.eval(unit.image.getchannel("A"), lambda a: 255 - a)
    if mask is None:
        raise UserError(f"ControlNet {unit.module} needs a mask (draw on the picture, send one with the unit, or "
                        "use img2img's inpaint mask)")
    return preprocess.fit(mask.convert("L").convert("RGB"), width, height, unit.resize_mode).convert("L")


def prepare(units: list[ControlUnit], folder: Path, width: int, height: int, seed: int = 0) -> list[PreparedUnit]:
    """The enabled units with their files found and maps detected; their ControlNets are built by load()."""
    prepared = []
    for unit in units:
        if not unit.enabled:
            continue
        found = files.find(unit.model, folder)
        hint = detected_map(unit, width, height, seed, files.annotators_dir(folder))
        prepared.append(PreparedUnit(unit, None, found.title, hint, found.path, unit_mask(unit, width, height)))
    return prepared


def load(prepared: list[PreparedUnit], unet, cache_size: int = control_model.CACHE_SIZE) -> None:
    for item in prepared:
        item.controlnet = control_model.load(item.path, unet, cache_size)


def _is_adapter(net) -> bool:
    return type(net).__name__ == "T2IAdapter"


def residual_patch(prepared: list[PreparedUnit], width: int, height: int):
    """fn(ControlCall) -> (down residuals, mid residual, adapter features) or None, for
    JobPatches.add_residuals. A T2I-Adapter runs once per size (its features depend on the map only)."""
    from .adapter import features

    adapter_features: dict = {}

    def residuals(call: ControlCall):
        fraction = call.step / max(call.total_steps, 1)
        h, w = call.x.shape[-2] * 8, call.x.shape[-1] * 8
        hires = (w, h) != (width, height)
        total, inside = None, None
        for index, item in enumerate(prepared):
            unit = item.unit
            if unit.weight == 0 or not unit.active_at(fraction):
                continue
            if unit.hr_option == "Low res only" and hires or unit.hr_option == "High res only" and not hires:
                continue
            net = item.controlnet
            if getattr(net, "device", call.x.device) != call.x.device:  # --medvram/--lowvram: the UNet's weights
                net.to(call.x.device)  # visit the device to run; so do these
            dtype = net.dtype
            if _is_adapter(net):
                if (index, w, h) not in adapter_features:
                    adapter_features[index, w, h] = features(net, item.tensor(w, h, call.x.device, dtype))
                outs = [f.expand(call.x.shape[0], -1, -1, -1) for f in adapter_features[index, w, h]]
            else:
                hint = item.tensor(w, h, call.x.device, dtype).expand(call.x.shape[0], -1, -1, -1)
                added = {k: v.to(dtype) for k, v in call.added.items()} if call.added else None
                down, mid = net(call.x.to(dtype), call.t.to(dtype), encoder_hidden_states=call.context.to(dtype),
                                controlnet_cond=hint, added_cond_kwargs=added, return_dict=False)
                outs = list(down) + [mid]
            weights = unit.layer_weights(len(outs), hires, adapter=_is_adapter(net))
            scales = unit.resolution_weights([out.shape[-2] for out in outs])
            outs = [out * (weight * scale) for out, weight, scale in zip(outs, weights, scales)]
            if not unit.uncond_gets_control:
                rows = call.uncond_rows
                for out in outs:
                    out[rows] = 0
            if _is_adapter(net):
                inside = outs if inside is None else [a + b for a, b in zip(inside, outs)]
            else:
                total = outs if total is None else [a + b for a, b in zip(total, outs)]
        if total is None and inside is None:
            return None
        return (total[:-1] if total else None, total[-1] if total else None, inside)
    return residuals


def infotext(index: int, item: PreparedUnit) -> tuple[str, str]:
    """The extension's `ControlNet N` infotext entry for one unit."""
    u = item.unit
    a, b = preprocess.thresholds(u.module, u.threshold_a, u.threshold_b)
    fields = [("Module", u.module), ("Model", item.title), ("Weight", u.weight), ("Resize Mode", u.resize_mode),
              ("Processor Res", u.processor_res), ("Threshold A", float(a if a is not None else -1)),
              ("Threshold B", float(b if b is not None else -1)), ("Guidance Start", u.guidance_start),
              ("Guidance End", u.guidance_end), ("Pixel Perfect", u.pixel_perfect), ("Control Mode", u.control_mode)]
    return f"ControlNet {index}", ", ".join(f"{k}: {v}" for k, v in fields)


INFOTEXT_KEYS = {"Module": "module", "Model": "model", "Weight": "weight", "Resize Mode": "resize_mode",
                 "Processor Res": "processor_res", "Threshold A": "threshold_a", "Threshold B": "threshold_b",
                 "Guidance Start": "guidance_start", "Guidance End": "guidance_end", "Pixel Perfect": "pixel_perfect",
                 "Control Mode": "control_mode", "Hr Option": "hr_option"}


def parse_infotext(value: str) -> dict:
    """A `ControlNet N` infotext value → the unit's fields (ControlUnit names, typed); unknown keys are left
    out, a value that does not parse is a UserError naming it. Split on ", Key: " for the known keys only, so a
    model name with a comma survives."""
    import re

    from ..errors import UserError

    keys = "|".join(re.escape(k) for k in INFOTEXT_KEYS)
    parts = re.split(rf"(?:^|,\s*)({keys}):\s*", value.strip())
    fields = {}
    for key, text in zip(parts[1::2], parts[2::2]):
        name, text = INFOTEXT_KEYS[key], text.strip()
        try:
            if name in ("weight", "threshold_a", "threshold_b", "guidance_start", "guidance_end"):
                fields[name] = float(text)
            elif name == "processor_res":
                fields[name] = int(float(text))
            elif name == "pixel_perfect":
                fields[name] = text.lower() == "true"
            else:
                fields[name] = text
        except ValueError:
            raise UserError(f"ControlNet infotext: {key} {text!r} is not a number") from None
    return fields


def register(patches: JobPatches, units: list[ControlUnit], folder: Path, width: int, height: int,
             seed: int = 0, cache_size: int = control_model.CACHE_SIZE, maps: list | None = None) -> dict:
    """The units on a job: files found and maps made now (a mistake stops the job before it queues), their
    ControlNets built once the job's model is known, their residuals patched in, and the latent fixes of
    tile_colorfix and inpaint_only. Returns the job's infotext fields, one `ControlNet N` per enabled unit;
    `maps`, when given, receives each enabled unit's detected map at the job's size."""
    from . import latent_fix

    prepared = prepare(units, folder, width, height, seed)
    if maps is not None:
        maps.extend(item.hint for item in prepared)
    if not prepared:
        return {}

    def setup(components):
        load(prepared, components.unet, cache_size)
    patches.on_model(setup)
    patches.add_residuals(residual_patch(prepared, width, height))
    latent_fix.register(patches, prepared, width, height)
    return dict(infotext(index, item) for index, item in enumerate(prepared))
