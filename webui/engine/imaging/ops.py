"""Image-side building blocks for img2img: input normalisation and A1111's four resize modes.

Pure PIL + numpy. Behaviour follows AUTOMATIC1111 1.10 (`modules/images.py` resize_image/flatten/fix_image,
`modules/img2img.py` "Resize by"); the differences are listed in the docstrings."""
from __future__ import annotations

import io
import os
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

from ..errors import UserError

# A1111's resize modes, in A1111's order (the index is the API's `resize_mode`).
RESIZE_MODES = ["Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)"]
JUST_RESIZE, CROP_AND_RESIZE, RESIZE_AND_FILL, LATENT_UPSCALE = range(4)

# A1111 resizes with LANCZOS whenever no upscaler is configured (its default: upscaler_for_img2img = None).
LANCZOS = Image.Resampling.LANCZOS
# A1111's opts.img2img_background_color default: transparent init-image pixels become this.
DEFAULT_BACKGROUND = "#ffffff"


class InvalidImage(UserError, ValueError):
    """An input image that cannot be used: undecodable, or bigger than the configured pixel limit."""


# --- normalisation --------------------------------------------------------------------------------


def _has_transparency(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info


def as_8bit(img: Image.Image) -> Image.Image:
    """Map wide single-channel modes (I;16*, I, F) to "L" by scaling their range, not clipping as
    PIL's convert("L") does (which turns a 16-bit photo almost white). Other modes are returned as they are.

    I;16*: 0..65535 -> 0..255. I: treated as 8-bit when its values fit 0..255, as 16-bit when they fit
    0..65535 (16-bit PNGs often open as "I"), otherwise scaled by its own maximum. F: 0..1 -> 0..255 when
    the values lie in [0, 1], otherwise clipped to 0..255."""
    if img.mode.startswith("I;16"):
        a = np.asarray(img).astype(np.float64) / 257.0
    elif img.mode == "I":
        a = np.asarray(img).astype(np.float64)
        top = float(a.max()) if a.size else 0.0
        if a.size and a.min() < 0:
            a = a - a.min()
            top = float(a.max())
        if top > 65535:
            a = a * (255.0 / top)
        elif top > 255:
            a = a / 257.0
    elif img.mode == "F":
        a = np.nan_to_num(np.asarray(img).astype(np.float64))
        if a.size and a.min() >= 0.0 and a.max() <= 1.0:
            a = a * 255.0
    else:
        return img
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")


def flatten(img: Image.Image, background: str = DEFAULT_BACKGROUND) -> Image.Image:
    """Any mode -> RGB, with transparent pixels blended onto `background` (A1111's images.flatten).

    A1111 itself only blends RGBA; its UI gets every upload as RGBA from Gradio (image_mode="RGBA"),
    so LA/PA/P or RGB/L with a transparency key are converted to RGBA first to behave the same here."""
    img = as_8bit(img)
    if _has_transparency(img):
        rgba = img.convert("RGBA")
        out = Image.new("RGBA", rgba.size, background)
        out.paste(rgba, mask=rgba.getchannel("A"))  # alpha blend onto the background, as A1111 does
        return out.convert("RGB")
    return img.convert("RGB")


def check_size(width: int, height: int, max_pixels: int) -> None:
    if max_pixels and width * height > max_pixels:
        raise InvalidImage(f"Image is {width}x{height} ({width * height:,} pixels), over the limit of "
                           f"{max_pixels:,} pixels")


def normalize_image(img: Image.Image, max_pixels: int, background: str = DEFAULT_BACKGROUND) -> Image.Image:
    """Any decodable PIL image -> an upright 8-bit RGB image, as A1111 prepares an init image
    (fix_image: EXIF orientation; flatten: transparency onto opts.img2img_background_color, white).

    The size is checked before decoding so an oversized upload is refused without allocating it."""
    check_size(img.width, img.height, max_pixels)
    try:
        img.load()
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, EOFError... for broken data
        raise InvalidImage(f"Cannot decode the image: {e}") from e
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block is ignored, as in A1111's fix_image
        pass
    try:
        return flatten(img, background)
    except ValueError as e:  # a mode PIL cannot convert to RGB
        raise InvalidImage(f"Cannot convert a {img.mode} image to RGB: {e}") from e


def _open(source: bytes | str | os.PathLike | BinaryIO) -> Image.Image:
    try:
        return Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
    except Image.DecompressionBombError as e:
        raise InvalidImage(f"Image is too large: {e}") from e
    except Exception as e:
        raise InvalidImage(f"Cannot decode the image: {e}") from e


def open_image(source: bytes | str | os.PathLike | BinaryIO, max_pixels: int,
               background: str = DEFAULT_BACKGROUND) -> Image.Image:
    """Open image bytes / a path / a file object and normalise it (see normalize_image)."""
    return normalize_image(_open(source), max_pixels, background)


def open_mask(source: bytes | str | os.PathLike | BinaryIO, max_pixels: int) -> Image.Image:
    """Open a mask as it is (its alpha may be the mask: masks.mask_to_l decides), size-checked and decoded."""
    img = _open(source)
    check_size(*img.size, max_pixels)
    try:
        img.load()
    except Exception as e:
        raise InvalidImage(f"Cannot decode the image: {e}") from e
    return img


# --- resizing -------------------------------------------------------------------------------------


def resize_mode_index(mode: int | str) -> int:
    """0..3 from an index, a numeric string or one of RESIZE_MODES (case-insensitive)."""
    if isinstance(mode, str):
        text = mode.strip()
        if text.isdigit():
            mode = int(text)
        else:
            names = [m.lower() for m in RESIZE_MODES]
            if text.lower() not in names:
                raise InvalidImage(f"Unknown resize mode {mode!r}; expected one of {RESIZE_MODES}")
            return names.index(text.lower())
    if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode < len(RESIZE_MODES):
        raise InvalidImage(f"Unknown resize mode {mode!r}; expected 0-{len(RESIZE_MODES) - 1}")
    return mode


def resize_image(mode: int | str, img: Image.Image, width: int, height: int) -> Image.Image:
    """Fit `img` to width x height the way A1111's images.resize_image does (without an upscaler):

    0 Just resize: stretch.
    1 Crop and resize: scale to cover, centre, cut the overflow.
    2 Resize and fill: scale to fit, centre, and fill the empty bands by stretching the outermost
      row/column of the scaled image across them.
    3 Just resize (latent upscale): A1111 never calls resize_image for init images in this mode; it encodes
      the image at its own size and stretches the latent bilinearly. The pixel-space equivalent of that
      is a stretch, so mode 3 behaves as mode 0 here (A1111's resize_image would fall through to "fill";
      it only reaches that for masks, which then disagree with the stretched latent).

    The result keeps the input's mode (A1111 returns RGB for modes 1/2 even for an "L" mask; the
    values are the same)."""
    mode = resize_mode_index(mode)
    if mode in (JUST_RESIZE, LATENT_UPSCALE):
        return img.resize((width, height), resample=LANCZOS)

    ratio, src_ratio = width / height, img.width / img.height
    if mode == CROP_AND_RESIZE:  # cover: the side that is relatively short gets the full target length
        cover_w = ratio > src_ratio
        src_w = width if cover_w else img.width * height // img.height
        src_h = height if not cover_w else img.height * width // img.width
    else:  # fit: the side that is relatively long gets the full target length
        fit_w = ratio < src_ratio
        src_w = width if fit_w else img.width * height // img.height
        src_h = height if not fit_w else img.height * width // img.width

    resized = img.resize((src_w, src_h), resample=LANCZOS)
    out = Image.new(img.mode, (width, height))
    left, top = width // 2 - src_w // 2, height // 2 - src_h // 2  # A1111's centring (may be negative)
    out.paste(resized, (left, top))

    if mode == RESIZE_AND_FILL:
        # A zero-height/width source box stretches exactly the edge row/column across the band.
        if ratio < src_ratio:  # bands above and below
            band = top
            if band > 0:
                out.paste(resized.resize((width, band), box=(0, 0, width, 0)), (0, 0))
                out.paste(resized.resize((width, band), box=(0, src_h, width, src_h)), (0, band + src_h))
        elif ratio > src_ratio:  # bands left and right
            band = left
            if band > 0:
                out.paste(resized.resize((band, height), box=(0, 0, 0, height)), (0, 0))
                out.paste(resized.resize((band, height), box=(src_w, 0, src_w, height)), (band + src_w, 0))
    return out


def scale_to_size(img_w: int, img_h: int, scale: float, multiple: int = 8) -> tuple[int, int]:
    """The target size for "Resize by": A1111 computes int(w * scale), int(h * scale) (modules/img2img.py)
    and passes that on; its VAE / latent then silently drops the remainder below a multiple of 8. We round
    down to `multiple` up front instead (at least `multiple`), so the size passes the same validation as
    txt2img; pass multiple=1 for A1111's raw numbers (its "resize: from AxB to CxD" label)."""
    w, h = int(img_w * scale), int(img_h * scale)
    if multiple > 1:
        w, h = max(multiple, w - w % multiple), max(multiple, h - h % multiple)
    return w, h
