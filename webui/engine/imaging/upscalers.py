"""Picture upscalers, as A1111's modules/upscaler.py runs them: the built-in None, Lanczos and Nearest, and the
user's model files (upscaler_models.py: ESRGAN and friends through spandrel), passed in as `models`. One path
for hires fix's pixel upscale and for Extras.

A1111's Upscaler.upscale aims at (size·scale) rounded down to a multiple of 8: it applies the upscaler (up to three
times, for models that scale by a fixed factor), then Lanczos-resizes to that size if it missed. "None" upscales
nothing in Extras and is a plain Lanczos resize in hires fix."""
from __future__ import annotations

from PIL import Image

from ..errors import UserError

LANCZOS, NEAREST = Image.Resampling.LANCZOS, Image.Resampling.NEAREST
NONE = "None"
BUILTIN = {"Lanczos": LANCZOS, "Nearest": NEAREST}


class UnknownUpscaler(UserError, ValueError):
    pass


def names(models=None) -> list[str]:
    """What the upscaler dropdowns and /sdapi/v1/upscalers list, A1111's order: None first, the model files
    after the built-in ones."""
    return [NONE, *BUILTIN, *(models.names() if models is not None else [])]


def check(name: str, models=None) -> str:
    if name != NONE and name not in BUILTIN and (models is None or models.find(name) is None):
        raise UnknownUpscaler(f"could not find upscaler named {name!r}; choose one of: {', '.join(names(models))}")
    return name


def upscale(image: Image.Image, name: str, scale: float, models=None) -> Image.Image:
    """A1111's Upscaler.upscale(img, scale) for the upscaler `name` (None: the picture unchanged, then resized);
    a model runs up to three times while the picture is still smaller than the target, as A1111's does."""
    check(name, models)
    dest_w, dest_h = int((image.width * scale) // 8 * 8), int((image.height * scale) // 8 * 8)
    if name in BUILTIN and (image.width < dest_w or image.height < dest_h):
        image = image.resize((int(image.width * scale), int(image.height * scale)), resample=BUILTIN[name])
    elif name != NONE and name not in BUILTIN:
        for _ in range(3):
            if image.width >= dest_w and image.height >= dest_h:
                break
            image = models.upscale(image, name)
    if image.size != (dest_w, dest_h):
        image = image.resize((dest_w, dest_h), resample=LANCZOS)
    return image


def resize_to(image: Image.Image, name: str, width: int, height: int, models=None) -> Image.Image:
    """A1111's resize_image(0, image, width, height, upscaler_name) (hires fix's pixel path): "None" is a plain
    Lanczos resize; an upscaler runs first when the picture grows, then Lanczos fits the exact size."""
    check(name, models)
    if name == NONE or image.mode == "L":
        return image.resize((width, height), resample=LANCZOS)
    scale = max(width / image.width, height / image.height)
    if scale > 1.0:
        image = upscale(image, name, scale, models)
    if image.size != (width, height):
        image = image.resize((width, height), resample=LANCZOS)
    return image
