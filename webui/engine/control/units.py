"""A ControlNet unit with the sd-webui-controlnet extension's fields, defaults and accepted spellings, and the
per-layer weights of its control modes."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..errors import UserError

RESIZE_MODES = ("Just Resize", "Crop and Resize", "Resize and Fill")
RESIZE_ALIASES = {"Scale to Fit (Inner Fit)": "Crop and Resize", "Envelope (Outer Fit)": "Resize and Fill",
                  "Inner Fit (Scale to Fit)": "Crop and Resize", "Outer Fit (Shrink to Fit)": "Resize and Fill"}
CONTROL_MODES = ("Balanced", "My prompt is more important", "ControlNet is more important")
HR_OPTIONS = ("Both", "Low res only", "High res only")
SOFT_BASE = 0.825  # the extension's soft injection: layer i of 13 gets weight · 0.825^(12 − i)
LAYERS = 13  # SD1/SD2: 12 skip connections and the middle block
ADAPTER_SOFT = (0.25, 0.62, 0.825, 1.0)  # the extension's soft injection for a T2I-Adapter's four features


@dataclass
class ControlUnit:
    enabled: bool = True
    module: str = "none"
    model: str = "None"
    weight: float = 1.0
    image: Any = None  # a PIL picture (the API's base64 is decoded before)
    mask: Any = None
    resize_mode: str = "Crop and Resize"
    processor_res: int = 512
    threshold_a: float = -1
    threshold_b: float = -1
    guidance_start: float = 0.0
    guidance_end: float = 1.0
    pixel_perfect: bool = False
    control_mode: str = "Balanced"
    hr_option: str = "Both"
    low_vram: bool = False
    # per-layer weights replacing weight × mode (the extension's advanced_weighting): one per residual
    advanced_weighting: list | None = None
    # the ControlNet paper's CFG resolution weighting: residual i × 64 / its height, the prompt's branch only
    cfg_resolution_weighting: bool = False

    @classmethod
    def from_dict(cls, data: dict) -> ControlUnit:
        """An API unit: the extension's field names and aliases (input_image, lowvram, guessmode, ints for the
        modes); unknown fields are ignored as the extension ignores them."""
        data = dict(data)
        if "input_image" in data and "image" not in data:
            data["image"] = data.pop("input_image")
        if "lowvram" in data:
            data["low_vram"] = data.pop("lowvram")
        if data.pop("guessmode", False):
            data.setdefault("control_mode", CONTROL_MODES[2])
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known}).checked()

    def checked(self) -> ControlUnit:
        self.resize_mode = _choice(self.resize_mode, RESIZE_MODES, RESIZE_ALIASES, "resize_mode")
        self.control_mode = _choice(self.control_mode, CONTROL_MODES, {}, "control_mode")
        self.hr_option = _choice(self.hr_option, HR_OPTIONS, {}, "hr_option")
        for name, low, high in (("weight", 0.0, 2.0), ("guidance_start", 0.0, 1.0), ("guidance_end", 0.0, 1.0)):
            value = _number(getattr(self, name), name)
            if not low <= value <= high:
                raise UserError(f"ControlNet {name} must be between {low} and {high}, got {value}")
            setattr(self, name, value)
        if self.guidance_start > self.guidance_end:
            raise UserError(f"ControlNet guidance_start ({self.guidance_start}) is after guidance_end "
                            f"({self.guidance_end})")
        self.processor_res = int(_number(self.processor_res, "processor_res"))
        self.threshold_a = _number(self.threshold_a, "threshold_a")
        self.threshold_b = _number(self.threshold_b, "threshold_b")
        self.enabled, self.pixel_perfect = bool(self.enabled), bool(self.pixel_perfect)
        self.cfg_resolution_weighting = bool(self.cfg_resolution_weighting)
        if self.advanced_weighting is not None:
            if not isinstance(self.advanced_weighting, (list, tuple)) or not self.advanced_weighting:
                raise UserError(f"ControlNet advanced_weighting must be a list of numbers (one per layer), got "
                                f"{self.advanced_weighting!r}")
            self.advanced_weighting = [_number(w, "advanced_weighting") for w in self.advanced_weighting]
        return self

    def active_at(self, fraction: float) -> bool:
        """Whether the unit applies at this point of sampling (0 = the first step). The end is exclusive, so
        guidance end 0 switches the unit off; end 1 covers the last step."""
        return self.guidance_start <= fraction and (fraction < self.guidance_end or self.guidance_end >= 1.0)

    def layer_weights(self, layers: int = LAYERS, hires: bool = False, adapter: bool = False) -> list[float]:
        """Each residual's weight (the middle block's last), as the extension weighs them: Balanced → weight
        everywhere; the other two modes → soft injection, weight · 0.825^(12 − i) over SD1's 13 layers (SDXL's
        10 take the first 10 of those, as the extension slices them); the hires pass of a canny or mlsd unit is
        always soft. A T2I-Adapter's four features get weight × (0.25, 0.62, 0.825, 1.0) when soft.
        advanced_weighting replaces all of it, and must name every layer."""
        if self.advanced_weighting is not None:
            if len(self.advanced_weighting) != layers:
                raise UserError(f"ControlNet advanced_weighting has {len(self.advanced_weighting)} weights; this "
                                f"ControlNet has {layers} layers")
            return list(self.advanced_weighting)
        forced_soft = hires and ("canny" in self.module or "mlsd" in self.module)
        if self.control_mode == CONTROL_MODES[0] and not forced_soft:
            return [self.weight] * layers
        if adapter:
            return [self.weight * scale for scale in ADAPTER_SOFT][:layers]
        soft = [self.weight * SOFT_BASE ** (LAYERS - 1 - i) for i in range(max(layers, LAYERS))]
        return soft[:layers] if layers <= LAYERS else soft[-layers:]

    def resolution_weights(self, heights: list[int]) -> list[float]:
        """CFG resolution weighting: 64 / h for a residual h latent pixels high (1 at SD's 512-px top layer)."""
        return [64.0 / max(h, 1) for h in heights] if self.cfg_resolution_weighting else [1.0] * len(heights)

    @property
    def uncond_gets_control(self) -> bool:
        """"ControlNet is more important" and CFG resolution weighting leave the negative prompt's branch
        without control."""
        return self.control_mode != CONTROL_MODES[2] and not self.cfg_resolution_weighting


def _choice(value, names, aliases, field: str) -> str:
    if isinstance(value, bool) or value is None:
        raise UserError(f"ControlNet {field} must be one of {', '.join(names)}, got {value!r}")
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        index = int(value)
        if 0 <= index < len(names):
            return names[index]
    elif value in names:
        return value
    elif value in aliases:
        return aliases[value]
    raise UserError(f"ControlNet {field} must be one of {', '.join(names)}, got {value!r}")


def _number(value, field: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"ControlNet {field} must be a number, got {value!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise UserError(f"ControlNet {field} must be a finite number, got {value!r}")
    return number
