"""Extras: upscale a finished picture (A1111's postprocessing upscale script). Scale by a factor, or scale to a size
(covering it, then centre-cropped unless told not to); a second upscaler blended in at a visibility. The source's
infotext is carried over, and what was done is recorded as A1111's `postprocessing` text."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from PIL import Image

from .. import fields
from ..fields import param
from ..imaging import upscalers
from ..params import SIZE_MAX

SCALE_BY, SCALE_TO = 0, 1
RESIZE_MODES = ("Scale by", "Scale to")
EXTRAS_MAX_SIDE = 8192  # a picture this wide or tall is refused before upscaling (A1111 has no bound)


@dataclass
class ExtrasParams:
    """A1111's extras fields under its API names (/sdapi/v1/extra-single-image)."""
    resize_mode: int = param(SCALE_BY, label="Resize mode", names=RESIZE_MODES)
    upscaling_resize: float = param(2.0, label="Scale by", noun="upscale factor", minimum=1.0, maximum=8.0,
                                    step=0.05)
    upscaling_resize_w: int = param(512, label="Width", noun="upscale width", minimum=64, maximum=2 * SIZE_MAX,
                                    step=8)
    upscaling_resize_h: int = param(512, label="Height", noun="upscale height", minimum=64, maximum=2 * SIZE_MAX,
                                    step=8)
    upscaling_crop: bool = param(True, label="Crop to fit")
    upscaler_1: str = param(upscalers.NONE, label="Upscaler 1")
    upscaler_2: str = param(upscalers.NONE, label="Upscaler 2")
    extras_upscaler_2_visibility: float = param(0.0, label="Upscaler 2 visibility", noun="upscaler 2 visibility",
                                                minimum=0.0, maximum=1.0, step=0.001)

    def validate(self) -> ExtrasParams:
        fields.validate(self)
        upscalers.check(self.upscaler_1)
        upscalers.check(self.upscaler_2)
        return self

    def replace(self, **changes) -> ExtrasParams:
        return dataclasses.replace(self, **changes)


def _one(image: Image.Image, name: str, p: ExtrasParams, info: dict) -> Image.Image:
    if p.resize_mode == SCALE_TO:
        scale = max(p.upscaling_resize_w / image.width, p.upscaling_resize_h / image.height)
        info["Postprocess upscale to"] = f"{p.upscaling_resize_w}x{p.upscaling_resize_h}"
    else:
        scale = p.upscaling_resize
        info["Postprocess upscale by"] = scale
    out = upscalers.upscale(image, name, scale)
    if p.resize_mode == SCALE_TO and p.upscaling_crop:
        cropped = Image.new("RGB", (p.upscaling_resize_w, p.upscaling_resize_h))
        cropped.paste(out, box=(p.upscaling_resize_w // 2 - out.width // 2, p.upscaling_resize_h // 2 - out.height // 2))
        out = cropped
        info["Postprocess crop to"] = f"{out.width}x{out.height}"
    return out


def run(image: Image.Image, p: ExtrasParams) -> tuple[Image.Image, str]:
    """(the upscaled picture, A1111's postprocessing text, e.g. "Postprocess upscale by: 2, Postprocess upscaler:
    Lanczos"). Upscaler 1 "None" leaves the picture as it is."""
    from ..imaging.open import check_pixels

    p.validate()
    check_pixels(image.width, image.height, EXTRAS_MAX_SIDE * EXTRAS_MAX_SIDE, "Extras image")
    image = image.convert("RGB")
    info: dict = {}
    if p.upscaler_1 != upscalers.NONE:
        first = _one(image, p.upscaler_1, p, info)
        info["Postprocess upscaler"] = p.upscaler_1
        if p.upscaler_2 != upscalers.NONE and p.extras_upscaler_2_visibility > 0:
            second = _one(image, p.upscaler_2, p, {})
            if second.size != first.size:
                second = second.resize(first.size, resample=upscalers.LANCZOS)
            first = Image.blend(first, second, p.extras_upscaler_2_visibility)
            info["Postprocess upscaler 2"] = p.upscaler_2
        image = first
    text = ", ".join(k if k == v else f"{k}: {_number(v)}" for k, v in info.items() if v is not None)
    return image, text


def _number(v):
    return int(v) if isinstance(v, float) and v.is_integer() else v
